"""PNG diagnostics are written, atomically, with titles and full angle ranges; no pyplot."""
import subprocess
import sys

import numpy as np
import pytest

from openmm_dikl.analysis.plots import (angle_bin_edges, histogram_figure, plot_histograms,
                                        plot_ramachandran, ramachandran_figure)


def test_ramachandran_png(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, size=(500, 2))
    path = plot_ramachandran(a, str(tmp_path / "rama.png"), reference=a[::-1],
                             title="ala2, digs, 300 K")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rama.png"]  # no temporary left behind
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        plot_ramachandran(a[:, :1], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="does not exist"):
        plot_ramachandran(a, str(tmp_path / "missing" / "x.png"))
    assert [p.name for p in tmp_path.iterdir()] == ["rama.png"]


def test_histograms_png(tmp_path):
    rng = np.random.default_rng(1)
    path = plot_histograms([("reduced energy (kT)", {"a": rng.normal(size=100), "b": rng.normal(size=50)})],
                           str(tmp_path / "h.png"), title="dw4, 120.3 K")
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["h.png"]
    with pytest.raises(ValueError, match="no finite values"):
        plot_histograms([("x", {"a": np.full(3, np.nan)})], str(tmp_path / "n.png"))


def test_figures_carry_their_title():
    a = np.random.default_rng(2).uniform(-np.pi, np.pi, size=(100, 2))
    assert ramachandran_figure(a, title="ala2, digs, 300 K, 1e6 evals").get_suptitle() == \
        "ala2, digs, 300 K, 1e6 evals"
    fig = histogram_figure([("x (nm)", {"a": a[:, 0]})], title="mw32, 120.3 K")
    assert fig.get_suptitle() == "mw32, 120.3 K"


def test_angle_panels_show_the_full_range_with_fixed_bins():
    """A 0.3 % basin at φ > 0 stays inside the plotted range (no percentile clipping)."""
    rng = np.random.default_rng(3)
    phi = np.concatenate([rng.normal(-120.0, 15.0, 9970), rng.normal(60.0, 5.0, 30)])
    edges = angle_bin_edges()
    assert edges[0] == -180.0 and edges[-1] == 180.0 and len(edges) == 61
    fig = histogram_figure([("φ (degrees)", {"samples": phi}, edges)], log_density=True)
    ax = fig.axes[0]
    assert ax.get_xlim() == (-180.0, 180.0)
    assert ax.get_yscale() == "log"
    heights = ax.patches[0].get_path().vertices  # the step outline of the histogram
    assert heights[(heights[:, 0] > 40) & (heights[:, 0] < 80), 1].max() > 0
    # without fixed edges the panel spans the 0.5-99.5 % percentiles, which lose the basin
    clipped = histogram_figure([("φ (degrees)", {"samples": phi})]).axes[0].get_xlim()
    assert clipped[1] < 40.0


def test_plotting_selects_no_backend_and_loads_no_pyplot(tmp_path):
    code = ("import sys, numpy as np\n"
            "import matplotlib\n"
            "before = matplotlib.rcParams._get_backend_or_none()\n"
            "from openmm_dikl.analysis.plots import plot_histograms\n"
            f"plot_histograms([('x', {{'a': np.arange(10.0)}})], {str(tmp_path / 'p.png')!r})\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "assert matplotlib.rcParams._get_backend_or_none() == before\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

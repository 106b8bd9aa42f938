"""PNG diagnostics are written, atomically, and bad input is refused."""
import numpy as np
import pytest

from openmm_dikl.analysis.plots import plot_histograms, plot_ramachandran


def test_ramachandran_png(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, size=(500, 2))
    path = plot_ramachandran(a, str(tmp_path / "rama.png"), reference=a[::-1])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rama.png"]  # no temporary left behind
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        plot_ramachandran(a[:, :1], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="does not exist"):
        plot_ramachandran(a, str(tmp_path / "missing" / "x.png"))


def test_histograms_png(tmp_path):
    rng = np.random.default_rng(1)
    path = plot_histograms([("reduced energy (kT)", {"a": rng.normal(size=100), "b": rng.normal(size=50)})],
                           str(tmp_path / "h.png"))
    assert open(path, "rb").read(4) == b"\x89PNG"
    with pytest.raises(ValueError, match="no finite values"):
        plot_histograms([("x", {"a": np.full(3, np.nan)})], str(tmp_path / "n.png"))

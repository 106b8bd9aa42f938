"""Per-system evaluation protocols: registry, metric dicts, tables, small sample sets, plots."""
import logging
import os
import pathlib

import numpy as np
import pytest
import torch

from openmm_dikl import systems
from openmm_dikl.analysis import evaluation
from openmm_dikl.analysis.evaluation import (PROTOCOLS, Evaluation, Metric, ala2_metrics,
                                             evaluate_array, evaluate_file, evaluation_metrics,
                                             register_protocol)

ANALYSIS = pathlib.Path(evaluation.__file__).parent


@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


@pytest.fixture(scope="module")
def ala2():
    return systems.get("alanine_dipeptide_implicit")


def ala2_frames(n):
    """The first n configurations of the shipped PT reference (nm), as a float64 tensor."""
    return torch.as_tensor(evaluation.dihedral_reference(systems.get("alanine_dipeptide_implicit"))["positions"][:n]).double()


# ---------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", [n for n in systems.names() if not n.endswith("_ani")])
def test_every_bundled_system_names_a_registered_protocol(name):
    target = systems.get(name)
    assert evaluation.get_protocol(target) is PROTOCOLS[target.evaluation or "energies"]


def test_no_system_names_in_the_analysis_code():
    for path in ANALYSIS.glob("*.py"):
        text = path.read_text()
        for pattern in ("target.name ==", "target.name in", "name.startswith", '"mog40"',
                        '"mw32"', '"dw4"', '"alanine_dipeptide'):
            assert pattern not in text, (path.name, pattern)


def test_register_a_protocol_for_a_user_system(monkeypatch):
    target = systems.get("dw4")
    monkeypatch.setattr(target, "evaluation", "spread")

    def spread(target, x, n_repeats, seed, floors):
        return Evaluation([Metric("spread", "spread (nm)", float(x.std()), floor=0.5)])

    monkeypatch.setitem(PROTOCOLS, "spread", spread)
    x = np.random.default_rng(0).normal(size=(10, 4, 2))
    assert evaluation_metrics(target, x) == {"spread": pytest.approx(x.std()),
                                             "spread_floor": 0.5}
    table, plots = evaluate_array(target, x, prefix="unused")
    assert "spread (nm)" in table and plots == []
    with pytest.raises(ValueError, match="already registered"):
        register_protocol("spread")(spread)
    monkeypatch.setattr(target, "evaluation", "no_such_protocol")
    with pytest.raises(KeyError, match="no_such_protocol"):
        evaluation_metrics(target, x)


def test_bad_samples_are_refused(dw4):
    with pytest.raises(ValueError, match=r"shape \(n_samples, 4, 2\)"):
        evaluation_metrics(dw4, np.zeros((10, 3, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        evaluation_metrics(dw4, dw4.reference_samples(1))


# ---------------------------------------------------------------------- metric dicts
def test_reference_set_metrics_and_noise_floor(dw4):
    x = dw4.reference_samples()[5000:]
    result = evaluation_metrics(dw4, x, n_repeats=1)
    for key in ("w2", "energy_tvd", "distance_tvd"):
        assert isinstance(result[key], float) and key + "_std" in result
        assert result[key + "_floor"] == pytest.approx(result[key], rel=0.35)  # exact samples
    assert 1.3 < result["w2_floor"] < 1.6                     # the 2,000-sample DW-4 floor
    without = evaluation_metrics(dw4, x, n_repeats=1, floors=False)
    assert set(without) == {"w2", "w2_std", "energy_tvd", "energy_tvd_std", "distance_tvd",
                            "distance_tvd_std"}
    assert without["w2"] == result["w2"]


def test_mode_and_basin_metrics():
    mog = systems.get("mog40")
    means = mog.evaluation_data["mode_means"]
    stuck = (means[torch.arange(400) % 5] + 0.1 * torch.randn(400, 2))[:, None, :]
    result = evaluation_metrics(mog, stuck)
    assert result["mode_coverage"] == pytest.approx(5 / 40)
    assert result["mode_coverage_floor"] == 1.0
    assert result["mean_log_density"] > result["reference_mean_log_density"]  # sharp peaks
    assert result["mode_weight_error"] == pytest.approx(35 / 40)
    mw = systems.get("mw32")
    x = mw.reference_samples(2000, seed=7)
    x[:, :4, 0] = x[:, :4, 0].abs()                 # four coordinates all in the heavy well
    result = evaluation_metrics(mw, x)
    exact = mw.evaluation_data["positive_weight"]
    assert result["max_basin_weight_error"] == pytest.approx(1 - exact, abs=1e-12)
    assert 0.2 * (1 - exact) < result["mean_basin_weight_error"] < 0.3 * (1 - exact)
    assert result["max_basin_weight_error_floor"] < 0.05


def test_ala2_metrics_of_reference_frames(ala2):
    result = ala2_metrics(ala2, ala2_frames(1000))
    assert result == evaluation_metrics(ala2, ala2_frames(1000))
    for key in ("kl_phi", "kl_psi", "kl_ramachandran", "energy_tvd"):
        assert 0.0 <= result[key] < 3 * result[key + "_floor"] + 0.02
    assert result["reference_fraction_phi_positive"] == pytest.approx(0.0027, abs=2e-4)
    assert abs(result["mean_energy_kjmol"] - result["reference_mean_energy_kjmol"]) < 3.0
    # the vacuum variant is compared on its angles only: its energies are another potential
    vacuum = evaluation_metrics(systems.get("alanine_dipeptide_vacuum"), ala2_frames(200))
    assert "energy_tvd" not in vacuum and "kl_ramachandran" in vacuum
    with pytest.raises(ValueError, match="backbone_dihedrals"):
        ala2_metrics(systems.get("dw4"), np.zeros((3, 4, 2)))


# ---------------------------------------------------------------------- tables, sizes
def test_small_sample_sets_scale_the_protocol_down(dw4, tmp_path, caplog):
    x = dw4.reference_samples()[-300:]
    with caplog.at_level(logging.WARNING):
        table, plots = evaluate_array(dw4, x, prefix=str(tmp_path / "dw4"), n_repeats=2)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "300 model vs 300 reference samples" in warning
    assert "two disjoint sets of 300 reference samples" in warning
    assert "300 model vs 300 reference samples, 2 repeats (protocol: 2,000)" in table
    assert plots == [str(tmp_path / "dw4_histograms.png")]
    header, *rows = table.splitlines()
    assert "noise floor" in header and "reference" in header
    assert rows[0].startswith("W2 (nm)")
    # two samples are the least the protocol can compare
    two = evaluation_metrics(dw4, x[:2], n_repeats=1)
    assert np.isfinite(two["w2"]) and np.isfinite(two["w2_floor"])


def test_table_separates_noise_floor_and_reference(ala2):
    table, _ = evaluate_array(ala2, ala2_frames(300))
    header = table.splitlines()[0]
    floor_end = header.index("noise floor") + len("noise floor")
    reference_end = header.index("reference") + len("reference")
    rows = {line[:28].strip(): line for line in table.splitlines()[1:]}
    for label in ("KL phi (nats)", "KL psi (nats)", "KL Ramachandran (nats)", "energy TVD"):
        assert len(rows[label].rstrip()) == floor_end          # a floor, no reference value
    for label in ("fraction phi > 0", "mean energy (kJ/mol)"):
        assert len(rows[label].rstrip()) == reference_end      # a reference value, no floor
        assert rows[label][floor_end - 11:floor_end].strip() == ""


def test_evaluate_file_reads_quietly_and_titles_plots(ala2, tmp_path, capfd):
    from openmm_dikl.io import write_samples
    write_samples(ala2, ala2_frames(50).numpy(), str(tmp_path / "ala2.dcd"))
    capfd.readouterr()
    table, plots = evaluate_file(ala2, str(tmp_path / "ala2.dcd"), prefix=str(tmp_path / "run"),
                                 title="alanine_dipeptide_implicit, digs, 300 K, 1e5 evals")
    assert "dcdplugin" not in capfd.readouterr().err
    assert "KL Ramachandran (nats)" in table
    assert sorted(os.path.basename(p) for p in plots) == ["run_marginals.png",
                                                          "run_ramachandran.png"]
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_file(ala2, str(tmp_path / "ala2.dcd"), prefix=str(tmp_path / "no" / "run"))


def test_cli_evaluate_accepts_fewer_than_2000_samples(dw4, tmp_path, capsys, caplog):
    from openmm_dikl.cli import main
    path = tmp_path / "few.npy"
    np.save(path, dw4.reference_samples()[:200].numpy())
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(path), "--system", "dw4", "--repeats", "1"]) == 0
    printed = capsys.readouterr()
    assert "W2 (nm)" in printed.out and "200 model vs 200 reference samples" in printed.out
    assert (tmp_path / "few_histograms.png").read_bytes()[:4] == b"\x89PNG"

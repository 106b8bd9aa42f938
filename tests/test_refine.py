"""Refinement of generator samples (refine_samples, generate --refine, sample --init-from)."""
import os

import mdtraj
import numpy as np
import pytest
import torch

from openmm_dikl import systems
from openmm_dikl.analysis import metrics
from openmm_dikl.cli import main
from openmm_dikl.dikl import save_sampler
from openmm_dikl.nn import EGNNGenerator
from openmm_dikl.samplers import refine_samples


@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


@pytest.fixture(scope="module")
def untrained_sampler(tmp_path_factory):
    """An untrained DW-4 generator: a deliberately poor sampler."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "sampler.pt"
    save_sampler(path, "dw4", EGNNGenerator(4, 2, n_layers=1, hidden=8, latent_std=1.0),
                 centre=True)
    return path


@pytest.mark.parametrize("method", ["mala", "hmc", "digs"])
def test_refinement_moves_a_broadened_set_toward_the_target(dw4, method):
    # reference samples blurred by 0.3 nm noise: energies far above the target's
    both = dw4.reference_samples(800)  # the shipped set, in stored order
    ref = both[:400]
    gen = torch.Generator().manual_seed(0)
    x = ref + 0.3 * torch.randn(ref.shape, generator=gen, dtype=ref.dtype)
    u_ref = dw4.reduced_energy(both[400:])
    before = metrics.energy_tvd(dw4.reduced_energy(x), u_ref)
    result = refine_samples(dw4, x, 40, method=method, seed=3)
    after = metrics.energy_tvd(result.final_reduced_energies, u_ref)
    assert before > 0.5
    # 400 vs 400 samples with 200 bins: two halves of the reference give 0.35
    assert after < 0.45 and after < 0.6 * before
    assert torch.allclose(result.final_reduced_energies, dw4.reduced_energy(result.final_positions))
    assert result.final_positions.shape == x.shape and result.force_evaluations >= 400 * 40


def test_refinement_keeps_exact_samples_exact():
    # MoG-40 exact samples stay exact: mean log-density and mode weights unchanged
    mog = systems.get("mog40")
    x = mog.reference_samples(2000, seed=0)
    result = refine_samples(mog, x, 20, method="mala", seed=0)
    logp0, logp1 = -mog.reduced_energy(x), -result.final_reduced_energies
    se = float(logp0.std()) * np.sqrt(2.0 / len(x))
    assert abs(float(logp1.mean() - logp0.mean())) < 4 * se


def test_refinement_bad_input(dw4):
    x = dw4.reference_samples(4)
    with pytest.raises(ValueError, match="refinement method"):
        refine_samples(dw4, x, 5, method="langevin")
    with pytest.raises(ValueError, match="n_steps"):
        refine_samples(dw4, x, 0)
    with pytest.raises(ValueError, match="NaN|finite"):
        refine_samples(dw4, x * float("nan"), 5)
    with pytest.raises(ValueError, match="shape"):
        refine_samples(dw4, x[:, :3], 5)


def test_generate_refine_cli(untrained_sampler, dw4, tmp_path, capsys):
    raw, polished = tmp_path / "raw.npy", tmp_path / "refined.npy"
    assert main(["generate", str(untrained_sampler), "-n", "200", "--out", str(raw)]) == 0
    assert main(["generate", str(untrained_sampler), "-n", "200", "--refine", "30",
                 "--out", str(polished)]) == 0
    assert "force evaluations" in capsys.readouterr().out
    u_raw = dw4.reduced_energy(torch.as_tensor(np.load(raw)))
    u_ref = dw4.reduced_energy(torch.as_tensor(np.load(polished)))
    assert float(u_ref.median()) < float(u_raw.median()) - 1.0
    assert main(["generate", str(untrained_sampler), "-n", "5", "--refine", "-1",
                 "--out", str(tmp_path / "bad.npy")]) == 2
    assert not (tmp_path / "bad.npy").exists()


def test_sample_init_from(untrained_sampler, tmp_path, capsys):
    out = tmp_path / "chains.dcd"
    assert main(["sample", "dw4", "--method", "mala", "--chains", "4", "--init-from",
                 str(untrained_sampler), "--force-evals", "400", "--frames", "5",
                 "--no-progress", "--out", str(out)]) == 0
    traj = mdtraj.load(str(out), top=str(tmp_path / "chains.pdb"))
    assert traj.n_frames == 5  # exactly the frames asked for (the last report: chain 0)
    bad = tmp_path / "bad.dcd"
    assert main(["sample", "lj13", "--method", "mala", "--init-from", str(untrained_sampler),
                 "--force-evals", "100", "--out", str(bad)]) == 2
    assert "generator for 'dw4'" in capsys.readouterr().err
    assert not os.path.exists(bad)
    assert main(["sample", "dw4", "--method", "langevin", "--init-from", str(untrained_sampler),
                 "--force-evals", "100", "--out", str(bad)]) == 2
    assert not os.path.exists(bad)

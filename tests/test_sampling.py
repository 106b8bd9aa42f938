"""The sampling engine behind `openmm-dikl sample`: every method, budgets, blow-ups."""
import os
import re

import mdtraj
import numpy as np
import pytest

from openmm_dikl import systems
from openmm_dikl.samplers import METHODS, SamplingError, run_sampler


@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


@pytest.mark.parametrize("method", [m for m in METHODS if m != "digs-torsional"])
def test_every_method_respects_budget_and_writes(dw4, method, tmp_path):
    out = str(tmp_path / "run.dcd")
    options = {"steps_per_swap": 10, "n_replicas": 4} if method == "pt" else {}
    result = run_sampler(dw4, method=method, force_evals=600, out=out, n_frames=5, seed=1,
                         progress=False, **options)
    assert 0 < result.force_evaluations <= 600 + 10
    traj = mdtraj.load(out, top=str(tmp_path / "run.pdb"))
    assert traj.n_frames == result.n_frames == 5  # exactly the frames asked for
    z = traj.xyz[..., 2].astype(np.float64)
    if method not in ("langevin", "pt"):  # Langevin also samples the separable z of the 2-D System
        np.testing.assert_allclose(z, 0.0, atol=1e-5)
    log = np.genfromtxt(tmp_path / "run.csv", delimiter=",", names=True)
    assert np.all(np.isfinite(log["reduced_energy_kT"]))
    # the logged energies are those of the written frames (float32 DCD coordinates)
    u = dw4.reduced_energy(traj.xyz[..., :2].astype(np.float64)).numpy() + 0.5 * (z**2).sum(1)
    np.testing.assert_allclose(u, log["reduced_energy_kT"], rtol=1e-4, atol=1e-3)


def test_openmm_torsional_digs_respects_budget_and_logs_its_frames(tmp_path):
    """digs-torsional (molecules only; particle systems have no torsions): exact frames,
    budget kept with the engine's own count, logged energies those of the frames."""
    ala = systems.get("alanine_dipeptide_vacuum")
    out = str(tmp_path / "run.dcd")
    result = run_sampler(ala, method="digs-torsional", force_evals=600, out=out, n_frames=5,
                         seed=1, progress=False)
    assert 0 < result.force_evaluations <= 600
    traj = mdtraj.load(out, top=str(tmp_path / "run.pdb"))
    assert traj.n_frames == result.n_frames == 5
    log = np.genfromtxt(tmp_path / "run.csv", delimiter=",", names=True)
    u = ala.reduced_energy(traj.xyz.astype(np.float64)).numpy()
    np.testing.assert_allclose(u, log["reduced_energy_kT"], rtol=1e-4, atol=2e-2)
    assert np.all(np.diff(log["force_evaluations"]) > 0)


def test_torsional_digs_on_peptide_leaves_bonds_intact(tmp_path):
    ala = systems.get("alanine_dipeptide_vacuum")
    out = str(tmp_path / "ala.dcd")
    result = run_sampler(ala, method="digs", force_evals=3000, out=out, n_frames=10, seed=0,
                         progress=False)
    traj = mdtraj.load(out, top=str(tmp_path / "ala.pdb"))
    assert result.acceptance["init_acceptance"][0] > 0.01  # pivot moves do get accepted
    bonds = np.array([[b[0].index, b[1].index] for b in traj.topology.bonds])
    lengths = mdtraj.compute_distances(traj, bonds)
    assert np.all(np.abs(lengths - lengths[0]) < 0.02)  # nm: no bond is torn apart


def falling_particle():
    """One particle pulled into log(x): x crosses 0 and the energy becomes NaN."""
    import openmm
    from openmm import app
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce("10*log(x) + 0.5*(y^2 + z^2)")
    force.addParticle(0, [])
    system.addForce(force)
    topology = app.Topology()
    topology.addAtom("X", app.Element.getBySymbol("Ar"), topology.addResidue("X", topology.addChain()))
    return systems.from_openmm(system, topology, [[1.0, 0.0, 0.0]], 120.0)


def test_blow_up_is_reported_and_trajectory_stays_readable(tmp_path):
    out = str(tmp_path / "boom.dcd")
    with pytest.raises(SamplingError, match=r"energy became nan at step \d+"):
        run_sampler(falling_particle(), method="langevin", force_evals=100000, out=out,
                    n_frames=1000, seed=0, progress=False, timestep=10.0)
    traj = mdtraj.load(out, top=str(tmp_path / "boom.pdb"))
    assert traj.n_frames >= 1 and np.all(np.isfinite(traj.xyz))


def test_bad_arguments(dw4, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run_sampler(dw4, method="nope", out=str(tmp_path / "a.dcd"))
    with pytest.raises(ValueError, match="less than one step"):
        run_sampler(dw4, method="hmc", force_evals=3, out=str(tmp_path / "a.dcd"), progress=False)


def test_torch_chains_share_the_budget(dw4, tmp_path):
    out = str(tmp_path / "chains.dcd")
    result = run_sampler(dw4, method="mala", force_evals=4000, out=out, n_frames=12, seed=2,
                         progress=False, chains=4)
    assert result.force_evaluations <= 4000
    traj = mdtraj.load(out, top=str(tmp_path / "chains.pdb"))
    assert traj.n_frames == result.n_frames == 12  # 3 reports of 4 chains
    log = np.genfromtxt(tmp_path / "chains.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(log["chain"][:8], [0, 1, 2, 3, 0, 1, 2, 3])
    # chains are independent: their last frames differ
    last = traj.xyz[-4:]
    assert not np.allclose(last[0], last[1])
    with pytest.raises(ValueError, match="chains must be >= 1"):
        run_sampler(dw4, method="mala", out=out, chains=0, progress=False)


def test_chains_in_worker_processes_match_single_chain_runs(dw4, tmp_path):
    from openmm_dikl.samplers import chain_seed
    out = str(tmp_path / "workers.dcd")
    budget, n_chains = 1500, 3
    result = run_sampler(dw4, method="mala", force_evals=budget, out=out, n_frames=12, seed=5,
                         progress=False, chains=n_chains, workers=2)
    traj = mdtraj.load(out, top=str(tmp_path / "workers.pdb"))
    assert traj.n_frames == result.n_frames == 12 and result.force_evaluations <= budget
    log = np.genfromtxt(tmp_path / "workers.csv", delimiter=",", names=True)
    assert log.dtype.names == ("step", "chain", "method", "force_evaluations",
                               "potential_energy_kJ_per_mol", "reduced_energy_kT", "acceptance")
    np.testing.assert_array_equal(log["chain"], np.tile(np.arange(n_chains),
                                                        traj.n_frames // n_chains))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".chains-")]  # cleaned up
    for k in range(n_chains):  # each chain is bit for bit the chain run alone
        alone = str(tmp_path / f"alone{k}.dcd")
        single = run_sampler(dw4, method="mala", force_evals=budget // n_chains, out=alone,
                             n_frames=4, seed=chain_seed(5, k), progress=False)
        ref = mdtraj.load(alone, top=str(tmp_path / f"alone{k}.pdb"))
        np.testing.assert_array_equal(traj.xyz[k::n_chains], ref.xyz)
        ref_log = np.genfromtxt(tmp_path / f"alone{k}.csv", delimiter=",", names=True)
        np.testing.assert_array_equal(log["reduced_energy_kT"][k::n_chains],
                                      ref_log["reduced_energy_kT"])
        np.testing.assert_array_equal(log["force_evaluations"][k::n_chains],
                                      n_chains * ref_log["force_evaluations"])
        assert single.n_steps == result.n_steps
    assert not np.allclose(traj.xyz[-3], traj.xyz[-2])  # the chains differ
    assert chain_seed(5, 0) == 5 and len({chain_seed(5, k) for k in range(50)}) == 50
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        run_sampler(dw4, method="mala", out=out, chains=2, workers=0, progress=False)


def test_chain_blow_up_in_a_worker_is_reported_with_readable_frames(tmp_path):
    out = str(tmp_path / "boom.dcd")  # a user (pickled) target, not a bundled one
    with pytest.raises(SamplingError, match=r"energy became nan .*chain files kept in") as info:
        run_sampler(falling_particle(), method="langevin", force_evals=20000, out=out,
                    n_frames=2000, seed=0, progress=False, timestep=10.0, chains=2, workers=2)
    failed = re.search(r"are in (\S+\.dcd)", str(info.value)).group(1)
    assert os.path.dirname(failed) in str(info.value).rsplit("kept in", 1)[1]
    traj = mdtraj.load(failed, top=failed[:-4] + ".pdb")
    assert traj.n_frames >= 1 and np.all(np.isfinite(traj.xyz))


def test_progress_bar_counts_force_evaluations(dw4, tmp_path, capsys):
    run_sampler(dw4, method="digs", force_evals=900, out=str(tmp_path / "p.dcd"), n_frames=3,
                seed=0, progress=True)
    bars = re.findall(r"(\d+)/(\d+) \[[^\]]*evals/s\]", capsys.readouterr().err)
    assert bars, "no progress bar in force evaluations"
    done, total = map(int, bars[-1])
    assert done == total and 800 < total <= 900


def test_pt_budget_that_allows_few_frames_says_so(dw4, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="openmm_dikl.samplers.runner"):
        result = run_sampler(dw4, method="pt", force_evals=20000, out=str(tmp_path / "pt.dcd"),
                             n_frames=1000, seed=0, progress=False)
    assert result.n_frames == 5  # 8 replicas x 500 steps per iteration: 5 iterations
    assert "writing 5 frames, not the 1000 asked for" in caplog.text


def test_digs_frames_log_the_energies_of_the_sampler_without_re_evaluating(dw4, tmp_path):
    from openmm_dikl.samplers import runner
    result = run_sampler(dw4, method="digs", force_evals=2000, out=str(tmp_path / "d.dcd"),
                         n_frames=4, seed=0, progress=False, chains=2)
    # 2 chains x (1 initialisation + 5 MALA steps) per sweep, + the starts: nothing for logging
    assert result.force_evaluations == 2 + result.n_steps * 2 * 6
    assert runner.method_options(dw4, "digs", {"alphas": [0.3]})["alphas"] == [0.3]


def test_reading_chains_is_quiet(dw4, tmp_path, capfd):
    run_sampler(dw4, method="mala", force_evals=600, out=str(tmp_path / "q.dcd"), n_frames=4,
                seed=0, progress=False, chains=2, workers=2)
    captured = capfd.readouterr()
    assert "dcdplugin" not in captured.out + captured.err


def test_exactly_the_frames_asked_for_when_chains_do_not_divide_them(dw4, tmp_path):
    out = str(tmp_path / "f.dcd")
    result = run_sampler(dw4, method="mala", force_evals=3000, out=out, n_frames=10, seed=0,
                         progress=False, chains=4)
    log = np.genfromtxt(tmp_path / "f.csv", delimiter=",", names=True)
    assert result.n_frames == 10 == len(log)  # 3 reports; the last one writes chains 0 and 1
    np.testing.assert_array_equal(log["chain"], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    assert mdtraj.load(out, top=str(tmp_path / "f.pdb")).n_frames == 10


def test_frames_come_after_burn_in_and_the_rest_of_the_budget_still_runs(dw4, tmp_path):
    result = run_sampler(dw4, method="mala", force_evals=1001, out=str(tmp_path / "b.dcd"),
                         n_frames=3, seed=0, progress=False)
    log = np.genfromtxt(tmp_path / "b.csv", delimiter=",", names=True)
    # 1000 steps: 100 of burn-in (step-size adaptation), then reports every 300 steps
    np.testing.assert_array_equal(log["step"], [400, 700, 1000])
    assert result.n_steps == 1000 and result.force_evaluations == 1001
    explicit = run_sampler(dw4, method="langevin", force_evals=1000, out=str(tmp_path / "l.dcd"),
                           n_frames=3, seed=0, progress=False, burn_in=100)
    log = np.genfromtxt(tmp_path / "l.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(log["step"], [400, 700, 1000])  # the steps logged are run
    assert explicit.force_evaluations == 1000
    with pytest.raises(ValueError, match="burn_in"):
        run_sampler(dw4, method="mala", force_evals=100, out=str(tmp_path / "c.dcd"),
                    progress=False, burn_in=500)


def test_digs_on_a_longer_peptide_runs_the_openmm_move_with_its_defaults(tmp_path):
    """``digs`` on Ace-(Ala)3-Nme (nested φ/ψ, HBonds) is the OpenMM torsional move with the
    system's defaults: one GHMC step per level, so a sweep of 6 levels costs at most 18."""
    peptide = systems.get("ace_ala3_nme_implicit")
    result = run_sampler(peptide, method="digs", force_evals=360, out=str(tmp_path / "p.dcd"),
                         n_frames=2, progress=False)
    assert result.n_steps == 20 and result.force_evaluations <= 360
    assert len(result.acceptance["init_acceptance"]) == 6

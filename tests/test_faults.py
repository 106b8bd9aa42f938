"""Fault tests: killed training, blow-ups, killed bridge workers and bad input.

Covered elsewhere and not repeated here: in-process interruption + bit-exact resume and
checkpoint mismatch errors (test_dikl.py), Langevin blow-up (test_sampling.py), an idle
worker killed between calls and worker exceptions (test_bridge.py), bad bridge positions
and arguments (test_bridge.py), and the first set of one-line CLI errors (test_cli.py,
test_cli_dikl.py).
"""
import concurrent.futures
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from openmm_dikl import systems
from openmm_dikl.bridge import OpenMMBridge
from openmm_dikl.cli import main
from openmm_dikl.dikl import CheckpointError, DiKLConfig, load_sampler
from openmm_dikl.samplers import DiGSSampler, GaussianKernel
from openmm_dikl.samplers import DiffusiveGibbsIntegrator
from openmm_dikl.io import read_samples
from openmm_dikl.samplers import DiffusiveGibbsMove
from openmm_dikl.samplers import SamplingError, run_sampler
from openmm_dikl.systems import from_openmm, shipped_path
from openmm_dikl.samplers import HMC, MALA
from openmm_dikl.units import as_kelvin, check_positions

CHECKPOINT_EVERY = 3

#: ``python HANG_DRIVER K ARGV...`` runs ``openmm-dikl ARGV`` with torch.save replaced by one
#: that, on its K-th call, writes the first half of the file and then hangs until killed:
#: a deterministic way to SIGKILL training in the middle of a checkpoint write, injected
#: from the test side (the library has no fault hook).
HANG_DRIVER = """
import io
import sys
import time

import torch

import openmm_dikl.cli

hang_at, calls, real_save = int(sys.argv[1]), [], torch.save


def save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) != hang_at:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(f, "wb") as handle:
        handle.write(data[: len(data) // 2])
    while True:
        time.sleep(1.0)


torch.save = save
sys.exit(openmm_dikl.cli.main(sys.argv[2:]))
"""


# ---------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A tiny DW-4 recipe (iterations of ~10 ms) written to a JSON file."""
    from openmm_dikl.nn import EGNNGenerator, EGNNScore
    path = tmp_path_factory.mktemp("recipe") / "tiny.json"
    path.write_text(json.dumps({
        "system": "dw4",
        "generator": EGNNGenerator(4, 2, n_layers=1, hidden=8).config,
        "score_model": EGNNScore(4, 2, n_layers=1, hidden=8).config,
        "dikl": {"n_levels": 5, "batch_size": 16, "score_steps_per_iter": 2,
                 "n_importance": 4, "n_ais_steps": 0, "n_mala_steps": 2, "n_iterations": 40,
                 "checkpoint_every": CHECKPOINT_EVERY, "ema_decay": 0.9, "seed": 7},
        "notes": "fault tests"}))
    return path


def start_training(recipe, out, hang_in_save=None):
    """`openmm-dikl train` in a subprocess that runs until killed; with ``hang_in_save=K``
    through :data:`HANG_DRIVER` (the K-th checkpoint write hangs half-way)."""
    argv = ["train", "dw4", "--config", str(recipe), "--out", str(out), "--iterations",
            "1000000", "--no-progress"]
    if hang_in_save is None:
        command = [sys.executable, "-m", "openmm_dikl.cli"] + argv
    else:
        driver = out.parent / "hang_driver.py"
        driver.write_text(HANG_DRIVER)
        command = [sys.executable, str(driver), str(hang_in_save)] + argv
    return subprocess.Popen(command,
                            # the same thread count as the in-process resume (bitwise replay)
                            env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(condition, process, timeout=60.0):
    """Poll ``condition()`` every 10 ms while ``process`` runs; its value once truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    process.kill()
    raise AssertionError("timed out waiting for the training subprocess")


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def log_rows(out):
    """log.csv rows by iteration, without the wall-clock column (which never repeats)."""
    path = out / "log.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle)  # a row cut by the kill is incomplete
                if all(v not in (None, "") for v in r.values())]
    return {int(r["iteration"]): {k: v for k, v in r.items() if k != "wall_time_s"}
            for r in rows}


def checkpoint_iteration(path):
    return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])


def train_in_process(recipe, out, total, resume):
    """What `openmm-dikl train [--resume]` does, without the final evaluation (for speed;
    the CLI path itself is tested in test_cli_dikl.py)."""
    from openmm_dikl.dikl import DiKLTrainer
    from openmm_dikl.nn import build_model
    spec = json.loads(recipe.read_text())
    trainer = DiKLTrainer(systems.get("dw4"), build_model(spec["generator"]),
                          build_model(spec["score_model"]), DiKLConfig.from_dict(spec["dikl"]))
    trainer.train(total, out_dir=out, resume=resume, progress=False)
    trainer.close()


def assert_resumed_run_replays_the_killed_one(out, before, last_good, total):
    """After resuming from ``last_good``, log.csv has each iteration 1..total once, and the
    iterations the killed run had already logged come out identical (same random stream,
    same weights): the resumed run is the uninterrupted run."""
    after = log_rows(out)
    assert sorted(after) == list(range(1, total + 1))
    assert all(after[i] == before[i] for i in before if i <= last_good)  # kept as they were
    replayed = [i for i in before if last_good < i <= total]
    assert replayed, "the kill came too early to compare any replayed iteration"
    for i in replayed:
        assert after[i] == before[i], i
    assert checkpoint_iteration(out / "checkpoint.pt") == total
    return replayed


# ---------------------------------------------------------------------- killed training
def test_kill_during_checkpoint_write_keeps_last_good_checkpoint(recipe, tmp_path):
    out = tmp_path / "run"
    # the third checkpoint write (iteration 9) stops half-way through its temporary file
    process = start_training(recipe, out, hang_in_save=3)
    stuck_at = 3 * CHECKPOINT_EVERY

    def half_written():
        temp = list(out.glob(".tmp-*.pt"))
        return len(log_rows(out)) == stuck_at and temp and temp[0].stat().st_size > 0 and temp

    temp = wait_until(half_written, process)
    time.sleep(0.2)
    assert process.poll() is None and list(out.glob(".tmp-*.pt")) == temp  # hanging in the write
    kill(process)

    with pytest.raises(CheckpointError, match="truncated or corrupt"):  # the half-written file
        load_sampler(temp[0])
    assert checkpoint_iteration(out / "checkpoint.pt") == 2 * CHECKPOINT_EVERY  # never torn
    before = log_rows(out)
    assert sorted(before) == list(range(1, stuck_at + 1))  # log ran ahead of the checkpoint
    train_in_process(recipe, out, stuck_at + 3, resume=True)
    replayed = assert_resumed_run_replays_the_killed_one(out, before, 2 * CHECKPOINT_EVERY,
                                                         stuck_at + 3)
    assert replayed == list(range(2 * CHECKPOINT_EVERY + 1, stuck_at + 1))
    assert load_sampler(out / "sampler.pt", target="dw4").sample(4, seed=0).shape == (4, 4, 2)


def pause_when_rows_follow_the_checkpoint(process, out, timeout=60.0):
    """SIGSTOP ``process`` at the first moment at which log.csv holds rows after the
    iteration of checkpoint.pt (the rows a resumed run must replay); returns that
    iteration.  Each look happens while the process is stopped, so the files cannot change
    between the look and the kill."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        process.send_signal(signal.SIGSTOP)
        _, status = os.waitpid(process.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status), status
        last_good = checkpoint_iteration(out / "checkpoint.pt")  # loads: never torn
        if max(log_rows(out)) > last_good:
            return last_good
        process.send_signal(signal.SIGCONT)
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.002)
    process.kill()
    raise AssertionError("the log never ran ahead of the checkpoint")


def test_kill_at_a_random_moment_then_resume(recipe, tmp_path):
    out = tmp_path / "run"
    process = start_training(recipe, out)
    wait_until(lambda: len(log_rows(out)) > CHECKPOINT_EVERY, process)  # a checkpoint exists
    time.sleep(random.Random(8).uniform(0.0, 0.5))
    last_good = pause_when_rows_follow_the_checkpoint(process, out)
    kill(process)
    assert checkpoint_iteration(out / "checkpoint.pt") == last_good
    assert last_good % CHECKPOINT_EVERY == 0 and last_good >= CHECKPOINT_EVERY
    before = log_rows(out)
    assert sorted(before) == list(range(1, max(before) + 1))
    assert last_good < max(before) <= last_good + CHECKPOINT_EVERY
    # resume a few iterations past the checkpoint, replaying those the killed run logged
    total = last_good + CHECKPOINT_EVERY + 1
    train_in_process(recipe, out, total, resume=True)
    replayed = assert_resumed_run_replays_the_killed_one(out, before, last_good, total)
    assert replayed == list(range(last_good + 1, max(before) + 1))


@pytest.mark.parametrize("keep", [0, 100, 0.5, -1], ids=["empty", "100B", "half", "last-byte"])
def test_truncated_checkpoint_and_sampler_name_the_file(recipe, tmp_path_factory, keep, capsys):
    folder = tmp_path_factory.getbasetemp() / "truncation-source"
    if not (folder / "sampler.pt").exists():
        train_in_process(recipe, folder, 2, resume=False)
    out = tmp_path_factory.mktemp("truncated")
    for name in ("checkpoint.pt", "sampler.pt"):
        data = (folder / name).read_bytes()
        n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
        (out / name).write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=r"sampler\.pt.*truncated or corrupt"):
        load_sampler(out / "sampler.pt")
    capsys.readouterr()
    for argv in (["train", "dw4", "--config", str(recipe), "--out", str(out), "--resume",
                  "--iterations", "4", "--no-progress"],
                 ["generate", str(out / "sampler.pt"), "-n", "5", "--out", str(out / "x.npy")]):
        before = sorted(os.listdir(out))
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(r"(checkpoint|sampler)\.pt.*truncated or corrupt",
                                           err[0]), err
        assert sorted(os.listdir(out)) == before  # nothing written


# ---------------------------------------------------------------------- blow-ups
def pit_particle():
    """One particle in a harmonic well with a pit of energy −inf beyond x < −1.5 nm."""
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce(
        "0.5*(x^2 + y^2 + z^2) + select(step(x + 1.5), 0, -1e300*1e300)")
    force.addParticle(0, [])
    system.addForce(force)
    topology = app.Topology()
    topology.addAtom("X", app.Element.getBySymbol("Ar"),
                     topology.addResidue("X", topology.addChain()))
    return from_openmm(system, topology, [[1.0, 0.0, 0.0]], 120.0, name="pit")


@pytest.mark.parametrize("method", ["mala", "hmc", "digs", "digs-cartesian"])
def test_blow_up_names_the_step_and_keeps_readable_frames(method, tmp_path):
    """A state of energy −inf is always accepted: the run stops with SamplingError naming
    the step, and every frame before it is on disk, finite and readable by mdtraj."""
    out = str(tmp_path / "boom.dcd")
    with pytest.raises(SamplingError, match=r"energy became -inf at step \d+") as info:
        # a frame every step, so the reported step is the step of the blow-up
        run_sampler(pit_particle(), method=method, force_evals=20000, n_frames=20000, seed=0,
                     out=out, progress=False, burn_in=0)
    step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    assert f"the {step - 1} frames before it are in {out}" in str(info.value)
    traj = mdtraj.load(out, top=str(tmp_path / "boom.pdb"))
    assert traj.n_frames == step - 1 >= 1
    assert np.all(np.isfinite(traj.xyz)) and np.all(traj.xyz[:, 0, 0] > -1.5)
    log = np.genfromtxt(tmp_path / "boom.csv", delimiter=",", names=True)
    assert len(log) == traj.n_frames and np.all(np.isfinite(log["reduced_energy_kT"]))


# ---------------------------------------------------------------------- bridge workers
def _slow_force(state):
    """PythonForce callable (module level, so worker processes can unpickle it):
    E = sum |x|^2 kJ/mol, taking 0.1 s per evaluation."""
    time.sleep(0.1)
    pos = state.getPositions(asNumpy=True)._value
    return float((pos ** 2).sum()), -2.0 * pos


def test_worker_killed_mid_batch_is_reported_within_seconds():
    """Worker 1 dies while both workers are inside their chunk of a batch; the caller (which
    waits for worker 0 first) gets RuntimeError within seconds, and the next call runs on
    a fresh pool with the right numbers."""
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    system.addForce(openmm.PythonForce(_slow_force))
    x = np.random.default_rng(0).standard_normal((40, 2, 3))  # 20 x 0.1 s per worker
    kt = as_kelvin(300.0) * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
        unit.kilojoule_per_mole / unit.kelvin)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    bridge = OpenMMBridge(system, 300.0, n_workers=2)
    try:
        pids = bridge.worker_pids
        call = executor.submit(bridge.compute, x)
        time.sleep(0.5)  # both workers are inside their chunk
        assert not call.done()
        start = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(RuntimeError, match=rf"pid {pids[1]}\).*SIGKILL"):
            call.result(timeout=30)
        assert time.monotonic() - start < 5.0  # worker 0 needs ~1.5 s more for its chunk
        u, f = executor.submit(bridge.compute, x[:4]).result(timeout=60)  # restarts the pool
        assert set(bridge.worker_pids).isdisjoint(pids)
        np.testing.assert_allclose(u.numpy(), (x[:4] ** 2).sum(axis=(1, 2)) / kt, rtol=1e-12)
        np.testing.assert_allclose(f.numpy(), -2.0 * x[:4] / kt, rtol=1e-12)
    finally:
        bridge.close()
        executor.shutdown(wait=False)


# ---------------------------------------------------------------------- bad input: API
@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


@pytest.fixture(scope="module")
def ala():
    return systems.get("alanine_dipeptide_vacuum")


def _ala_pdb():
    return app.PDBFile(shipped_path("alanine_dipeptide.pdb"))


def _ala_system(**kwargs):
    args = dict(nonbondedMethod=app.NoCutoff, constraints=None)
    args.update(kwargs)
    return app.ForceField("amber14-all.xml").createSystem(_ala_pdb().topology, **args)


def _with_barostat():
    pdb = _ala_pdb()
    pdb.topology.setPeriodicBoxVectors(np.eye(3) * 3.0 * unit.nanometer)
    system = app.ForceField("amber14-all.xml").createSystem(
        pdb.topology, nonbondedMethod=app.CutoffPeriodic, constraints=None)
    system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, 300.0))
    return from_openmm(system, pdb.topology, pdb.positions, 300.0)


def _angstrom_numbers():
    pdb = _ala_pdb()
    return pdb.positions.value_in_unit(unit.angstrom)


def _energy(x):
    return torch.zeros(x.shape[0], dtype=torch.float64), torch.zeros_like(x)


BAD_API_INPUT = [
    # positions in the wrong unit / type
    ("Å as bare numbers", lambda ds: from_openmm(_ala_system(), _ala_pdb().topology,
                                                 _angstrom_numbers(), 300.0),
     ValueError, r"median bond length 1\.\d+ nm .*angstrom"),
    ("nm / 10", lambda ds: from_openmm(_ala_system(), _ala_pdb().topology,
                                       np.asarray(_ala_pdb().positions._value) / 10, 300.0),
     ValueError, r"median bond length 0\.01\d+ nm .*far too short"),
    ("Å start for run_sampler", lambda ds: run_sampler(ds["ala"], "langevin",
                                                       positions=_angstrom_numbers(),
                                                       out=ds["out"], progress=False),
     ValueError, "about 10x too long"),
    ("positions in K", lambda ds: ds["dw4"].reduced_energy(np.ones((1, 4, 2)) * unit.kelvin),
     TypeError, "must be a length .nm., got a Quantity in kelvin"),
    ("complex positions", lambda ds: ds["dw4"].reduced_energy(np.ones((1, 4, 2), complex)),
     TypeError, "real numbers in nm, got dtype complex128"),
    ("boolean positions", lambda ds: check_positions(np.ones((1, 4, 2), bool), 4, 2),
     TypeError, "real numbers in nm, got dtype bool"),
    ("string positions", lambda ds: ds["dw4"].reduced_energy("0 0 1 1"),
     ValueError, "must be numeric"),
    ("temperature in nm", lambda ds: as_kelvin(300.0 * unit.nanometer),
     TypeError, "compatible with kelvin, got a Quantity in nanometer"),
    ("temperature 0", lambda ds: from_openmm(_ala_system(), _ala_pdb().topology,
                                             _ala_pdb().positions, 0.0),
     ValueError, "temperature must be finite and positive"),
    # shapes, empty batches, mismatched topology and positions
    ("empty batch", lambda ds: check_positions(np.zeros((0, 4, 2)), 4, 2),
     ValueError, "empty batch"),
    ("21 positions for 22 atoms", lambda ds: from_openmm(_ala_system(), _ala_pdb().topology,
                                                         np.zeros((21, 3)), 300.0),
     ValueError, r"shape \(batch, 22, 3\)"),
    ("topology of another molecule", lambda ds: from_openmm(
        _ala_system(), ds["dw4"].topology, _ala_pdb().positions, 300.0),
     ValueError, "topology has 4 atoms but the System has 22 particles"),
    ("topology not a Topology", lambda ds: from_openmm(_ala_system(), "ala.pdb",
                                                       _ala_pdb().positions, 300.0),
     TypeError, "topology must be an openmm.app.Topology"),
    ("start of wrong size", lambda ds: run_sampler(ds["ala"], "langevin",
                                                   positions=np.zeros((3, 3)), out=ds["out"],
                                                   progress=False),
     ValueError, r"shape \(batch, 22, 3\)"),
    ("string start (MALA)", lambda ds: MALA(ds["dw4"], step_size=0.1).run("0 0 1 1", 5),
     ValueError, "x0 must be numeric"),
    ("complex start (DiGS)", lambda ds: DiGSSampler(ds["dw4"], alphas=[0.5], step_size=0.1)
     .run(torch.zeros(2, 4, 2, dtype=torch.complex128), 5, progress=False),
     TypeError, "x0 must be real numbers"),
    ("zero chains", lambda ds: MALA(_energy, step_size=0.1).run(torch.zeros(0, 4, 2), 5),
     ValueError, "n_chains >= 1"),
    ("wrong DiGS start shape", lambda ds: DiGSSampler(ds["dw4"], alphas=[0.5], step_size=0.1)
     .run(torch.zeros(2, 4), 5, progress=False),
     ValueError, r"x0 must have shape \(n_chains, 4, 2\)"),
    # unsupported systems
    ("constraints (torch method)", lambda ds: run_sampler(
        from_openmm(_ala_system(constraints=app.HBonds), _ala_pdb().topology,
                    _ala_pdb().positions, 300.0), "mala", out=ds["out"], progress=False),
     ValueError, "12 constraints.*sampled by digs-torsional, langevin, pt"),
    ("torsional DiGS without torsions", lambda ds: run_sampler(
        ds["dw4"], "digs-torsional", out=ds["out"], progress=False),
     ValueError, "no pivotable backbone torsions"),
    ("virtual site", lambda ds: from_openmm(_virtual_site_system(), systems.get("dw4")
                                            .topology, np.zeros((4, 3)), 300.0),
     ValueError, r"1 virtual sites \(first: particle 3\)"),
    ("barostat", lambda ds: _with_barostat(), ValueError, "MonteCarloBarostat.*fixed volume"),
    ("barostat in the integrator", lambda ds: DiffusiveGibbsIntegrator.check_system(
        _barostat_system()), ValueError, "MonteCarloBarostat"),
    # noise levels and step sizes
    ("alpha 0", lambda ds: GaussianKernel([0.9, 0.0]), ValueError, r"in \(0, 1\]"),
    ("alpha > 1 (integrator)", lambda ds: DiffusiveGibbsIntegrator(300.0, [1.2]),
     ValueError, r"alphas must lie in \(0, 1\]"),
    ("alpha NaN (move)", lambda ds: DiffusiveGibbsMove([float("nan")]),
     ValueError, "alphas must be finite"),
    ("VP schedule not increasing", lambda ds: DiKLConfig.from_dict(dict(beta_min=0.1,
                                                                          beta_max=0.01)),
     ValueError, "beta_min"),
    ("step 0 (DiGS)", lambda ds: DiGSSampler(_energy, alphas=[0.5], step_size=0.0),
     ValueError, "step_size must be a finite value > 0"),
    ("step < 0 (HMC)", lambda ds: HMC(_energy, step_size=-0.1), ValueError,
     "step_size must be finite and > 0"),
    ("step < 0 (integrator)", lambda ds: DiffusiveGibbsIntegrator(300.0, [0.5],
                                                                  step_size=-1e-4),
     ValueError, "step_size must be finite and positive"),
    ("step in fs (integrator)", lambda ds: DiffusiveGibbsIntegrator(
        300.0, [0.5], step_size=1.0 * unit.femtosecond), ValueError, "units of length"),
    ("langevin timestep < 0", lambda ds: run_sampler(ds["dw4"], "langevin", timestep=-1.0,
                                                     out=ds["out"], progress=False),
     ValueError, "timestep > 0"),
    # budgets and counts
    ("negative budget", lambda ds: run_sampler(ds["dw4"], "mala", force_evals=-5,
                                               out=ds["out"], progress=False),
     ValueError, "force_evals and n_frames must be positive"),
    ("negative chains", lambda ds: run_sampler(ds["dw4"], "mala", chains=-2, out=ds["out"],
                                               progress=False),
     ValueError, "chains must be >= 1"),
    ("negative sweeps", lambda ds: DiGSSampler(_energy, alphas=[0.5], step_size=0.1)
     .run(torch.zeros(2, 4, 2), -1, progress=False), ValueError, "n_steps >= 1"),
    ("negative iterations", lambda ds: DiKLConfig.from_dict({"n_iterations": -1}), ValueError,
     r"run\.n_iterations must be an integer >= 0"),
    ("unknown platform", lambda ds: run_sampler(ds["dw4"], "langevin", platform="Nope",
                                                out=ds["out"], progress=False),
     ValueError, "platform 'Nope' is not available"),
]


def _virtual_site_system():
    system = openmm.System()
    for mass in (1.0, 1.0, 1.0, 0.0):
        system.addParticle(mass)
    system.setVirtualSite(3, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    return system


def _barostat_system():
    system = _ala_system()
    system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, 300.0))
    return system


@pytest.mark.parametrize("case, make, error, match", BAD_API_INPUT,
                         ids=[c[0] for c in BAD_API_INPUT])
def test_bad_api_input_is_named(dw4, ala, tmp_path, case, make, error, match):
    out = tmp_path / "never.dcd"
    with pytest.raises(error, match=match):
        make({"dw4": dw4, "ala": ala, "out": str(out)})
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_quantities_in_angstrom_are_converted(ala, dw4):
    pdb = _ala_pdb()
    in_angstrom = pdb.positions.in_units_of(unit.angstrom)
    target = from_openmm(_ala_system(), pdb.topology, in_angstrom, 300.0)
    np.testing.assert_allclose(target.positions.value_in_unit(unit.nanometer),
                               pdb.positions.value_in_unit(unit.nanometer), rtol=1e-12)
    x = dw4.reference_samples(3)
    np.testing.assert_allclose(dw4.reduced_energy(x.numpy() * 10 * unit.angstrom),
                               dw4.reduced_energy(x), rtol=1e-12)
    step = DiffusiveGibbsIntegrator(300.0, [0.5], step_size=1e-2 * unit.angstrom ** 2).step_size
    assert step.value_in_unit(unit.nanometer ** 2) == pytest.approx(1e-4)


def test_samples_in_angstrom_are_refused_when_read(ala, tmp_path):
    path = tmp_path / "ala.npy"
    np.save(path, 10 * np.asarray(ala.positions._value)[None].repeat(3, 0))
    with pytest.raises(ValueError, match=r"ala\.npy: median bond length .*angstrom"):
        read_samples(ala, str(path))


# ---------------------------------------------------------------------- bad input: CLI
BAD_CLI_INPUT = [
    (["sample", "dw4", "--frames", "0"], "force_evals and n_frames must be positive"),
    (["sample", "dw4", "--method", "mala", "--chains", "-2"], "chains must be >= 1"),
    (["sample", "dw4", "--method", "langevin", "--platform", "Nope"],
     "platform 'Nope' is not available"),
    (["sample", "--pdb", "{pdb}", "--forcefield", "amber14-all.xml", "--temperature", "-5"],
     "temperature must be finite and positive"),
    (["train", "dw4", "--config", "{recipe}", "--iterations", "-1"],
     "--iterations must be positive"),
    (["train", "dw4", "--config", "{recipe}", "--resume"], "checkpoint.pt"),
    (["generate", "{sampler}", "-n", "-3"], "-n must be positive"),
    (["evaluate", "{angstrom}", "--system", "alanine_dipeptide_vacuum"],
     "median bond length 1.09 nm"),
    (["evaluate", "{empty}", "--system", "dw4"], "is an empty batch"),
    (["evaluate", "{dw4}", "--system", "dw4", "--repeats", "0"],
     "n_repeats must be a positive integer"),
]


@pytest.mark.parametrize("argv, message", BAD_CLI_INPUT, ids=[" ".join(a[:3]) for a, _ in
                                                             BAD_CLI_INPUT])
def test_bad_cli_input_one_line_error(argv, message, recipe, ala, tmp_path, capsys):
    np.save(tmp_path / "ala_A.npy", 10 * np.asarray(ala.positions._value)[None])
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 2)))
    np.save(tmp_path / "dw4.npy", np.ones((5, 4, 2)))
    names = {"{empty}": str(tmp_path / "empty.npy"), "{dw4}": str(tmp_path / "dw4.npy"),
             "{pdb}": shipped_path("alanine_dipeptide.pdb"), "{recipe}": str(recipe),
             "{sampler}": str(tmp_path / "missing-sampler.pt"),
             "{angstrom}": str(tmp_path / "ala_A.npy")}
    argv = [names.get(a, a) for a in argv]
    out = {"sample": "run.dcd", "train": "run", "generate": "x.npy"}.get(argv[0])
    if out:
        argv += ["--out", str(tmp_path / out)]
    before = sorted(os.listdir(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "Traceback" not in err[0]
    assert sorted(os.listdir(tmp_path)) == before  # no partial output

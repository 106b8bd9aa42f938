"""Tests of openmm_dikl.bridge (OpenMM → torch, serial and spawned worker pool).

All on the Reference platform with small batches.  Worker pools cost ~2-3 s to spawn,
so the 2-worker pool is shared by a module-scoped fixture.
"""
import concurrent.futures
import copy
import doctest
import gc
import glob
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

import openmm_dikl._workers
import openmm_dikl.bridge
from openmm_dikl import systems
from openmm_dikl.bridge import OpenMMBridge
from openmm_dikl.units import kt_kjmol

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def ala2():
    return systems.get("alanine_dipeptide_vacuum")


@pytest.fixture(scope="module")
def serial(ala2):
    with OpenMMBridge(ala2.system, ala2.temperature, platform="Reference") as bridge:
        yield bridge


@pytest.fixture(scope="module")
def pool(ala2):
    with OpenMMBridge(ala2.system, ala2.temperature, platform="Reference",
                      n_workers=2) as bridge:
        yield bridge
        pids = bridge.worker_pids
        assert len(pids) == 2
    # leaving the ``with`` block stops the workers and unlinks the shared memory
    assert bridge.closed and wait_gone(pids, timeout=5.0)
    assert bridge._backend.shared_memory_names == []


def perturbed(target, n, scale=0.005, seed=0):
    """n configurations near the target's start positions (nm), float64 numpy (n, atoms, 3)."""
    rng = np.random.default_rng(seed)
    x0 = target.positions.value_in_unit(unit.nanometer)
    return x0 + scale * rng.standard_normal((n,) + x0.shape)


def direct(system, temperature, x):
    """Reduced energies and forces from one fresh Context through OpenMM's public API."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    kt = kt_kjmol(temperature)
    energies, forces = [], []
    for conf in x:
        context.setPositions(unit.Quantity([openmm.Vec3(*row) for row in conf], unit.nanometer))
        state = context.getState(energy=True, forces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kt)
        forces.append(state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer) / kt)
    return np.array(energies), np.array(forces)


def pid_alive(pid):
    """True if a process (not a reaped child) with this pid exists."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def shm_segments(pid=None):
    """Names of the bridge's shared-memory segments in /dev/shm created by process ``pid``."""
    return sorted(os.path.basename(p) for p in
                  glob.glob(f"/dev/shm/omdikl_{os.getpid() if pid is None else pid}_*"))


def wait_shm_gone(names, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/dev/shm/{name}") for name in names):
            return True
        time.sleep(0.05)
    return False


needs_dev_shm = pytest.mark.skipif(not os.path.isdir("/dev/shm"),
                                   reason="shared memory is not visible in /dev/shm here")


def wait_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------- correctness
def test_matches_direct_context_ala2_vacuum(ala2, serial):
    x = perturbed(ala2, 5)
    u, f = serial.compute(x)
    assert u.dtype == torch.float64 and f.dtype == torch.float64
    assert u.shape == (5,) and f.shape == (5, 22, 3)
    u_ref, f_ref = direct(ala2.system, ala2.temperature, x)
    np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-12, atol=1e-10)


def test_input_types_agree(ala2, serial):
    x = perturbed(ala2, 3)
    u, f = serial.compute(x)
    for variant in (torch.tensor(x), unit.Quantity(x * 10.0, unit.angstrom)):
        u2, f2 = serial.compute(variant)
        np.testing.assert_allclose(u2.numpy(), u.numpy(), rtol=1e-13)
        np.testing.assert_allclose(f2.numpy(), f.numpy(), rtol=1e-12, atol=1e-10)
    # a single configuration is a batch of one
    u1, f1 = serial.compute(x[1])
    assert u1.shape == (1,) and f1.shape == (1, 22, 3)
    assert u1[0] == u[1] and torch.equal(f1[0], f[1])


def test_dw4_planar_padding_matches_direct_and_torch_twin():
    target = systems.get("dw4")
    x = target.reference_samples(n=6).numpy()
    with OpenMMBridge(target.system, target.temperature) as bridge:
        u, f = bridge.compute(x)
    assert u.shape == (6,) and f.shape == (6, 4, 2)
    padded = np.concatenate([x, np.zeros(x.shape[:2] + (1,))], axis=-1)
    u_ref, f_ref = direct(target.system, target.temperature, padded)
    np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_ref[..., :2], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(u.numpy(), target.reduced_energy(torch.tensor(x)).numpy(),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f.numpy(), target.reduced_force(torch.tensor(x)).numpy(),
                               rtol=1e-9, atol=1e-9)


def test_forces_match_central_finite_differences(ala2, serial):
    x = perturbed(ala2, 1, scale=0.002, seed=3)[0]
    _, f = serial.compute(x)
    h = 1e-5  # nm
    rng = np.random.default_rng(1)
    for atom, axis in zip(rng.integers(0, 22, 12), rng.integers(0, 3, 12)):
        plus, minus = x.copy(), x.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        u_pm, _ = serial.compute(np.stack([plus, minus]))
        numeric = -(u_pm[0] - u_pm[1]).item() / (2 * h)
        assert numeric == pytest.approx(f[0, atom, axis].item(), rel=1e-5, abs=1e-3), (atom, axis)


def test_autograd_backward_is_minus_forces(ala2, serial):
    x = torch.tensor(perturbed(ala2, 4), requires_grad=True)
    u = serial.reduced_energy(x)
    _, f = serial.compute(x.detach())
    weights = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad((weights * u).sum(), x)
    torch.testing.assert_close(grad, -weights[:, None, None] * f, rtol=1e-14, atol=0)
    # float32 input gets a float32 gradient; a single configuration gets an (n, 3) gradient
    x32 = x.detach()[0].to(torch.float32).requires_grad_(True)
    u32 = serial.reduced_energy(x32)
    assert u32.shape == (1,) and u32.dtype == torch.float64
    u32.sum().backward()
    assert x32.grad.shape == (22, 3) and x32.grad.dtype == torch.float32


def test_autograd_gradcheck_dw4():
    target = systems.get("dw4")
    x = target.reference_samples(n=2).clone().requires_grad_(True)
    with OpenMMBridge(target.system, target.temperature) as bridge:
        assert torch.autograd.gradcheck(bridge.reduced_energy, (x,), eps=1e-6, atol=1e-5,
                                        rtol=1e-4)
        u = bridge.reduced_energy(x)
        (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        with pytest.raises(RuntimeError):  # no silent zero second derivative
            grad.sum().backward()


def test_periodic_system_uses_default_box():
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(2, 0, 0), openmm.Vec3(0, 2, 0),
                                        openmm.Vec3(0, 0, 2))
    bond = openmm.CustomBondForce("r^2")
    bond.setUsesPeriodicBoundaryConditions(True)
    bond.addBond(0, 1, [])
    system.addForce(bond)
    temperature = 200.0
    x = np.array([[[0.05, 0, 0], [1.95, 0, 0]]])  # periodic distance 0.1 nm, not 1.9
    with OpenMMBridge(system, temperature) as bridge:
        u, f = bridge.compute(x)
    assert u.item() == pytest.approx(0.01 / kt_kjmol(temperature), rel=1e-12)
    # pulled towards the image of particle 1 at x = -0.05 (not towards x = 1.95)
    assert f[0, 0, 0].item() == pytest.approx(-0.2 / kt_kjmol(temperature), rel=1e-12)


def test_constraints_are_accepted_and_not_applied(ala2, serial, caplog):
    constrained = copy.deepcopy(ala2.system)
    constrained.addConstraint(0, 1, 0.2)  # far from the current H-C distance
    x = perturbed(ala2, 2)
    with caplog.at_level(logging.DEBUG, logger="openmm_dikl.bridge"):
        bridge = OpenMMBridge(constrained, ala2.temperature)
    with bridge:
        u, f = bridge.compute(x)
    # accepted with one INFO record, nothing louder
    records = [r for r in caplog.records if r.name == "openmm_dikl.bridge"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert "1 constraints" in records[0].getMessage()
    # U(x) and -grad U(x) of the same System without constraints, at the given positions
    u0, f0 = serial.compute(x)
    assert torch.equal(u, u0) and torch.equal(f, f0)
    # the constraint pair counts as a bond for the length-scale check
    assert len(bridge.bonded_pairs) == len(serial.bonded_pairs) + 1
    assert "Constraints* are accepted" in OpenMMBridge.__doc__


def test_constraints_alone_give_the_bonds_of_the_length_check():
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    system.addConstraint(0, 1, 0.15)
    system.addConstraint(1, 2, 0.15)
    x = np.array([[0.0, 0, 0], [0.15, 0, 0], [0.3, 0, 0]])
    with OpenMMBridge(system, 300.0) as bridge:
        np.testing.assert_array_equal(bridge.bonded_pairs, [[0, 1], [1, 2]])
        u, _ = bridge.compute(x)
        assert u.item() == 0.0
        with pytest.raises(ValueError, match="angstrom"):
            bridge.compute(x * 10.0)


# ---------------------------------------------------------------------- length scale (nm, not Å)
def test_angstrom_positions_raise(ala2, serial, pool):
    x_nm = perturbed(ala2, 6)
    x_a = 10.0 * x_nm  # the same configurations as bare numbers in angstrom
    for bridge in (serial, pool):
        for variant in (x_a, torch.tensor(x_a), x_a[0]):
            with pytest.raises(ValueError, match=r"median bond length 1\.\d+ nm in sample 0 .*"
                                                 r"angstrom"):
                bridge.compute(variant)
        with pytest.raises(ValueError, match="angstrom"):
            bridge.reduced_energy(torch.tensor(x_a, requires_grad=True))
    # a bad configuration among the first LENGTH_CHECKED_SAMPLES is named
    mixed = x_nm.copy()
    mixed[2] = x_a[2]
    with pytest.raises(ValueError, match="in sample 2 "):
        serial.compute(mixed)
    # ... and only those are checked (a bounded cost per call)
    n = openmm_dikl.bridge.LENGTH_CHECKED_SAMPLES
    assert serial.compute(np.concatenate([x_nm[:n], x_a[n:]]))[0].shape == (6,)
    # nm too short (e.g. a unit larger than nm) is refused as well
    with pytest.raises(ValueError, match="far too short"):
        serial.compute(x_nm / 10.0)
    # a Quantity in angstrom is converted, not refused; the opt-out skips the check
    u, _ = serial.compute(unit.Quantity(x_a, unit.angstrom))
    np.testing.assert_allclose(u.numpy(), serial.compute(x_nm)[0].numpy(), rtol=1e-12)
    u_a, _ = serial.compute(x_a, check_length_scale=False)
    assert u_a.min() > 1e5  # what a user passing angstrom used to get silently, in kT


def test_target_reduced_energy_refuses_angstrom(ala2):
    """TargetSystem.reduced_energy (bridged and torch-twin targets) checks the length scale.

    (A TargetSystem test: kept here with the bridge's length-scale tests.)"""
    x_nm = torch.tensor(perturbed(ala2, 3))
    u = ala2.reduced_energy(x_nm)
    assert torch.isfinite(u).all() and u.max() < 1e3
    for bad in (10.0 * x_nm, (10.0 * x_nm).numpy(), (10.0 * x_nm)[0],
                (10.0 * x_nm).reshape(3, 1, 22, 3)):
        with pytest.raises(ValueError, match=r"alanine_dipeptide_vacuum: positions: median "
                                             r"bond length .* angstrom"):
            ala2.reduced_energy(bad)
    assert ala2.reduced_energy(10.0 * x_nm, check_length_scale=False).min() > 1e5
    ani = systems.get("alanine_dipeptide_ani")  # a torch twin: no bridge involved
    with pytest.raises(ValueError, match="angstrom"):
        ani.reduced_energy(10.0 * torch.tensor(perturbed(ani, 1)))


def test_length_check_skipped_for_non_nm_bond_models():
    """A coarse-grained model whose own bonds are 1 nm long is not refused."""
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    for i in range(4):
        system.addParticle(100.0)
        if i:
            bonds.addBond(i - 1, i, 1.0, 1000.0)  # r0 = 1 nm
    system.addForce(bonds)
    x = np.array([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]])
    with OpenMMBridge(system, 300.0) as bridge:
        assert bridge.bonded_pairs.shape == (0, 2)
        u, _ = bridge.compute(x)
    assert u.item() == pytest.approx(0.0, abs=1e-12)


def test_module_doctests():
    result = doctest.testmod(openmm_dikl.bridge, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make_bad, match", [
    (lambda x: _set(x, (3, 5, 1), np.nan), r"NaN or inf in sample 3"),
    (lambda x: _set(x, (1, 0, 0), np.inf), r"NaN or inf in sample 1"),
    (lambda x: x[:, :21], r"shape \(batch, 22, 3\)"),
    (lambda x: x[..., :1], r"last axis of size 3"),
    (lambda x: np.concatenate([x, x[..., :1]], -1), r"last axis of size 3"),
    (lambda x: x[None], r"shape \(batch, 22, 3\)"),
    (lambda x: x[0, 0], r"shape \(batch, 22, 3\)"),
    (lambda x: x[:0], r"empty batch"),
])
def test_bad_positions_raise(ala2, serial, make_bad, match):
    with pytest.raises(ValueError, match=match):
        serial.compute(make_bad(perturbed(ala2, 4)))
    with pytest.raises(ValueError, match=match):
        serial.reduced_energy(torch.as_tensor(make_bad(perturbed(ala2, 4))))


def test_non_numeric_positions_raise(serial):
    with pytest.raises(ValueError, match="numeric"):
        serial.compute("not positions")


def _set(x, index, value):
    x = x.copy()
    x[index] = value
    return x


def test_pool_validates_before_dispatch(ala2, pool):
    x = perturbed(ala2, 4)
    x[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="sample 2"):
        pool.compute(x)


def test_virtual_sites_refused():
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.setParticleMass(2, 0.0)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"1 virtual site\(s\) \(first: particle 2\)"):
        OpenMMBridge(system, 300.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_workers=0), "n_workers must be a positive integer"),
    (dict(n_workers=1.5), "n_workers must be a positive integer"),
    (dict(platform="NoSuchPlatform"), "platform 'NoSuchPlatform' is not available"),
    (dict(temperature=-1.0), "temperature must be finite and positive"),
])
def test_bad_construction_arguments(ala2, kwargs, match):
    args = dict(temperature=300.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        OpenMMBridge(ala2.system, **args)


def test_closed_bridge_raises_and_restarts(ala2):
    bridge = OpenMMBridge(ala2.system, 300.0)
    x = perturbed(ala2, 2)
    u, _ = bridge.compute(x)
    bridge.close()
    bridge.close()  # idempotent
    assert bridge.closed
    with pytest.raises(RuntimeError, match="closed"):
        bridge.compute(x)
    bridge.restart()
    assert torch.equal(bridge.compute(x)[0], u)


# ---------------------------------------------------------------------- worker pool
@pytest.mark.parametrize("batch", [1, 2, 3, 17])
def test_two_workers_equal_one_worker(ala2, serial, pool, batch):
    x = perturbed(ala2, batch, seed=batch)
    u1, f1 = serial.compute(x)
    u2, f2 = pool.compute(x)
    assert len(pool.worker_pids) == 2
    assert torch.equal(u1, u2) and torch.equal(f1, f2)


def test_pool_autograd(ala2, serial, pool):
    x = torch.tensor(perturbed(ala2, 3), requires_grad=True)
    pool.reduced_energy(x).sum().backward()
    _, f = serial.compute(x.detach())
    assert torch.equal(x.grad, -f)


def test_killed_worker_is_reported_and_pool_restarts(ala2, serial, pool):
    x = perturbed(ala2, 6)
    u_ref, f_ref = serial.compute(x)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        # explicit restart
        pool.compute(x)
        old_pids, old_shm = pool.worker_pids, pool._backend.shared_memory_names
        assert len(old_shm) == 1 and os.path.exists(f"/dev/shm/{old_shm[0]}")
        os.kill(old_pids[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=rf"pid {old_pids[1]}\).*SIGKILL"):
            executor.submit(pool.compute, x).result(timeout=30)
        assert time.monotonic() - start < 5
        assert wait_gone(old_pids)
        assert pool._backend.shared_memory_names == [] and wait_shm_gone(old_shm, 1.0)
        pool.restart()
        assert set(pool.worker_pids).isdisjoint(old_pids)
        u, f = executor.submit(pool.compute, x).result(timeout=60)
        assert torch.equal(u, u_ref) and torch.equal(f, f_ref)
        assert pool._backend.shared_memory_names != old_shm
        # automatic restart on the next call
        os.kill(pool.worker_pids[0], signal.SIGKILL)
        with pytest.raises(RuntimeError, match="SIGKILL"):
            executor.submit(pool.compute, x).result(timeout=30)
        u, f = executor.submit(pool.compute, x).result(timeout=60)
        assert torch.equal(u, u_ref) and torch.equal(f, f_ref)
    finally:
        executor.shutdown(wait=False)


def _picky_force(state):
    """PythonForce callable (module level, so worker processes can unpickle it):
    E = sum |x|^2 kJ/mol, raising for any coordinate beyond 100 nm."""
    pos = state.getPositions(asNumpy=True)._value
    if np.abs(pos).max() > 100:
        raise ValueError("picky force refuses coordinates beyond 100 nm")
    return float((pos ** 2).sum()), -2.0 * pos


def test_worker_exception_is_reported_and_pool_stops_on_garbage_collection():
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    system.addForce(openmm.PythonForce(_picky_force))
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    kt = kt_kjmol(300.0)
    bridge = OpenMMBridge(system, 300.0, n_workers=2)
    pids = bridge.worker_pids
    u, f = bridge.compute(x)
    np.testing.assert_allclose(u.numpy(), (x ** 2).sum(axis=(1, 2)) / kt, rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), -2.0 * x / kt, rtol=1e-12)
    bad = x.copy()
    bad[4, 1, 2] = 500.0  # in the second chunk
    with pytest.raises(RuntimeError,
                       match="bridge worker 1 raised OpenMMException: picky force refuses"):
        bridge.compute(bad)
    # an exception, not a death: the same workers serve the next call, protocol in step
    assert bridge.worker_pids == pids
    assert torch.equal(bridge.compute(x)[0], u)
    assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
    # no close(): garbage collection stops the workers and unlinks the shared memory
    names = bridge._backend.shared_memory_names
    assert len(names) == 1
    del bridge
    gc.collect()
    assert wait_gone(pids, timeout=10.0)
    assert wait_shm_gone(names, timeout=1.0)


def test_script_without_close_exits(tmp_path):
    script = tmp_path / "no_close.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from openmm import unit
        from openmm_dikl import systems
        from openmm_dikl.bridge import OpenMMBridge

        if __name__ == "__main__":
            target = systems.get("alanine_dipeptide_vacuum")
            bridge = OpenMMBridge(target.system, target.temperature, n_workers=2)
            x = target.positions.value_in_unit(unit.nanometer)[None].repeat(4, 0)
            u, f = bridge.compute(x)
            print("PIDS", *bridge.worker_pids)
            print("SHM", *bridge._backend.shared_memory_names)
            print("ENERGY", float(u[0]))
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    pids, names = _printed(result.stdout, "PIDS"), _printed(result.stdout, "SHM")
    assert len(pids) == 2 and len(names) == 1
    assert wait_gone([int(p) for p in pids], timeout=5.0)
    assert wait_shm_gone(names, timeout=1.0)
    assert "leaked" not in result.stderr  # no resource_tracker complaint


def _printed(stdout, tag):
    return [word for line in stdout.splitlines() if line.startswith(tag + " ")
            for word in line.split()[1:]]


@needs_dev_shm
def test_killed_parent_leaves_no_workers_or_shared_memory(tmp_path):
    """SIGKILL of the process owning the pool: the workers see their pipes close and exit,
    and multiprocessing's resource tracker unlinks the shared memory."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys
        from openmm import unit
        from openmm_dikl import systems
        from openmm_dikl.bridge import OpenMMBridge

        if __name__ == "__main__":
            target = systems.get("alanine_dipeptide_vacuum")
            bridge = OpenMMBridge(target.system, target.temperature, n_workers=2)
            bridge.compute(target.positions.value_in_unit(unit.nanometer)[None].repeat(8, 0))
            print("PIDS", *bridge.worker_pids)
            print("SHM", *bridge._backend.shared_memory_names, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids, names = _printed(result.stdout, "PIDS"), _printed(result.stdout, "SHM")
    assert len(pids) == 2 and len(names) == 1
    assert wait_gone([int(p) for p in pids], timeout=10.0)
    assert wait_shm_gone(names, timeout=10.0)


@needs_dev_shm
def test_shared_memory_grows_and_is_unlinked_on_close(ala2, serial):
    bridge = OpenMMBridge(ala2.system, ala2.temperature, n_workers=2)
    try:
        assert bridge._backend.shared_memory_names == []  # created by the first compute
        x = perturbed(ala2, 40, seed=4)
        assert torch.equal(bridge.compute(x[:8])[0], serial.compute(x[:8])[0])
        (first,) = bridge._backend.shared_memory_names
        assert first in shm_segments()
        bridge.compute(x[:5])  # a smaller batch reuses the block
        assert bridge._backend.shared_memory_names == [first]
        u, f = bridge.compute(x)  # a larger one replaces it
        (second,) = bridge._backend.shared_memory_names
        assert second != first and wait_shm_gone([first], 1.0) and second in shm_segments()
        u_ref, f_ref = serial.compute(x)
        assert torch.equal(u, u_ref) and torch.equal(f, f_ref)
    finally:
        bridge.close()
    assert bridge._backend.shared_memory_names == [] and wait_shm_gone([second], 1.0)
    assert not [name for name in shm_segments() if name in (first, second)]


def test_batches_larger_than_the_shared_block_go_in_rounds(ala2, serial, monkeypatch):
    # a block of 5 configurations at most: a batch of 23 takes 5 rounds
    monkeypatch.setattr(openmm_dikl._workers, "_MAX_SHARED_BYTES", 5 * 8 * (6 * 22 + 1))
    x = perturbed(ala2, 23, seed=6)
    with OpenMMBridge(ala2.system, ala2.temperature, n_workers=2) as bridge:
        u, f = bridge.compute(x)
        assert bridge._backend._blocks[0].capacity == 5
    u_ref, f_ref = serial.compute(x)
    assert torch.equal(u, u_ref) and torch.equal(f, f_ref)


def test_chunks_cover_the_batch_in_order():
    for n_samples in (1, 2, 5, 17, 64, 1000, 1024, 4097):
        chunks = openmm_dikl._workers._chunks(n_samples, 2)
        assert chunks[0][0] == 0 and chunks[-1][1] == n_samples
        assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
        assert len(chunks) <= 2 * openmm_dikl._workers._CHUNKS_PER_WORKER
        assert len(chunks) >= min(n_samples, 2)


def test_ani_system_through_bridge():
    target = systems.get("alanine_dipeptide_ani")
    x = perturbed(target, 2, scale=0.003)
    with OpenMMBridge(target.system, target.temperature) as bridge:
        u, f = bridge.compute(x)
    xt = torch.tensor(x)
    np.testing.assert_allclose(u.numpy(), target.reduced_energy(xt).detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), target.reduced_force(xt).numpy(), rtol=1e-9,
                               atol=1e-7)
    # worker processes receive the System through XmlSerializer (the PythonForce callable
    # is pickled into the XML); check that round trip here, in-process, where it is cheap
    clone = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(target.system))
    with OpenMMBridge(clone, target.temperature) as bridge:
        u_clone, f_clone = bridge.compute(x)
    assert torch.equal(u_clone, u) and torch.equal(f_clone, f)

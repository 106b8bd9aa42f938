"""Tests of openmm_dikl.bridge (OpenMM → torch, serial and spawned worker pool).

All on the Reference platform with small batches.  Worker pools cost ~2-3 s to spawn,
so the 2-worker pool is shared by a module-scoped fixture.
"""
import concurrent.futures
import copy
import doctest
import gc
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
    # leaving the ``with`` block stops the workers
    assert bridge.closed and wait_gone(pids, timeout=5.0)


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


def test_constraints_are_not_applied(ala2, serial):
    constrained = copy.deepcopy(ala2.system)
    constrained.addConstraint(0, 1, 0.2)  # far from the current H-C distance
    x = perturbed(ala2, 2)
    with OpenMMBridge(constrained, ala2.temperature) as bridge:
        u, f = bridge.compute(x)
    u0, f0 = serial.compute(x)
    assert torch.equal(u, u0) and torch.equal(f, f0)


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
        old_pids = pool.worker_pids
        os.kill(old_pids[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=rf"pid {old_pids[1]}\).*SIGKILL"):
            executor.submit(pool.compute, x).result(timeout=30)
        assert time.monotonic() - start < 10
        assert wait_gone(old_pids)
        pool.restart()
        assert set(pool.worker_pids).isdisjoint(old_pids)
        u, f = executor.submit(pool.compute, x).result(timeout=60)
        assert torch.equal(u, u_ref) and torch.equal(f, f_ref)
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
    # no close(): garbage collection stops the workers
    del bridge
    gc.collect()
    assert wait_gone(pids, timeout=10.0)


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
            print("ENERGY", float(u[0]))
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    pids = [int(p) for line in result.stdout.splitlines() if line.startswith("PIDS")
            for p in line.split()[1:]]
    assert len(pids) == 2
    assert wait_gone(pids, timeout=5.0)


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

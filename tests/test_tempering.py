"""Parallel tempering: exact exchange rule leaves the cold distribution invariant."""
import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_dikl.samplers import ParallelTempering, geometric_temperatures
from openmm_dikl.units import REDUCED_TEMPERATURE

# unbalanced 1-D double well in x (kT units at REDUCED_TEMPERATURE), harmonic in y and z
DOUBLE_WELL = "6*(x^2 - 1)^2 + 0.7*x + 0.5*(y^2 + z^2)"


def double_well_system():
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce(DOUBLE_WELL)
    force.addParticle(0, [])
    system.addForce(force)
    return system


def exact_positive_weight():
    x = np.linspace(-3, 3, 200001)
    p = np.exp(-(6 * (x**2 - 1) ** 2 + 0.7 * x))
    return p[x > 0].sum() / p.sum()


def test_ladder():
    ladder = geometric_temperatures(300, 600, 4)
    assert ladder[0] == pytest.approx(300) and ladder[-1] == pytest.approx(600)
    assert np.allclose(np.diff(np.log(ladder)), np.log(2) / 3)
    with pytest.raises(ValueError):
        geometric_temperatures(300, 200, 4)


def test_cold_replica_weights_match_exact():
    ladder = geometric_temperatures(REDUCED_TEMPERATURE, 6 * REDUCED_TEMPERATURE, 5)
    pt = ParallelTempering(double_well_system(), [[-1.0, 0.0, 0.0]] * unit.nanometer, ladder,
                           steps_per_swap=20, timestep=10.0, friction=10.0, seed=1)
    xs = np.array([pt.step()[0][0, 0] for _ in range(20000)])[500:]
    exact = exact_positive_weight()
    assert 0.1 < exact < 0.3  # the wells really are unbalanced
    # blocks of 250 iterations are close to independent here; 3.5 standard errors (~0.04)
    blocks = (xs > 0)[: len(xs) // 250 * 250].reshape(-1, 250).mean(1)
    se = blocks.std(ddof=1) / np.sqrt(len(blocks))
    assert abs((xs > 0).mean() - exact) < max(3.5 * se, 0.01), ((xs > 0).mean(), exact, se)
    assert np.all(pt.acceptance_rates > 0.2)
    assert pt.force_evaluations_per_iteration == 100


def test_checkpoint_roundtrip():
    ladder = geometric_temperatures(REDUCED_TEMPERATURE, 4 * REDUCED_TEMPERATURE, 3)
    pt = ParallelTempering(double_well_system(), [[-1.0, 0.0, 0.0]] * unit.nanometer, ladder,
                           steps_per_swap=5, timestep=10.0, seed=3)
    for _ in range(10):
        pt.step()
    state = pt.get_state()
    other = ParallelTempering(double_well_system(), [[1.0, 0.0, 0.0]] * unit.nanometer, ladder,
                              steps_per_swap=5, timestep=10.0, seed=99)
    other.set_state(state)
    assert other.iteration == 10
    np.testing.assert_array_equal(other.get_state()["positions"], state["positions"])
    with pytest.raises(ValueError, match="ladder"):
        ParallelTempering(double_well_system(), [[1.0, 0.0, 0.0]] * unit.nanometer,
                          ladder[:2], seed=1).set_state(state)


def test_refuses_constraints():
    system = double_well_system()
    system.addParticle(1.0)
    system.addConstraint(0, 1, 0.1)
    with pytest.raises(ValueError, match="constraints"):
        ParallelTempering(system, np.zeros((2, 3)), [300, 400])

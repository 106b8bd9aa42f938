"""Tests of openmm_dikl.samplers.moves.DiffusiveGibbsMove (Reference platform, explicit ContextCache)."""
import pickle

import numpy as np
import openmm
import pytest
from openmm import unit
from openmmtools import cache, mcmc, states, utils

from openmm_dikl.samplers import DiffusiveGibbsIntegrator
from openmm_dikl.samplers import DiffusiveGibbsMove
from openmm_dikl.units import REDUCED_TEMPERATURE

REFERENCE = openmm.Platform.getPlatformByName("Reference")
N_BATCHES = 50
CENTER = np.array([0.3, -0.2, 0.1])  # nm


def gaussian_system(n_particles=1):
    """Isotropic unit-variance Gaussian at kT = 1 kJ/mol: U = 0.5 |x - CENTER|^2 (kJ/mol)."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*((x-{0})^2 + (y-{1})^2 + (z-{2})^2)".format(*CENTER))
    for i in range(n_particles):
        system.addParticle(1.0)
        force.addParticle(i, [])
    system.addForce(force)
    return system


def make_states(system):
    thermodynamic_state = states.ThermodynamicState(system, REDUCED_TEMPERATURE * unit.kelvin)
    positions = np.zeros((system.getNumParticles(), 3)) * unit.nanometer
    return thermodynamic_state, states.SamplerState(positions)


def batch_mean_and_se(values):
    values = np.asarray(values, dtype=np.float64)
    usable = (len(values) // N_BATCHES) * N_BATCHES
    batches = values[:usable].reshape(N_BATCHES, -1, *values.shape[1:]).mean(axis=1)
    return values.mean(axis=0), batches.std(axis=0, ddof=1) / np.sqrt(N_BATCHES)


def test_move_samples_gaussian_and_counts():
    """Repeated apply() keeps a unit Gaussian: mean and variance within 4.5 batch-means SE."""
    thermodynamic_state, sampler_state = make_states(gaussian_system())
    context_cache = cache.ContextCache(platform=REFERENCE)
    move = DiffusiveGibbsMove(alphas=[0.4, 0.8], step_size=0.2, n_denoise_steps=3, n_steps=3,
                              random_seed=1)
    for _ in range(30):  # burn-in
        move.apply(thermodynamic_state, sampler_state, context_cache)
    move.reset_statistics()
    n_apply = 3000
    x = np.empty((n_apply, 3))
    for i in range(n_apply):
        move.apply(thermodynamic_state, sampler_state, context_cache)
        x[i] = sampler_state.positions.value_in_unit(unit.nanometer)[0]
    assert len(context_cache) == 1  # one Context reused by every application
    mean, mean_se = batch_mean_and_se(x)
    var, var_se = batch_mean_and_se((x - CENTER) ** 2)
    assert np.all(mean_se < 0.06) and np.all(var_se < 0.06)
    assert np.all(np.abs(mean - CENTER) < 4.5 * mean_se), (mean, mean_se)
    assert np.all(np.abs(var - 1.0) < 4.5 * var_se), (var, var_se)

    # statistics: 3 sweeps per apply; the schedule continues across applications
    stats = move.statistics
    assert stats["init_proposed"].sum() == 3 * n_apply
    np.testing.assert_array_equal(stats["init_proposed"], [4500, 4500])
    np.testing.assert_array_equal(stats["denoise_proposed"], 3 * stats["init_proposed"])
    rates = move.acceptance_rates
    for key in ("initialisation", "denoising"):
        assert rates[key].shape == (2,)
        assert np.all((rates[key] > 0) & (rates[key] <= 1))
    assert rates["initialisation"][0] < rates["initialisation"][1]


def test_level_cycles_across_applications():
    thermodynamic_state, sampler_state = make_states(gaussian_system())
    context_cache = cache.ContextCache(platform=REFERENCE)
    move = DiffusiveGibbsMove(alphas=[0.2, 0.5, 0.9], step_size=0.1, n_steps=1)
    for _ in range(7):
        move.apply(thermodynamic_state, sampler_state, context_cache)
    assert move.level == 1
    np.testing.assert_array_equal(move.statistics["init_proposed"], [3, 2, 2])


def test_move_uses_state_temperature():
    """<(x - c)^2> = kT/k per coordinate at kT = 3 kJ/mol (within 4.5 SE)."""
    system = gaussian_system()
    thermodynamic_state = states.ThermodynamicState(system, 3 * REDUCED_TEMPERATURE * unit.kelvin)
    sampler_state = states.SamplerState(np.zeros((1, 3)) * unit.nanometer)
    context_cache = cache.ContextCache(platform=REFERENCE)
    move = DiffusiveGibbsMove(alphas=[0.6], step_size=0.5, n_denoise_steps=3, n_steps=3,
                              random_seed=2)
    x = np.empty((2000, 3))
    for i in range(len(x)):
        move.apply(thermodynamic_state, sampler_state, context_cache)
        x[i] = sampler_state.positions.value_in_unit(unit.nanometer)[0]
    var, se = batch_mean_and_se((x[100:] - CENTER) ** 2)
    assert np.all(np.abs(var - 3.0) < 4.5 * se) and np.all(se < 0.25)


def test_serialization_round_trip():
    move = DiffusiveGibbsMove(alphas=[0.3, 0.7], sigmas=[0.5, 0.6] * unit.nanometer,
                              step_size=2.0 * unit.angstrom ** 2, n_denoise_steps=4,
                              denoiser="ghmc", momentum_retention=0.5, planar=True, n_steps=3)
    thermodynamic_state, sampler_state = make_states(gaussian_system())
    move.apply(thermodynamic_state, sampler_state, cache.ContextCache(platform=REFERENCE))
    assert move.level == 1

    for copy in (pickle.loads(pickle.dumps(move)), utils.deserialize(utils.serialize(move))):
        assert isinstance(copy, DiffusiveGibbsMove)
        np.testing.assert_array_equal(copy.alphas, [0.3, 0.7])
        np.testing.assert_allclose(copy.sigmas, [0.5, 0.6])
        assert copy.step_size == pytest.approx(0.02)
        assert (copy.n_denoise_steps, copy.denoiser, copy.momentum_retention) == (4, "ghmc", 0.5)
        assert copy.planar and copy.mh_init and copy.n_steps == 3 and copy.level == 1
        for name, values in move.statistics.items():
            np.testing.assert_array_equal(copy.statistics[name], values)
        assert copy.__getstate__() == move.__getstate__()


def test_move_in_sequence_with_other_moves():
    thermodynamic_state, sampler_state = make_states(gaussian_system(2))
    sequence = mcmc.SequenceMove([DiffusiveGibbsMove(alphas=[0.5], step_size=0.1, n_steps=2),
                                  mcmc.MCDisplacementMove(displacement_sigma=0.1 * unit.nanometer)])
    sequence.apply(thermodynamic_state, sampler_state, cache.ContextCache(platform=REFERENCE))
    assert sequence.move_list[0].statistics["init_proposed"][0] == 2


def test_constraints_are_refused():
    system = gaussian_system(2)
    system.addConstraint(0, 1, 0.1)
    thermodynamic_state, sampler_state = make_states(system)
    sampler_state.positions = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]) * unit.nanometer
    move = DiffusiveGibbsMove(alphas=[0.5], step_size=0.1)
    with pytest.raises(ValueError, match="constraints"):
        move.apply(thermodynamic_state, sampler_state, cache.ContextCache(platform=REFERENCE))


@pytest.mark.parametrize("kwargs, match", [
    (dict(alphas=[1.5]), "alphas"),
    (dict(alphas=[0.5], step_size=-1.0), "step_size"),
    (dict(alphas=[0.5], n_steps=0), "n_steps"),
    (dict(alphas=[0.5], denoiser="langevin"), "denoiser"),
    (dict(alphas=[0.5], reassign_velocities=True), "velocities"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusiveGibbsMove(**kwargs)


def test_statistics_setter_validates():
    move = DiffusiveGibbsMove(alphas=[0.5, 0.9])
    with pytest.raises(ValueError, match="shape"):
        move.statistics = {name: [0] for name in move.statistics}
    with pytest.raises(ValueError, match="missing"):
        move.statistics = {}
    move.statistics = {name: [1, 2] for name in move.statistics}
    np.testing.assert_array_equal(move.statistics["init_accepted"], [1, 2])
    assert isinstance(DiffusiveGibbsMove(alphas=[0.5])._get_integrator(
        make_states(gaussian_system())[0]), DiffusiveGibbsIntegrator)


def test_blocked_move_moves_only_its_blocks_and_round_trips():
    """blocks=[[0], [1]] on three particles: particle 2 never moves; blocks survive pickling."""
    move = DiffusiveGibbsMove(alphas=[0.5], blocks=[[0], [1]], step_size=0.1, n_steps=40,
                              random_seed=7)
    thermodynamic_state, sampler_state = make_states(gaussian_system(3))
    move.apply(thermodynamic_state, sampler_state, cache.ContextCache(platform=REFERENCE))
    x = sampler_state.positions.value_in_unit(unit.nanometer)
    assert np.all(x[2] == 0.0) and np.all(x[:2] != 0.0)
    assert move.n_levels == 2 and move.acceptance_rates["initialisation"].min() > 0.0
    for copy in (pickle.loads(pickle.dumps(move)), utils.deserialize(utils.serialize(move))):
        assert copy.blocks == [[0], [1]] and copy.random_seed == 7
        assert copy.__getstate__() == move.__getstate__()


def test_random_seed_makes_a_move_reproducible():
    runs = []
    for _ in range(2):
        move = DiffusiveGibbsMove(alphas=[0.5], step_size=0.1, n_steps=20, random_seed=11)
        thermodynamic_state, sampler_state = make_states(gaussian_system(2))
        move.apply(thermodynamic_state, sampler_state, cache.ContextCache(platform=REFERENCE))
        runs.append(sampler_state.positions.value_in_unit(unit.nanometer))
    np.testing.assert_array_equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="random_seed"):
        DiffusiveGibbsMove(alphas=[0.5], random_seed=-1)


def test_blocked_moves_sharing_a_context_cache_keep_their_own_blocks():
    """openmmtools hands the second move the first move's cached integrator: the masks are
    re-set before every integration, so each move moves only its own particle."""
    context_cache = cache.ContextCache(platform=REFERENCE)
    thermodynamic_state, sampler_state = make_states(gaussian_system(2))
    first = DiffusiveGibbsMove(alphas=[0.5], blocks=[[0]], step_size=0.1, n_steps=20,
                               random_seed=3)
    second = DiffusiveGibbsMove(alphas=[0.5], blocks=[[1]], step_size=0.1, n_steps=20,
                                random_seed=3)
    for move, moving in ((first, 0), (second, 1), (first, 0)):
        before = sampler_state.positions.value_in_unit(unit.nanometer).copy()
        move.apply(thermodynamic_state, sampler_state, context_cache)
        after = sampler_state.positions.value_in_unit(unit.nanometer)
        assert np.all(after[1 - moving] == before[1 - moving])
        assert np.all(after[moving] != before[moving])
    assert len(context_cache) == 1  # the same cached Context served both moves

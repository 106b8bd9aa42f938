"""Parallel tempering: exact exchange rule leaves the cold distribution invariant; MBAR over
all replicas reproduces known averages at the lowest temperature."""
import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_dikl.samplers import ParallelTempering, geometric_temperatures
from openmm_dikl.samplers.tempering import mbar_weights
from openmm_dikl.units import REDUCED_TEMPERATURE, kt_kjmol

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


def test_constraints_are_kept_and_a_barostat_is_refused():
    """Langevin replicas keep constraints (HBonds peptides); a barostat is refused."""
    system = double_well_system()
    system.addParticle(1.0)
    system.addConstraint(0, 1, 0.1)
    start = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    pt = ParallelTempering(system, start, [300, 400], steps_per_swap=20, seed=1)
    for _ in range(5):
        x, _ = pt.step()
    assert np.linalg.norm(x[0] - x[1]) == pytest.approx(0.1, rel=1e-5)
    system.addForce(openmm.MonteCarloBarostat(1.0, 300.0))
    with pytest.raises(ValueError, match="Barostat"):
        ParallelTempering(system, start, [300, 400])


# ---------------------------------------------------------------------- MBAR over all replicas
SPRING = 100.0  # kJ/mol/nm^2: <x^2> = kT / SPRING = 0.01 nm^2 at REDUCED_TEMPERATURE


def harmonic_system(spring=SPRING):
    """One particle (1 Da) in U = spring/2 * |r|^2 (kJ/mol, r in nm)."""
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce(f"0.5*{spring}*(x^2 + y^2 + z^2)")
    force.addParticle(0, [])
    system.addForce(force)
    return system


def weighted_mean_and_se(values, weights):
    """Self-normalised weighted mean of iid samples and its delta-method standard error."""
    mean = np.sum(weights * values)
    return mean, np.sqrt(np.sum(weights ** 2 * (values - mean) ** 2))


def test_mbar_weights_match_pymbar_and_exact_iid_harmonic():
    pymbar = pytest.importorskip("pymbar")
    ladder = geometric_temperatures(REDUCED_TEMPERATURE, 4 * REDUCED_TEMPERATURE, 4)
    kts = np.array([kt_kjmol(t) for t in ladder])
    rng = np.random.default_rng(7)
    n_per_state = 4000
    # exact iid samples: column k from the Boltzmann distribution at ladder[k]
    x = rng.standard_normal((n_per_state, len(ladder), 3)) * np.sqrt(kts / SPRING)[None, :, None]
    energies = 0.5 * SPRING * (x ** 2).sum(-1)  # (n_iterations, n_replicas) kJ/mol
    weights, ess = mbar_weights(energies, ladder, ladder[0])
    n = energies.size
    assert weights.shape == (n,) and np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert n_per_state < ess < n  # pooling beats the lowest replica alone, and ESS <= n
    # identical to pymbar's own weights for a sampled state
    u_kn = energies.reshape(-1)[None, :] / kts[:, None]
    w_pymbar = pymbar.MBAR(u_kn, np.full(len(ladder), n_per_state)).weights()[:, 0]
    np.testing.assert_allclose(weights, w_pymbar, rtol=1e-6, atol=1e-12)
    # weighted <x^2> = kT/K at the lowest temperature and at an unsampled one in between
    x2 = x[..., 0].reshape(-1) ** 2
    for target in (ladder[0], 1.7 * REDUCED_TEMPERATURE * unit.kelvin):
        w, ess_t = mbar_weights(energies, ladder, target)
        mean, se = weighted_mean_and_se(x2, w)
        exact = kt_kjmol(target) / SPRING
        assert se < 0.03 * exact  # the test can see a 10 % error
        assert abs(mean - exact) < 4 * se, (target, mean, exact, se)
        assert 1.0 <= ess_t <= n


def test_mbar_weights_validate_input():
    with pytest.raises(ValueError, match="shape"):
        mbar_weights(np.zeros((10, 3)), [300, 400], 300)
    with pytest.raises(ValueError, match="NaN or inf"):
        mbar_weights(np.array([[0.0, np.inf]]), [300, 400], 300)
    with pytest.raises(ValueError, match="positive"):
        mbar_weights(np.zeros((5, 2)), [300, 400], -1.0)


def test_parallel_tempering_mbar_harmonic_oscillator():
    pytest.importorskip("pymbar")
    ladder = geometric_temperatures(REDUCED_TEMPERATURE, 3 * REDUCED_TEMPERATURE, 4)
    pt = ParallelTempering(harmonic_system(), [[0.1, 0.0, 0.0]] * unit.nanometer, ladder,
                           steps_per_swap=20, timestep=10.0, friction=10.0, seed=5)
    samples = pt.run(4200, record_every=1).discard(200)
    n_iter = 4000
    assert samples.positions.shape == (n_iter, 4, 1, 3)
    assert samples.energies_kjmol.shape == (n_iter, 4)
    np.testing.assert_array_equal(samples.iterations, np.arange(201, 4201))
    assert samples.force_evaluations == 4200 * pt.force_evaluations_per_iteration == 4200 * 80
    # recorded energies belong to the recorded positions
    np.testing.assert_allclose(samples.energies_kjmol,
                               0.5 * SPRING * (samples.positions[:, :, 0] ** 2).sum(-1),
                               rtol=1e-5, atol=1e-8)
    weights, ess = samples.mbar_weights()
    assert 1.0 <= ess <= samples.n_samples and ess > n_iter
    exact = kt_kjmol(ladder[0]) / SPRING
    x2 = samples.flat_positions()[:, 0, 0] ** 2
    # standard error: the larger of the iid (delta-method) value and the spread of blocks
    # of 100 iterations (0.2 ps per iteration; the oscillator decorrelates in ~0.2 ps, so
    # blocks of 20 ps are independent); measured ~1e-4, 1 % of the exact value
    w_blocks = weights.reshape(-1, 100 * 4)
    ratios = (w_blocks * x2.reshape(-1, 100 * 4)).sum(1) / w_blocks.sum(1)
    estimate, se_iid = weighted_mean_and_se(x2, weights)
    se = max(se_iid, ratios.std(ddof=1) / np.sqrt(len(ratios)))
    assert se < 0.03 * exact
    assert abs(estimate - exact) < 4 * se, (estimate, exact, se)
    # the lowest replica alone agrees too, with a larger error bar
    low = samples.positions[:, 0, 0, 0] ** 2
    se_low = low.reshape(-1, 100).mean(1).std(ddof=1) / np.sqrt(n_iter / 100)
    assert abs(low.mean() - exact) < 4 * se_low
    # the step/get_state API keeps working after a recorded run
    assert pt.iteration == 4200 and np.all(pt.acceptance_rates > 0.2)
    state = pt.get_state()
    positions, energies = pt.replica_states()
    np.testing.assert_array_equal(positions, state["positions"])
    assert energies.shape == (4,)
    with pytest.raises(ValueError, match="record_every"):
        pt.run(5, record_every=0)

"""Tests of openmm_dikl.samplers.integrators.DiffusiveGibbsIntegrator (Reference platform, fixed seeds).

Statistical tests compare chain averages with exact values using batch-means standard
errors (50 batches), which account for autocorrelation; tolerances are stated per test.
"""
import io
import json

import numpy as np
import openmm
import pytest
from openmm import app, unit
from openmmtools.integrators import ThermostatedIntegrator
from scipy import integrate

from openmm_dikl import systems
from openmm_dikl.samplers import DiffusiveGibbsIntegrator
from openmm_dikl.systems import shipped_path
from openmm_dikl.units import REDUCED_TEMPERATURE

REFERENCE = openmm.Platform.getPlatformByName("Reference")
N_BATCHES = 50


# ---------------------------------------------------------------------------- helpers
def one_particle_system(expression):
    """A 1-particle System with potential ``expression`` (kJ/mol, x y z in nm)."""
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce(expression)
    force.addParticle(0, [])
    system.addForce(force)
    return system


def sample(system, integrator, start, n_samples, thin, burn_in=200, seed=1, with_noisy=False):
    """Run the chain and return positions (n_samples, n_particles, 3) in nm.

    With ``with_noisy`` also return x~ of the last step (same shape, nm) and that step's
    alpha and sigma (n_samples,) each.
    """
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, REFERENCE)
    context.setPositions(start)
    integrator.step(burn_in)
    integrator.reset_statistics()
    out = np.empty((n_samples, system.getNumParticles(), 3))
    noisy, alpha, sigma = np.empty_like(out), np.empty(n_samples), np.empty(n_samples)
    for i in range(n_samples):
        integrator.step(thin)
        out[i] = context.getState(getPositions=True).getPositions(asNumpy=True)._value
        if with_noisy:
            noisy[i] = integrator.getPerDofVariableByName("x_noisy")
            alpha[i] = integrator.getGlobalVariableByName("alpha")
            sigma[i] = integrator.getGlobalVariableByName("sigma")
    return (out, noisy, alpha, sigma) if with_noisy else out


def batch_mean_and_se(values):
    """Mean over axis 0 and its batch-means standard error."""
    values = np.asarray(values, dtype=np.float64)
    usable = (len(values) // N_BATCHES) * N_BATCHES
    batches = values[:usable].reshape(N_BATCHES, -1, *values.shape[1:]).mean(axis=1)
    return values.mean(axis=0), batches.std(axis=0, ddof=1) / np.sqrt(N_BATCHES)


# ---------------------------------------------------------------------------- invariance
GAUSSIAN_CENTER = np.array([0.3, -0.2, 0.1])
GAUSSIAN_STD = 1.0  # nm; kT = 1 kJ/mol so U = 0.5 |x - c|^2 / std^2


@pytest.mark.parametrize("options", [
    dict(alphas=[0.5], step_size=0.2),
    dict(alphas=[0.3, 0.8], step_size=0.2),  # two levels, cycled
    dict(alphas=[1.0, 0.6], sigmas=[0.4, 0.8] * unit.nanometer, step_size=0.2),  # not VP
    dict(alphas=[0.6], step_size=0.2, denoiser="ghmc"),
    dict(alphas=[0.6], step_size=0.2, denoiser="ghmc", momentum_retention=0.0),
    dict(alphas=[0.7], step_size=0.2, n_denoise_steps=0),  # initialisation only
], ids=["mala", "two-levels", "explicit-sigmas", "ghmc", "ghmc-full-refresh", "init-only"])
def test_gaussian_invariance(options):
    """A 3-D isotropic Gaussian: the chain keeps p(x) and the joint p(x) N(x~ | αx, σ²).

    Mean and variance of x within 4.5 batch-means SE.  The pair (x, x~) left by a step
    must be distributed as p(x) k(x~|x): the residual r = (x~ − αx)/σ has mean 0, unit
    variance and no correlation with x (each within 4.5 SE).  The joint check catches
    errors in the initialisation proposal that the x-marginal alone cannot see.
    """
    system = one_particle_system(
        "0.5*((x-{0})^2 + (y-{1})^2 + (z-{2})^2)/{3}".format(*GAUSSIAN_CENTER, GAUSSIAN_STD ** 2))
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, **options)
    x, noisy, alpha, sigma = sample(system, integrator, [[0.0, 0.0, 0.0]], n_samples=10000,
                                    thin=3, with_noisy=True)
    x, noisy = x[:, 0], noisy[:, 0]
    mean, mean_se = batch_mean_and_se(x)
    var, var_se = batch_mean_and_se((x - GAUSSIAN_CENTER) ** 2)
    # the SEs must be small enough for the test to have power (exact var is 1 nm^2)
    assert np.all(mean_se < 0.06) and np.all(var_se < 0.05)
    assert np.all(np.abs(mean - GAUSSIAN_CENTER) < 4.5 * mean_se), (mean, mean_se)
    assert np.all(np.abs(var - GAUSSIAN_STD ** 2) < 4.5 * var_se), (var, var_se)

    residual = (noisy - alpha[:, None] * x) / sigma[:, None]
    for values, expected in [(residual, 0.0), (residual ** 2, 1.0),
                             (residual * (x - GAUSSIAN_CENTER) / GAUSSIAN_STD, 0.0)]:
        value, se = batch_mean_and_se(values)
        assert np.all(np.abs(value - expected) < 4.5 * se), (value, expected, se)


# ---------------------------------------------------------------------------- double wells
def exact_positive_fraction(u):
    """P(x > 0) for p(x) ∝ exp(-u(x)) by quadrature."""
    total = integrate.quad(lambda x: np.exp(-u(x)), -np.inf, np.inf)[0]
    return integrate.quad(lambda x: np.exp(-u(x)), 0, np.inf)[0] / total


# Tilted quartic: u = A (x^2 - 1)^2 + B x (kT units), exact P(x > 0) = 0.7478.
QUARTIC = (3.0, -0.6)
# Unbalanced Gaussian-mixture double well: weights 0.25 / 0.75 at x = -1.5 / +1.5,
# std 0.5; exact P(x > 0) = 0.7493.  Its curvature is bounded (≤ 1/0.25), so the
# *unadjusted* chain (mh_init=False) stays finite and its bias shows up as a wrong
# mode weight; on the quartic it escapes to |x| → ∞, where MALA rejects everything.
MIXTURE = (0.25, 1.5, 0.25)


def quartic_energy(x):
    a, b = QUARTIC
    return a * (x * x - 1) ** 2 + b * x


def mixture_energy(x):
    w, m, s2 = MIXTURE
    return -np.logaddexp(np.log(w) - (x + m) ** 2 / (2 * s2),
                         np.log(1 - w) - (x - m) ** 2 / (2 * s2))


def quartic_system():
    a, b = QUARTIC
    return one_particle_system(f"{a}*(x^2 - 1)^2 + {b}*x + 0.5*(y^2 + z^2)")


def mixture_system():
    w, m, s2 = MIXTURE
    return one_particle_system(f"-log({w}*exp(-(x + {m})^2/{2 * s2}) "
                               f"+ {1 - w}*exp(-(x - {m})^2/{2 * s2})) + 0.5*(y^2 + z^2)")


@pytest.mark.parametrize("make_system, energy, options", [
    (quartic_system, quartic_energy, dict(alphas=[0.8], step_size=0.01, n_denoise_steps=10)),
    (mixture_system, mixture_energy, dict(alphas=[0.7], step_size=0.1, n_denoise_steps=10)),
], ids=["quartic", "mixture"])
def test_unbalanced_double_well_weight(make_system, energy, options):
    """Fraction of samples with x > 0 matches quadrature within 4 batch-means SE (≈ 0.04)."""
    exact = exact_positive_fraction(energy)
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, **options)
    x = sample(make_system(), integrator, [[-1.0, 0.0, 0.0]], n_samples=15000, thin=3)[:, 0]
    fraction, se = batch_mean_and_se(x[:, 0] > 0)
    assert se < 0.015
    assert abs(fraction - exact) < 4 * se, (fraction, exact, se)
    # the harmonic y, z directions stay exact too
    var_yz, var_se = batch_mean_and_se(x[:, 1:] ** 2)
    assert np.all(np.abs(var_yz - 1.0) < 4.5 * var_se)
    assert integrator.acceptance_rates["initialisation"][0] > 0.1  # it does jump


def test_without_mh_initialisation_is_biased():
    """mh_init=False (always accept the initialisation) gets the mode weight wrong.

    Same problem and settings as the exact mixture test: the unadjusted chain gives
    P(x > 0) ≈ 0.55 instead of 0.749; we require a deviation > 0.1 and > 8 SE.
    """
    exact = exact_positive_fraction(mixture_energy)
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.7], step_size=0.1,
                                          n_denoise_steps=10, mh_init=False)
    x = sample(mixture_system(), integrator, [[-1.0, 0.0, 0.0]], n_samples=10000, thin=3)[:, 0]
    fraction, se = batch_mean_and_se(x[:, 0] > 0)
    assert integrator.acceptance_rates["initialisation"][0] == 1.0
    assert exact - fraction > 0.1 and exact - fraction > 8 * se, (fraction, exact, se)


# ---------------------------------------------------------------------------- MoG-40
def mog40_means():
    with open(shipped_path("mog40.json")) as handle:
        spec = json.load(handle)
    return np.asarray(spec["means"]), float(spec["std"])


def nearest_mode(xy, means):
    return np.argmin(((xy[:, None, :] - means[None]) ** 2).sum(-1), axis=1)


def test_mog40_digs_visits_all_modes_langevin_does_not():
    """DiGS (α = 0.1, 5 MALA steps of ε = 0.1 nm²) mixes over all 40 modes from mode 0.

    Mode weights (samples assigned to the nearest mean) are compared with the weights
    of 200k exact samples assigned the same way (≈ 1/40, not exactly: some modes
    overlap).  With z_k = (weight error)/(batch-means SE) (relative SE ≈ 14 % per mode
    here) we require max |z_k| < 5, Σ z_k² < 80 (≈ chi-square with 40 dof) and every
    weight within 60 % of the exact one; the within-mode mean squared distance to the
    assigned mean must match the exact samples' to 5 % (measured: < 1 %).
    LangevinMiddleIntegrator with the same number of force evaluations stays in mode 0
    (the nearest other mode is 10.3 nm away).
    """
    target = systems.get("mog40")
    means, std = mog40_means()
    integrator = DiffusiveGibbsIntegrator(target.temperature, alphas=[0.1], step_size=0.1,
                                          n_denoise_steps=5, planar=True)
    n_samples, thin = 12000, 5
    x = sample(target.system, integrator, target.positions, n_samples, thin, burn_in=0)[:, 0]
    assert np.all(x[:, 2] == 0.0)  # planar: z is never moved
    labels = nearest_mode(x[:, :2], means)

    reference = target.reference_samples(n=200000, seed=0).numpy()[:, 0]
    ref_labels = nearest_mode(reference, means)
    ref_weights = np.bincount(ref_labels, minlength=40) / len(ref_labels)

    one_hot = labels[:, None] == np.arange(40)[None]
    weights, se = batch_mean_and_se(one_hot)
    assert np.all(weights > 0), "some modes were never visited"
    z = (weights - ref_weights) / se
    assert np.max(np.abs(z)) < 5.0, z
    assert np.sum(z ** 2) < 80.0, z  # chi-square(40) 99.9 % quantile is 73
    assert np.max(np.abs(weights / ref_weights - 1)) < 0.6
    spread = np.mean(((x[:, :2] - means[labels]) ** 2).sum(-1))
    ref_spread = np.mean(((reference - means[ref_labels]) ** 2).sum(-1))
    assert abs(spread / ref_spread - 1) < 0.05, (spread, ref_spread, 2 * std ** 2)

    # Langevin dynamics with as many force evaluations stays in the starting mode.
    n_evaluations = n_samples * thin * integrator.force_evaluations_per_step
    langevin = openmm.LangevinMiddleIntegrator(target.temperature, 1.0 / unit.picosecond,
                                               0.01 * unit.picosecond)
    langevin.setRandomNumberSeed(1)
    context = openmm.Context(target.system, langevin, REFERENCE)
    context.setPositions(target.positions)
    visited = set()
    for _ in range(200):
        langevin.step(n_evaluations // 200)
        xy = context.getState(getPositions=True).getPositions(asNumpy=True)._value[:, :2]
        visited.update(nearest_mode(xy, means).tolist())
    assert visited == {0}


# ---------------------------------------------------------------------------- API
def gaussian_system():
    return one_particle_system("0.5*(x^2 + y^2 + z^2)")


def test_reproducible_with_seed():
    positions = []
    for seed in (7, 7, 8):
        integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.4, 0.9], step_size=0.1)
        integrator.setRandomNumberSeed(seed)
        context = openmm.Context(gaussian_system(), integrator, REFERENCE)
        context.setPositions([[0.1, 0.2, 0.3]])
        integrator.step(50)
        positions.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(positions[0], positions[1])
    assert not np.allclose(positions[0], positions[2])


def test_acceptance_rates_levels_and_reset():
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.2, 0.5, 0.9],
                                          step_size=0.1, n_denoise_steps=4)
    context = openmm.Context(gaussian_system(), integrator, REFERENCE)
    context.setPositions([[0.0, 0.0, 0.0]])
    assert integrator.level == 0
    integrator.step(7)
    assert integrator.level == 1  # 7 steps: levels 0,1,2,0,1,2,0 -> next is 1
    counts = integrator.acceptance_counts
    np.testing.assert_array_equal(counts["init_proposed"], [3, 2, 2])
    np.testing.assert_array_equal(counts["denoise_proposed"], [12, 8, 8])
    integrator.step(200)
    rates = integrator.acceptance_rates
    for key in ("initialisation", "denoising"):
        assert rates[key].shape == (3,)
        assert np.all((rates[key] >= 0) & (rates[key] <= 1))
    # more noise (smaller alpha) -> fewer accepted initialisations on a Gaussian
    assert rates["initialisation"][0] < rates["initialisation"][2]
    integrator.reset_statistics()
    assert np.all(np.isnan(integrator.acceptance_rates["initialisation"]))
    assert integrator.force_evaluations_per_step == 6


def test_force_evaluations_per_step_is_exact():
    """Count energy/force calls with a PythonForce: exactly n_denoise_steps + 2 per step."""
    calls = [0]

    def harmonic(state):
        calls[0] += 1
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return 0.5 * float((x ** 2).sum()), -x

    system = openmm.System()
    system.addParticle(1.0)
    system.addForce(openmm.PythonForce(harmonic))
    for n_denoise, denoiser in [(0, "mala"), (3, "mala"), (2, "ghmc")]:
        integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.5], step_size=0.1,
                                              n_denoise_steps=n_denoise, denoiser=denoiser)
        context = openmm.Context(system, integrator, REFERENCE)
        context.setPositions([[0.1, 0.0, 0.0]])
        integrator.step(1)
        calls[0] = 0
        integrator.step(100)
        assert calls[0] == 100 * integrator.force_evaluations_per_step == 100 * (n_denoise + 2)
        del context


@pytest.mark.parametrize("kwargs, match", [
    (dict(alphas=[0.0]), "alphas"),
    (dict(alphas=[1.2]), "alphas"),
    (dict(alphas=[-0.5]), "alphas"),
    (dict(alphas=[np.nan]), "alphas"),
    (dict(alphas=[]), "alphas"),
    (dict(alphas=[[0.5, 0.6]]), "alphas"),
    (dict(alphas=[1.0]), "sigma"),
    (dict(alphas=[0.5], sigmas=[-0.1]), "sigmas"),
    (dict(alphas=[0.5], sigmas=[0.0]), "sigmas"),
    (dict(alphas=[0.5], sigmas=[np.inf]), "sigmas"),
    (dict(alphas=[0.5, 0.6], sigmas=[0.1]), "sigmas"),
    (dict(alphas=[0.5], step_size=0.0), "step_size"),
    (dict(alphas=[0.5], step_size=-1e-3), "step_size"),
    (dict(alphas=[0.5], step_size=np.inf), "step_size"),
    (dict(alphas=[0.5], step_size="big"), "step_size"),
    (dict(alphas=[0.5], step_size=0.1 * unit.nanometer), "length"),
    (dict(alphas=[0.5], denoiser="hmc"), "denoiser"),
    (dict(alphas=[0.5], n_denoise_steps=-1), "n_denoise_steps"),
    (dict(alphas=[0.5], n_denoise_steps=2.5), "n_denoise_steps"),
    (dict(alphas=[0.5], momentum_retention=1.0), "momentum_retention"),
    (dict(alphas=[0.5], temperature=-300.0), "temperature"),
    (dict(alphas=[0.5] * unit.nanometer), "dimensionless"),
    (dict(alphas=[0.5], sigmas=[0.5] * unit.picosecond), "length"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {"temperature": 300.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        DiffusiveGibbsIntegrator(**kwargs)


def test_quantity_arguments_are_converted():
    integrator = DiffusiveGibbsIntegrator(300.0 * unit.kelvin, alphas=[0.5, 0.8],
                                          sigmas=[1.0, 2.0] * unit.angstrom,
                                          step_size=4.0 * unit.angstrom ** 2)
    np.testing.assert_allclose(integrator.sigmas.value_in_unit(unit.nanometer), [0.1, 0.2])
    assert integrator.step_size.value_in_unit(unit.nanometer ** 2) == pytest.approx(0.04)
    assert integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(300.0)
    default = DiffusiveGibbsIntegrator(300.0, alphas=[0.6])
    np.testing.assert_allclose(default.sigmas.value_in_unit(unit.nanometer), [0.8])
    assert default.denoiser == "mala" and default.n_denoise_steps == 5


@pytest.mark.parametrize("denoiser", ["mala", "ghmc"])
def test_planar_never_moves_z(denoiser):
    """planar=True: z keeps its start value (here 0.3 nm, off the minimum); x, y move."""
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.5], step_size=0.1,
                                          denoiser=denoiser, planar=True)
    x = sample(gaussian_system(), integrator, [[0.0, 0.0, 0.3]], n_samples=200, thin=2)[:, 0]
    assert np.all(x[:, 2] == 0.3)
    assert np.std(x[:, 0]) > 0.5 and np.std(x[:, 1]) > 0.5


def test_xml_round_trip_restores_interface_and_dynamics():
    """A deserialized integrator regains its class and reproduces the original chain."""
    original = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.3, 0.9], step_size=0.05,
                                        denoiser="ghmc", n_denoise_steps=3)
    original.setRandomNumberSeed(3)
    xml = openmm.XmlSerializer.serialize(original)
    copy = openmm.XmlSerializer.deserialize(xml)
    assert not isinstance(copy, DiffusiveGibbsIntegrator)
    assert ThermostatedIntegrator.restore_interface(copy)
    assert isinstance(copy, DiffusiveGibbsIntegrator)
    np.testing.assert_array_equal(copy.alphas, [0.3, 0.9])
    assert copy.denoiser == "ghmc" and copy.n_denoise_steps == 3
    assert copy.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(REDUCED_TEMPERATURE)

    final = []
    for integrator in (original, copy):
        context = openmm.Context(gaussian_system(), integrator, REFERENCE)
        context.setPositions([[0.1, 0.2, 0.3]])
        integrator.step(30)
        final.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        # the Context's own copy restores too and exposes the counters
        bound = context.getIntegrator()
        assert DiffusiveGibbsIntegrator.restore_interface(bound)
        assert bound.acceptance_counts["init_proposed"].sum() == 30
        del context
    np.testing.assert_array_equal(final[0], final[1])


def test_temperature_setter_changes_the_target():
    """setTemperature (ThermostatedIntegrator API) changes kT: <x^2> = kT/k."""
    system = gaussian_system()  # k = 1 kJ/mol/nm^2
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.6], step_size=0.2)
    integrator.setTemperature(4 * REDUCED_TEMPERATURE * unit.kelvin)  # kT = 4 kJ/mol
    x = sample(system, integrator, [[0.0, 0.0, 0.0]], n_samples=6000, thin=3)[:, 0]
    var, se = batch_mean_and_se(x ** 2)
    assert np.all(np.abs(var - 4.0) < 4.5 * se) and np.all(se < 0.3)


def test_runs_in_simulation_with_reporter():
    target = systems.get("alanine_dipeptide_vacuum")
    integrator = DiffusiveGibbsIntegrator(target.temperature, alphas=[0.999], step_size=1e-6)
    integrator.setRandomNumberSeed(2)
    simulation = app.Simulation(target.topology, target.system, integrator, REFERENCE)
    simulation.context.setPositions(target.positions)
    simulation.minimizeEnergy(maxIterations=100)
    report = io.StringIO()
    simulation.reporters.append(app.StateDataReporter(report, 10, step=True, potentialEnergy=True))
    start = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    simulation.step(50)
    lines = report.getvalue().strip().splitlines()
    assert len(lines) == 6 and "Potential Energy" in lines[0]
    energies = [float(line.split(",")[1]) for line in lines[1:]]
    assert np.all(np.isfinite(energies))
    end = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    assert np.abs(end - start).max() > 1e-4  # it moved
    assert 0.2 < integrator.acceptance_rates["denoising"][0] <= 1.0


def test_constraints_are_refused():
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    system.addConstraint(0, 1, 0.1)
    force = openmm.CustomExternalForce("0.5*(x^2 + y^2 + z^2)")
    for i in range(2):
        force.addParticle(i, [])
    system.addForce(force)
    with pytest.raises(ValueError, match="constraints"):
        DiffusiveGibbsIntegrator.check_system(system)
    # the integrator itself finds the constraint on its first step and does not move
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.5], step_size=0.01)
    context = openmm.Context(system, integrator, REFERENCE)
    start = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    context.setPositions(start)
    with pytest.raises(ValueError, match="constraints"):
        integrator.step(5)
    np.testing.assert_array_equal(
        context.getState(getPositions=True).getPositions(asNumpy=True)._value, start)
    # an unconstrained system passes the same checks
    DiffusiveGibbsIntegrator.check_system(gaussian_system())


def test_virtual_sites_are_refused():
    system = openmm.System()
    for mass in (1.0, 1.0, 0.0):
        system.addParticle(mass)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    with pytest.raises(ValueError, match="virtual sites"):
        DiffusiveGibbsIntegrator.check_system(system)


def test_blocked_integrator_mixes_mw32_wells():
    """MW-32 in OpenMM: the full 32-D initialisation is never accepted, one particle per
    level (``blocks``) is — every coordinate leaves the light well and the pooled x > 0
    weight matches the exact one."""
    import numpy as np
    from openmm_dikl import systems
    mw = systems.get("mw32")
    exact = systems.many_well_positive_weight()
    start = np.array(mw.positions.value_in_unit(unit.nanometer))
    start[:, 0] = -1.7  # every coordinate in the light (x < 0) well

    def run(blocks, seed, reports=1500):
        integrator = DiffusiveGibbsIntegrator(mw.temperature, alphas=[0.5], n_denoise_steps=1,
                                              step_size=0.05, planar=True, blocks=blocks)
        integrator.setRandomNumberSeed(seed)
        context = openmm.Context(mw.system, integrator,
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(start)
        integrator.step(16 * 100)  # burn-in
        x = []
        for _ in range(reports):
            integrator.step(16)
            x.append(context.getState(getPositions=True).getPositions(asNumpy=True)
                     .value_in_unit(unit.nanometer)[:, 0])
        return np.array(x), integrator.acceptance_rates["initialisation"]

    weights, acceptance = [], []
    for seed in range(6):
        x, acc = run([[k] for k in range(16)], seed + 1)
        weights.append((x > 0).mean(0))
        acceptance.append(acc)
    weights = np.array(weights)  # (chains, 16)
    assert np.min(acceptance) > 0.02
    # measured: pooled 0.8449 vs exact 0.8443, worst coordinate off by 0.036 (6 chains)
    assert abs(weights.mean() - exact) < 0.02
    assert np.abs(weights.mean(0) - exact).max() < 0.08
    stuck, acc = run(None, 7, reports=200)
    assert acc[0] < 1e-3 and (stuck > 0).mean() < 0.05


def test_blocks_validation():
    with pytest.raises(ValueError, match="blocks gives 2 levels"):
        DiffusiveGibbsIntegrator(300.0, alphas=[0.5, 0.6, 0.7], blocks=[[0], [1]])
    with pytest.raises(ValueError, match="non-empty"):
        DiffusiveGibbsIntegrator(300.0, alphas=[0.5], blocks=[[0], []])
    with pytest.raises(ValueError, match="distinct"):
        DiffusiveGibbsIntegrator(300.0, alphas=[0.5], blocks=[[0, 0]])


def test_blocks_are_fitted_to_the_system():
    from openmm_dikl import systems
    mw = systems.get("mw32")
    integrator = DiffusiveGibbsIntegrator(mw.temperature, alphas=[0.5], planar=True,
                                          blocks=[[0], [1]], step_size=0.05)
    context = openmm.Context(mw.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(mw.positions)
    before = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    integrator.step(50)
    after = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    assert len(integrator.getPerDofVariableByName("block_1")) == 16
    assert np.all(after[2:] == before[2:]) and np.any(after[:2] != before[:2])
    too_far = DiffusiveGibbsIntegrator(mw.temperature, alphas=[0.5], planar=True,
                                       blocks=[[0], [20]])
    context = openmm.Context(mw.system, too_far, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(mw.positions)
    with pytest.raises(ValueError, match="names particle 20 but the System has 16"):
        too_far.step(1)


def test_state_data_reporter_shows_sweeps_temperature_and_energy(tmp_path):
    """With DiGS in an app.Simulation, StateDataReporter's Time counts sweeps (nominal 1 fs
    each) and its Temperature is that of the Maxwell-Boltzmann velocities drawn at kT."""
    import io

    from openmm import app
    target = systems.get("alanine_dipeptide_implicit")
    integrator = DiffusiveGibbsIntegrator(target.temperature, alphas=[0.999], n_denoise_steps=2,
                                          step_size=1e-6)
    integrator.setRandomNumberSeed(4)
    simulation = app.Simulation(target.topology, target.system, integrator,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(target.positions)
    report = io.StringIO()
    simulation.reporters.append(app.StateDataReporter(
        report, 10, step=True, time=True, potentialEnergy=True, temperature=True, speed=True))
    simulation.step(400)
    rows = np.array([[float(v) for v in line.split(",")] for line in
                     report.getvalue().splitlines()[1:]])
    steps, time_ps, energy, temperature, speed = rows.T
    np.testing.assert_array_equal(steps, np.arange(10, 401, 10))
    np.testing.assert_allclose(time_ps, steps * 1e-3)  # one nominal femtosecond per sweep
    state = simulation.context.getState(getEnergy=True)
    assert energy[-1] == pytest.approx(
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), rel=1e-6)
    # 40 reports of the kinetic temperature of 22 atoms (sd ≈ 53 K each, ≈ 8 K for the mean)
    assert abs(temperature.mean() - 300.0) < 30.0, temperature.mean()
    assert np.all(speed[1:] > 0)


def test_a_single_block_moves_only_its_particle():
    """blocks=[[0]]: a one-entry per-DOF mask would be broadcast by OpenMM to every particle."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*(x^2 + y^2 + z^2)")
    for i in range(3):
        system.addParticle(1.0)
        force.addParticle(i, [])
    system.addForce(force)
    integrator = DiffusiveGibbsIntegrator(REDUCED_TEMPERATURE, alphas=[0.5], blocks=[[0]],
                                          step_size=0.1)
    integrator.setRandomNumberSeed(5)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    start = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    context.setPositions(start)
    integrator.step(50)
    x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_array_equal(x[1:], start[1:])
    assert np.all(x[0] != start[0])

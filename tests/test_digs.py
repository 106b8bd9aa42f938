"""Batched torch DiGS: invariance (Gaussian, double well, MoG-40, torsional toy, polar
transform), bias without the MH initialisation, basin jumps on alanine dipeptide."""
import json
import math

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from openmm_dikl import systems
from openmm_dikl.samplers import DiGSSampler, GaussianKernel, TorsionalKernel
from openmm_dikl.geometry import angle, dihedral
from openmm_dikl.internal import InternalCoordinates

COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)
MEAN = torch.tensor([2.0, -1.0], dtype=torch.float64)


def gaussian(x):
    d = x - MEAN
    return 0.5 * ((d @ PRECISION) * d).sum(-1), -(d @ PRECISION)


def _assert_gaussian(x, mean, cov, n_sigma=4.5):
    n = x.shape[0]
    assert torch.all(torch.abs(x.mean(0) - mean) < n_sigma * torch.sqrt(torch.diag(cov) / n))
    cov_se = torch.sqrt((cov ** 2 + torch.outer(torch.diag(cov), torch.diag(cov))) / n)
    assert torch.all(torch.abs(torch.cov(x.T) - cov) < n_sigma * cov_se)


@pytest.mark.parametrize("denoiser", ["mala", "hmc"])
def test_gaussian_invariance(denoiser):
    sampler = DiGSSampler(gaussian, alphas=[0.3, 0.9], step_size=0.1, denoiser=denoiser,
                          n_leapfrog=3, generator=torch.Generator().manual_seed(1))
    x0 = torch.full((3000, 2), -3.0, dtype=torch.float64)
    result = sampler.run(x0, n_steps=120, burn_in=60, thin=30, progress=False)
    _assert_gaussian(result.samples[:, -1], MEAN, COV)  # independent chains
    rates = result.acceptance
    assert rates["init_acceptance"].shape == (2,) and np.all(rates["init_acceptance"] > 0.01)
    per_sweep = 1 + 5 * (3 if denoiser == "hmc" else 1)
    assert sampler.force_evaluations_per_step == per_sweep
    assert result.force_evaluations == 3000 * (1 + 120 * per_sweep)


def _double_well(x):
    """u = 5 (x² − 1)² − x: two wells, the right one ≈ 6.7 times heavier."""
    u = 5 * (x[:, 0] ** 2 - 1) ** 2 - x[:, 0]
    return u, (-(20 * x[:, 0] * (x[:, 0] ** 2 - 1) - 1))[:, None]


def _double_well_exact():
    grid = np.linspace(-4, 4, 400001)
    w = np.exp(-(5 * (grid ** 2 - 1) ** 2 - grid))
    return w[grid > 0].sum() / w.sum()


def test_double_well_weight_exact_with_mh_and_biased_without():
    exact = _double_well_exact()
    weights = {}
    for mh_init in (True, False):
        sampler = DiGSSampler(_double_well, alphas=[0.3, 0.8], step_size=0.01, mh_init=mh_init,
                              generator=torch.Generator().manual_seed(2))
        result = sampler.run(-torch.ones(1000, 1, dtype=torch.float64), n_steps=300,
                             burn_in=100, progress=False)
        per_chain = (result.samples[..., 0] > 0).double().mean(1)
        weights[mh_init] = (float(per_chain.mean()), float(per_chain.std() / math.sqrt(1000)))
    weight, se = weights[True]
    assert abs(weight - exact) < 4 * se + 0.005, (weight, se, exact)
    biased, se_biased = weights[False]
    assert abs(biased - exact) > 0.1 and abs(biased - exact) > 10 * se_biased, (biased, exact)


def test_mog40_modes_from_one_mode():
    target = systems.get("mog40")
    sampler = DiGSSampler(target, alphas=[0.1], step_size=0.1, n_denoise_steps=5,
                          generator=torch.Generator().manual_seed(0))
    with open(systems.shipped_path("mog40.json")) as handle:
        means = torch.tensor(json.load(handle)["means"], dtype=torch.float64)
    x0 = means[0].reshape(1, 1, 2).repeat(300, 1, 1)
    result = sampler.run(x0, n_steps=500, burn_in=250, thin=5, progress=False)
    x = result.samples.reshape(-1, 2)
    weights = torch.bincount(torch.cdist(x, means).argmin(1), minlength=40).double() / len(x)
    assert int((weights > 0).sum()) == 40
    assert float(weights.min()) > 0.4 / 40 and float(weights.max()) < 1.6 / 40, weights * 40
    exact_logp = float(-target.reduced_energy(target.reference_samples(20000, seed=3)).mean())
    sampled_logp = float(-target.reduced_energy(x[:, None, :]).mean())
    assert abs(sampled_logp - exact_logp) < 0.15, (sampled_logp, exact_logp)
    assert 0.05 < result.acceptance["init_acceptance"][0] < 0.2


# ---------------------------------------------------------------------- torsional toy
def _torsion_potential(phi):
    return 4 * torch.cos(2 * phi) - 1.5 * torch.sin(phi)


def _toy_molecule(x):
    """4 atoms: harmonic bonds / angles and a double-well torsion V(φ)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        r = torch.linalg.norm(x[:, 1:] - x[:, :-1], dim=-1)
        a = torch.stack([angle(x[:, 0], x[:, 1], x[:, 2]), angle(x[:, 1], x[:, 2], x[:, 3])], -1)
        phi = dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3])
        u = 200 * ((r - 1) ** 2).sum(-1) + 20 * ((a - 1.9) ** 2).sum(-1) + _torsion_potential(phi)
        (grad,) = torch.autograd.grad(u.sum(), x)
    return u.detach(), -grad


def test_torsional_kernel_exact_on_toy_torsion():
    """The φ marginal is ∝ exp(−V(φ)) exactly (the Z-matrix Jacobian has no φ)."""
    grid = torch.linspace(-math.pi, math.pi, 200001, dtype=torch.float64)
    density = torch.exp(-_torsion_potential(grid))
    edges = torch.linspace(-math.pi, math.pi, 13, dtype=torch.float64)
    exact = torch.stack([density[(grid >= edges[i]) & (grid < edges[i + 1])].sum()
                         for i in range(12)])
    exact = exact / exact.sum()
    ic = InternalCoordinates((0, 1, 2), [(3, 2, 1, 0)])
    q = torch.tensor([[1.0, 1.0, 1.9, 1.0, 1.9, -math.pi / 2]], dtype=torch.float64)
    x0 = ic.to_cartesian(q).repeat(400, 1, 1)  # all chains in the light well
    kernel = TorsionalKernel([[0, 1, 2, 3]], [[3]], [math.pi, 0.5])
    sampler = DiGSSampler(_toy_molecule, kernel=kernel, n_denoise_steps=3, step_size=1e-3,
                          generator=torch.Generator().manual_seed(0))
    result = sampler.run(x0, n_steps=260, burn_in=100, progress=False)
    phi = dihedral(*(result.samples[..., i, :] for i in range(4)))
    hist = torch.histc(phi.reshape(-1), 12, -math.pi, math.pi)
    hist = hist / hist.sum()
    per_chain = (phi > 0).double().mean(1)
    weight, se = float(per_chain.mean()), float(per_chain.std() / math.sqrt(400))
    exact_weight = float(exact[6:].sum())
    assert abs(weight - exact_weight) < 4 * se + 0.003, (weight, se, exact_weight)
    big = exact > 0.01  # the well-populated bins: within 15 % relative
    assert torch.all(torch.abs(hist[big] / exact[big] - 1) < 0.15), (hist, exact)
    assert 0.05 < result.acceptance["init_acceptance"][0] < 0.5


def test_torsional_proposal_sets_dihedrals_exactly():
    target = systems.get("alanine_dipeptide_vacuum")
    kernel = TorsionalKernel.from_topology(
        target.topology, [target.torsions['phi'][0], target.torsions['psi'][0]], [2.0])
    assert [sorted(m.tolist()) for m in kernel.moving_atoms] == [[0, 1, 2, 3, 4, 5, 7],
                                                                  [15, 16, 17, 18, 19, 20, 21]]
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(np.asarray(target.positions._value))[None].repeat(6, 1, 1)
    x = x + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    theta_tilde = kernel.noise(x, 0, g)
    state = g.get_state()
    x_new = kernel.propose(x, theta_tilde, 0, g)
    g.set_state(state)
    wanted = theta_tilde + 2.0 * torch.randn(theta_tilde.shape, generator=g, dtype=torch.float64)
    err = torch.remainder(kernel.angles(x_new) - wanted + math.pi, 2 * math.pi) - math.pi
    assert float(err.abs().max()) < 1e-10
    ic = InternalCoordinates.from_target(target)
    dq = ic.to_internal(x_new)[0] - ic.to_internal(x)[0]
    dq[:, ic.dihedral_index] = torch.remainder(dq[:, ic.dihedral_index] + math.pi, 2 * math.pi) - math.pi
    changed = set(torch.nonzero(dq.abs().amax(0) > 1e-9).ravel().tolist())
    assert changed == {ic.coordinate_index((4, 6, 8, 14)), ic.coordinate_index((6, 8, 14, 16))}


# ---------------------------------------------------------------------- transform path
class _Polar:
    """y = (r, t) with x = r (cos t, sin t); log|det ∂x/∂y| = log r (t unwrapped)."""

    def forward(self, x):
        r = torch.linalg.norm(x, dim=-1)
        return torch.stack([r, torch.atan2(x[:, 1], x[:, 0])], -1), torch.log(r)

    def inverse(self, y):
        x = y[:, :1] * torch.stack([torch.cos(y[:, 1]), torch.sin(y[:, 1])], -1)
        return x, torch.log(torch.abs(y[:, 0]))


def test_transform_path_polar_gaussian():
    mean = torch.tensor([1.5, 0.0], dtype=torch.float64)

    def shifted(x):
        return 0.5 * ((x - mean) ** 2).sum(-1), -(x - mean)

    sampler = DiGSSampler(shifted, alphas=[0.5, 0.9], step_size=0.05, transform=_Polar(),
                          generator=torch.Generator().manual_seed(4))
    x0 = torch.tensor([[0.0, 1.0]], dtype=torch.float64).repeat(3000, 1)
    result = sampler.run(x0, n_steps=100, burn_in=60, thin=40, progress=False)
    _assert_gaussian(result.samples[:, -1], mean, torch.eye(2, dtype=torch.float64))


# ---------------------------------------------------------------------- alanine dipeptide
def _langevin_start(target, n_steps=5000, seed=3):
    integrator = openmm.LangevinMiddleIntegrator(target.temperature, 1 / unit.picosecond,
                                                 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(target.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(target.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(target.temperature, seed)
    integrator.step(n_steps)
    x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return torch.tensor(np.asarray(x))


def test_torsional_digs_jumps_phi_basins_on_ala2_vacuum():
    target = systems.get("alanine_dipeptide_vacuum")
    start = _langevin_start(target)
    kernel = TorsionalKernel.from_topology(
        target.topology, [target.torsions['phi'][0], target.torsions['psi'][0]], [math.pi])
    phi_start = float(kernel.angles(start[None])[0, 0])
    assert phi_start < 0  # Langevin from the PDB stays in the φ < 0 basin
    last = torch.full((64,), -1)
    transitions = torch.zeros(64, dtype=torch.long)

    def count(sweep, x, u, stats):
        phi = torch.rad2deg(kernel.angles(x)[:, 0])
        core = torch.where((phi > -170) & (phi < -30), -1, torch.where((phi > 30) & (phi < 130), 1, 0))
        transitions.add_(((core != 0) & (core != last)).long())
        last.copy_(torch.where(core != 0, core, last))

    with DiGSSampler(target, kernel=kernel, n_denoise_steps=1, step_size=2e-6,
                     generator=torch.Generator().manual_seed(5)) as sampler:
        result = sampler.run(start[None].repeat(64, 1, 1), n_steps=300, progress=False,
                             callback=count)
    assert result.force_evaluations == 64 * (1 + 300 * 2) == sampler.force_evaluations
    assert int(transitions.sum()) >= 2, int(transitions.sum())  # 4-16 over seeds
    assert 0.005 < result.acceptance["init_acceptance"][0] < 0.2
    energy = target.reduced_energy(result.final_positions)
    assert torch.isfinite(energy).all() and float(energy.max()) < 50  # no blown-up chains


# ---------------------------------------------------------------------- validation
def test_per_level_denoise_steps_and_counts():
    sampler = DiGSSampler(gaussian, alphas=[0.5, 0.9], n_denoise_steps=[0, 2], step_size=0.1,
                          generator=torch.Generator().manual_seed(0))
    result = sampler.run(torch.zeros(10, 2, dtype=torch.float64), n_steps=6, progress=False)
    stats = result.statistics
    assert result.force_evaluations == 10 * (1 + 3 * 1 + 3 * 3)
    assert sampler.force_evaluations_per_step == (1 + 3) / 2
    assert list(stats["force_evaluations_per_level"]) == [30, 90]
    rates = result.acceptance
    assert np.isnan(rates["denoise_acceptance"][0]) and 0 < rates["denoise_acceptance"][1] <= 1
    assert result.samples.shape == (10, 6, 2) and list(stats["sweeps"]) == [3, 3]


def test_validation():
    with pytest.raises(ValueError, match="alphas"):
        DiGSSampler(gaussian, alphas=[0.0], step_size=0.1)
    with pytest.raises(ValueError, match="alphas"):
        DiGSSampler(gaussian, alphas=[1.2], step_size=0.1)
    with pytest.raises(ValueError, match="sigma"):
        DiGSSampler(gaussian, alphas=[1.0], step_size=0.1)
    with pytest.raises(ValueError, match="sigmas"):
        GaussianKernel([0.5], [-1.0])
    with pytest.raises(ValueError, match="step_size"):
        DiGSSampler(gaussian, alphas=[0.5], step_size=0.0)
    with pytest.raises(ValueError, match="step_size"):
        DiGSSampler(gaussian, alphas=[0.5])
    with pytest.raises(ValueError, match="n_denoise_steps"):
        DiGSSampler(gaussian, alphas=[0.5, 0.9], n_denoise_steps=[1, 2, 3], step_size=0.1)
    with pytest.raises(ValueError, match="n_denoise_steps"):
        DiGSSampler(gaussian, alphas=[0.5], n_denoise_steps=-1, step_size=0.1)
    with pytest.raises(ValueError, match="denoiser"):
        DiGSSampler(gaussian, alphas=[0.5], step_size=0.1, denoiser="langevin")
    with pytest.raises(ValueError, match="alphas"):
        DiGSSampler(gaussian, step_size=0.1)
    sampler = DiGSSampler(gaussian, alphas=[0.5], step_size=0.1)
    with pytest.raises(ValueError, match="NaN"):
        sampler.run(torch.tensor([[0.0, float("inf")]]), 3)
    with pytest.raises(ValueError, match="n_steps"):
        sampler.run(torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="shape"):
        DiGSSampler(systems.get("mog40"), alphas=[0.5], step_size=0.1).run(torch.zeros(2, 2), 3)
    with pytest.raises(ValueError, match="end atom"):
        TorsionalKernel([[0, 1, 2, 3]], [[1, 3]], [1.0])
    with pytest.raises(ValueError, match="commute"):
        TorsionalKernel([[0, 1, 2, 3], [1, 2, 3, 4]], [[3], [4]], [1.0])
    with pytest.raises(ValueError, match="radians"):
        TorsionalKernel([[0, 1, 2, 3]], [[3]], [0.0])
    with pytest.raises(ValueError, match="torsional kernel"):
        DiGSSampler(gaussian, kernel=TorsionalKernel([[0, 1, 2, 3]], [[3]], [1.0]),
                    step_size=0.1).run(torch.zeros(2, 2), 3)


def test_torsional_kernel_from_topology_refuses_rings():
    from openmm import app
    topology = app.Topology()
    residue = topology.addResidue("RNG", topology.addChain())
    atoms = [topology.addAtom(f"C{i}", app.element.carbon, residue) for i in range(5)]
    for i in range(5):
        topology.addBond(atoms[i], atoms[(i + 1) % 5])
    with pytest.raises(ValueError, match="ring"):
        TorsionalKernel.from_topology(topology, [[0, 1, 2, 3]], [1.0])


def test_blocked_kernel_mw32_basin_weights():
    """MW-32: a full 32-D Gaussian initialisation is never accepted; noising one particle
    per level (a blocked kernel, still exact) recovers every coordinate's basin weight."""
    from openmm_dikl.samplers import BlockGaussianKernel
    mw = systems.get("mw32")
    exact = systems.many_well_positive_weight()
    x0 = torch.as_tensor(mw.positions._value[:, :2])[None].repeat(128, 1, 1)
    x0[:, :, 0] = -1.7  # every coordinate starts in the light (x < 0) well
    kernel = BlockGaussianKernel(0.5, [[k] for k in range(16)])
    sampler = DiGSSampler(mw, kernel=kernel, n_denoise_steps=1, step_size=0.05, seed=0)
    result = sampler.run(x0, 16 * 400, burn_in=16 * 50, progress=False)
    weights = (result.samples[..., 0] > 0).double().mean((0, 1))
    assert result.acceptance["init_acceptance"].min() > 0.03
    assert float((weights - exact).abs().max()) < 0.03  # the criterion
    # the same budget with the full 32-D kernel never leaves the start wells
    full = DiGSSampler(mw, alphas=[0.5], n_denoise_steps=1, step_size=0.05, seed=0)
    stuck = full.run(x0[:16], 800, burn_in=100, progress=False)
    assert float(stuck.acceptance["init_acceptance"][0]) < 1e-3
    assert float((stuck.samples[..., 0] > 0).double().mean()) < 0.2

"""Batched torch MALA / HMC: invariance on a correlated Gaussian, counting, validation."""
import math

import numpy as np
import pytest
import torch

from openmm_dikl import systems
from openmm_dikl.internal import InternalCoordinates, InternalTransform
from openmm_dikl.energy import EnergyAndForce, TransformedEnergy
from openmm_dikl.samplers import HMC, MALA
from openmm_dikl.samplers.steps import mala_step

COV = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)


def gaussian(x):
    d = x - MEAN
    return 0.5 * ((d @ PRECISION) * d).sum(-1), -(d @ PRECISION)


def _check_gaussian(x, n_sigma=4.5):
    """x (n, 2) independent draws: mean and covariance within n_sigma standard errors."""
    n = x.shape[0]
    mean_se = torch.sqrt(torch.diag(COV) / n)
    assert torch.all(torch.abs(x.mean(0) - MEAN) < n_sigma * mean_se), x.mean(0)
    emp = torch.cov(x.T)
    # var(s_ij) ≈ (Σ_ij² + Σ_ii Σ_jj) / n for Gaussian data
    cov_se = torch.sqrt((COV ** 2 + torch.outer(torch.diag(COV), torch.diag(COV))) / n)
    assert torch.all(torch.abs(emp - COV) < n_sigma * cov_se), emp


@pytest.mark.parametrize("sampler_cls,kwargs", [(MALA, {"step_size": 0.3}),
                                                (HMC, {"step_size": 0.3, "n_leapfrog": 5})])
def test_leaves_gaussian_invariant(sampler_cls, kwargs):
    generator = torch.Generator().manual_seed(11)
    sampler = sampler_cls(gaussian, generator=generator, **kwargs)
    n_chains = 4000
    x0 = torch.full((n_chains, 2), 4.0, dtype=torch.float64)  # far from the mode
    result = sampler.run(x0, n_steps=300, burn_in=150, thin=50)
    # final states of independent chains are independent draws
    _check_gaussian(result.samples[:, -1])
    _check_gaussian(result.samples[:, 0])
    assert 0.45 < float(result.acceptance["acceptance"].mean()) < 0.8


def test_force_evaluation_count_and_frozen_step_after_burn_in():
    sampler = HMC(gaussian, step_size=0.2, n_leapfrog=4, generator=torch.Generator().manual_seed(0))
    result = sampler.run(torch.zeros(7, 2, dtype=torch.float64), n_steps=10, burn_in=3)
    assert result.force_evaluations == 7 + 7 * 10 * 4
    assert result.samples.shape == (7, 7, 2)
    # adaptation happened during burn-in only: step sizes differ from the initial value ...
    assert not torch.allclose(result.statistics["step_size"], torch.full((7,), 0.2, dtype=torch.float64))
    # ... and a run without burn-in never changes them
    sampler = MALA(gaussian, step_size=0.2, generator=torch.Generator().manual_seed(0))
    result = sampler.run(torch.zeros(5, 2, dtype=torch.float64), n_steps=20)
    assert torch.equal(result.statistics["step_size"], torch.full((5,), 0.2, dtype=torch.float64))
    assert result.force_evaluations == 5 + 5 * 20


def test_nonfinite_proposals_are_rejected():
    def wall(x):  # u = +inf for x > 0.5: proposals beyond are rejected, never NaN states
        u, f = gaussian(x)
        bad = x[:, 0] > 0.5
        return torch.where(bad, torch.full_like(u, math.inf), u), torch.where(bad[:, None], torch.nan, f)

    sampler = MALA(wall, step_size=0.5, generator=torch.Generator().manual_seed(3))
    result = sampler.run(torch.zeros(200, 2, dtype=torch.float64), n_steps=50, burn_in=10)
    assert torch.isfinite(result.samples).all()
    assert (result.samples[..., 0] <= 0.5).all()


def test_mala_step_per_chain_step_sizes():
    x = torch.zeros(3, 2, dtype=torch.float64)
    u, f = gaussian(x)
    h = torch.tensor([1e-12, 1e-12, 1e-12], dtype=torch.float64)
    x_new, *_ = mala_step(x, u, f, gaussian, h, torch.Generator().manual_seed(0))
    assert torch.abs(x_new).max() < 1e-4  # tiny steps: the chains barely move


def test_validation():
    with pytest.raises(ValueError, match="step_size"):
        MALA(gaussian, step_size=0.0)
    with pytest.raises(ValueError, match="step_size"):
        HMC(gaussian, step_size=-1.0)
    with pytest.raises(ValueError, match="n_leapfrog"):
        HMC(gaussian, step_size=0.1, n_leapfrog=0)
    sampler = MALA(gaussian, step_size=0.1)
    with pytest.raises(ValueError, match="NaN"):
        sampler.run(torch.tensor([[0.0, float("nan")]]), n_steps=5)
    with pytest.raises(ValueError, match="burn_in"):
        sampler.run(torch.zeros(2, 2), n_steps=5, burn_in=5)
    with pytest.raises(ValueError, match="callable"):
        MALA(3.0, step_size=0.1)


def test_energy_and_force_torch_twin_matches_autograd():
    target = systems.get("mog40")
    x = target.reference_samples(5, seed=1)
    with EnergyAndForce(target) as fn:
        u, f = fn(x)
        assert fn.n_evaluations == 5 and not fn.uses_bridge
    assert torch.allclose(u, target.reduced_energy(x))
    assert torch.allclose(f, target.reduced_force(x))


def test_energy_and_force_bridge_matches_finite_differences():
    target = systems.get("alanine_dipeptide_vacuum")
    x = torch.tensor(np.asarray(target.positions._value))[None]
    with EnergyAndForce(target) as fn:
        assert fn.uses_bridge
        u, f = fn(x)
        eps = 1e-6
        shift = torch.zeros_like(x)
        shift[0, 8, 1] = eps  # Cα, y
        u_plus, _ = fn(x + shift)
        u_minus, _ = fn(x - shift)
    numeric = -(u_plus - u_minus) / (2 * eps)
    assert u.shape == (1,) and f.shape == (1, 22, 3)
    assert abs(float(numeric) - float(f[0, 8, 1])) < 1e-3 * max(1.0, abs(float(f[0, 8, 1])))


class _Log:
    """y = log x elementwise (x > 0): log|det ∂x/∂y| = Σ y."""

    def forward(self, x):
        y = torch.log(x)
        return y, y.reshape(y.shape[0], -1).sum(-1)

    def inverse(self, y):
        return torch.exp(y), y.reshape(y.shape[0], -1).sum(-1)


def test_transformed_energy_samples_the_pushforward():
    # u(x) = x on x > 0 (Exp(1)); MALA in y = log x must include the log-Jacobian,
    # otherwise x would follow ∝ exp(−x)/x (mean 0 instead of 1)
    def exponential(x):
        return x.sum(-1), -torch.ones_like(x)

    energy = TransformedEnergy(exponential, _Log())
    y0 = energy.to_state(torch.full((4000, 1), 2.0, dtype=torch.float64))
    sampler = HMC(energy, step_size=0.3, n_leapfrog=5, generator=torch.Generator().manual_seed(5))
    result = sampler.run(y0, n_steps=200, burn_in=100, thin=50)
    x = energy.to_positions(result.samples[:, -1])  # final states: 4000 independent draws
    assert abs(float(x.mean()) - 1.0) < 4.5 / math.sqrt(4000)
    assert abs(float((x > 1.0).double().mean()) - math.exp(-1.0)) < 4.5 * 0.48 / math.sqrt(4000)
    assert energy.n_evaluations == result.force_evaluations == 4000 * (1 + 200 * 5)


def test_transformed_energy_internal_coordinates_gradient_and_value():
    target = systems.get("alanine_dipeptide_vacuum")
    x = torch.tensor(np.asarray(target.positions._value))[None]
    ic = InternalCoordinates.from_target(target)
    noise = 0.002 * torch.randn((8, 22, 3), generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    transform = InternalTransform.fit(ic, x + noise)
    with EnergyAndForce(target) as fn, TransformedEnergy(fn, transform) as energy:
        z = energy.to_state(x + noise[:2])
        u_z, f_z = energy(z)
        # value: u(x(z)) − log|det ∂x/∂z|
        x_back, log_det = transform.inverse(z)
        assert torch.allclose(x_back[0], x[0] + noise[0], atol=1e-9)  # the frame's own sample
        assert torch.allclose(energy.to_state(x_back), z, atol=1e-9)  # the other: a rigid copy
        assert torch.allclose(u_z, fn(x_back)[0] - log_det, atol=1e-9)
        # force: central differences along a random direction of the 60 coordinates
        direction = torch.randn(z.shape, generator=torch.Generator().manual_seed(1),
                                dtype=torch.float64)
        eps = 1e-5
        numeric = -(energy(z + eps * direction)[0] - energy(z - eps * direction)[0]) / (2 * eps)
        analytic = (f_z * direction).sum(-1)
        assert torch.allclose(numeric, analytic, rtol=1e-4, atol=1e-4), (numeric, analytic)
        assert energy.n_evaluations == 6 and f_z.shape == (2, 60)


def test_transformed_energy_validation():
    with pytest.raises(ValueError, match="forward"):
        TransformedEnergy(gaussian, object())
    with pytest.raises(ValueError, match="callable"):
        TransformedEnergy(3.0, _Log())

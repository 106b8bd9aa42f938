"""VP schedule, DSM loss and the score identities of openmm_dikl.dikl.diffusion."""
import math

import pytest
import torch

from openmm_dikl.dikl.diffusion import (VPSchedule, denoising_score_identity, dikl_surrogate_loss,
                                   dsm_loss, level_weights, mixed_score_identity, model_score,
                                   perturb, target_score_identity)
from openmm_dikl.geometry import remove_mean

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- schedule
def test_vp_schedule_values():
    s = VPSchedule(30, 1e-6, 0.05)
    assert torch.allclose(s.alphas**2 + s.sigmas**2, torch.ones(30, dtype=F64), atol=1e-15)
    assert (s.alphas[1:] < s.alphas[:-1]).all()
    assert s.betas[0] == pytest.approx(1e-6) and s.betas[-1] == pytest.approx(0.05)
    assert s.alpha(0).item() == pytest.approx(math.sqrt(1 - 1e-6), abs=1e-15)
    betas = [1e-6 + k * (0.05 - 1e-6) / 29 for k in range(30)]
    expected = math.prod(math.sqrt(1 - b) for b in betas)
    assert s.alpha(29).item() == pytest.approx(expected, rel=1e-12)
    assert s.sigma(torch.tensor([0, 29])).tolist() == pytest.approx(
        [math.sqrt(1e-6), math.sqrt(1 - s.alpha(29).item() ** 2)], rel=1e-9)
    assert s.time(torch.tensor([0, 29])).tolist() == pytest.approx([1 / 30, 1.0])
    levels = s.sample_levels(3000, gen(0))
    assert levels.min() == 0 and levels.max() == 29
    one = VPSchedule(1, 1e-3, 0.5)
    assert one.betas.tolist() == pytest.approx([1e-3])


@pytest.mark.parametrize("args, match", [
    ((0, 1e-6, 0.05), "n_levels"), ((2.5, 1e-6, 0.05), "n_levels"), ((30, 0.0, 0.05), "beta_min"),
    ((30, 0.1, 0.05), "beta_min"), ((30, 1e-6, 1.0), "beta_max")])
def test_vp_schedule_validation(args, match):
    with pytest.raises(ValueError, match=match):
        VPSchedule(*args)


def test_level_index_validation():
    s = VPSchedule(5, 1e-3, 0.1)
    with pytest.raises(ValueError, match=r"t_index must lie in \[0, 4\]"):
        s.alpha(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="weighting"):
        level_weights(s, torch.tensor([0]), "sigma")


def test_level_weights_values():
    s = VPSchedule(5, 1e-3, 0.3)
    t = torch.tensor([0, 2, 4, 4])
    assert torch.equal(level_weights(s, t, "sigma2"), s.sigmas[t] ** 2)
    assert torch.equal(level_weights(s, t, "uniform"), torch.ones(4, dtype=F64))
    inv = level_weights(s, t, "inv_alpha")
    assert torch.allclose(inv * s.alphas[t], torch.ones(4, dtype=F64))
    assert float(inv[-1]) > 1.3  # the noisiest level (α ≈ 0.7) gets the largest weight


def test_perturb_centred_noise():
    s = VPSchedule(5, 1e-3, 0.3)
    x0 = remove_mean(torch.randn(64, 4, 2, generator=gen(1), dtype=F64))
    t = s.sample_levels(64, gen(2))
    x_t, eps = perturb(x0, s, t, gen(3), centre=True)
    assert eps.sum(1).abs().max() < 1e-12 and x_t.sum(1).abs().max() < 1e-12
    expected = s.alpha(t)[:, None, None] * x0 + s.sigma(t)[:, None, None] * eps
    assert torch.equal(x_t, expected)


# ---------------------------------------------------------------------- DSM
class LinearScore(torch.nn.Module):
    """Score s(x_t, t) = c_t · x_t with a learnable scalar per level (noise output −σ s)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.c = torch.nn.Parameter(torch.zeros(schedule.n_levels, dtype=F64))

    def forward(self, x_t, t):
        index = torch.round(t * self.schedule.n_levels - 1).long()
        sigma = self.schedule.sigma(index)[:, None, None]
        return -sigma * self.c[index][:, None, None] * x_t


def test_dsm_recovers_gaussian_score():
    """The DSM minimiser for data N(0, s² I) is ∇log p_t = −x_t / (α² s² + σ²)."""
    s_data = 0.5
    schedule = VPSchedule(6, 1e-3, 0.4)
    model = LinearScore(schedule)
    x0 = s_data * torch.randn(6000, 3, 2, generator=gen(10), dtype=F64)
    t = torch.arange(6).repeat(1000)
    opt = torch.optim.Adam(model.parameters(), lr=0.2)
    for step in range(300):
        opt.zero_grad()
        loss = dsm_loss(model, x0, schedule, t, gen(11))  # fixed noise: a deterministic fit
        loss.backward()
        opt.step()
    exact = -1.0 / (schedule.alphas**2 * s_data**2 + schedule.sigmas**2)
    # 6000 samples × 6 coordinates per level: relative Monte Carlo error ≈ 1 %
    assert torch.allclose(model.c.detach(), exact, rtol=0.04), (model.c.detach(), exact)
    # sigma2 weighting = plain noise-prediction error; at the optimum each coordinate
    # leaves E(ε̂ − ε)² = α² s² / (α² s² + σ²)
    a2s2 = schedule.alphas**2 * s_data**2
    expected_loss = 6 * (a2s2 / (a2s2 + schedule.sigmas**2)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected_loss), rel=0.03)


def test_model_score_parameterizations():
    schedule = VPSchedule(4, 1e-3, 0.2)
    x_t = torch.randn(5, 2, 3, generator=gen(0), dtype=F64)
    t = torch.tensor([0, 1, 2, 3, 3])
    net = lambda x, tt: 2.0 * x  # noqa: E731
    noise = model_score(net, x_t, t, schedule)
    assert torch.allclose(noise, -2.0 * x_t / schedule.sigma(t)[:, None, None])
    assert torch.equal(model_score(net, x_t, t, schedule, "score"), 2.0 * x_t)
    with pytest.raises(ValueError, match="parameterization"):
        model_score(net, x_t, t, schedule, "eps")
    with pytest.raises(ValueError, match="score_model returned shape"):
        model_score(lambda x, tt: x[:, :1], x_t, t, schedule)


# ---------------------------------------------------------------------- score identities
def gaussian_posterior(x_t, alpha, sigma, mean, std, k, generator):
    """k exact samples of p(x | x_t) for p = N(mean, std² I); returns (k, B, n, d)."""
    precision = 1.0 / std**2 + alpha**2 / sigma**2
    post_mean = (mean / std**2 + alpha * x_t / sigma**2) / precision
    noise = torch.randn((k,) + tuple(x_t.shape), generator=generator, dtype=F64)
    return post_mean + noise / math.sqrt(precision)


@pytest.mark.parametrize("alpha, sigma", [(0.8, 0.6), (0.3, math.sqrt(1 - 0.09)), (1.0, 2.0)])
def test_msi_zero_variance_for_standard_normal(alpha, sigma):
    """For p = N(0, I) a single posterior sample gives the exact noisy score (VP and general)."""
    x_t = torch.randn(7, 3, 2, generator=gen(0), dtype=F64)
    x = gaussian_posterior(x_t, alpha, sigma, 0.0, 1.0, 1, gen(1))[0]
    msi = mixed_score_identity(x_t, x, -x, alpha, sigma)
    exact = -x_t / (alpha**2 + sigma**2)
    assert torch.allclose(msi, exact, atol=1e-12)
    # the other two identities are only right on average
    assert not torch.allclose(denoising_score_identity(x_t, x, alpha, sigma), exact, atol=1e-2)


@pytest.mark.parametrize("alpha, sigma", [(0.9, math.sqrt(1 - 0.81)), (0.5, 1.5)])
def test_score_identities_on_gaussian(alpha, sigma):
    mean, std, k = 1.5, 0.4, 20000
    x_t = torch.tensor([[[-1.0, 0.3]], [[2.0, 0.1]]], dtype=F64)
    x = gaussian_posterior(x_t, alpha, sigma, mean, std, k, gen(2))
    force = -(x - mean) / std**2
    exact = -(x_t - alpha * mean) / (alpha**2 * std**2 + sigma**2)
    per_sample = (alpha * (x + force) - x_t) / (alpha**2 + sigma**2)
    tol = 5 * per_sample.std(0) / math.sqrt(k) + 1e-9
    msi = mixed_score_identity(x_t, x, force, alpha, sigma)
    assert ((msi - exact).abs() < tol).all()
    for other in (denoising_score_identity(x_t, x, alpha, sigma),
                  target_score_identity(x_t, force, alpha)):
        assert torch.allclose(other, exact, rtol=0.05, atol=0.05)


def mixture_posterior(x_t, alpha, sigma, means, stds, weights):
    """Exact p_t score and the posterior mixture (weights, means, stds) for a 1-D mixture."""
    var_t = alpha**2 * stds**2 + sigma**2
    log_r = torch.log(weights) - 0.5 * torch.log(2 * math.pi * var_t) \
        - (x_t[..., None] - alpha * means) ** 2 / (2 * var_t)
    r = torch.softmax(log_r, -1)
    score = (r * -(x_t[..., None] - alpha * means) / var_t).sum(-1)
    precision = 1 / stds**2 + alpha**2 / sigma**2
    post_means = (means / stds**2 + alpha * x_t[..., None] / sigma**2) / precision
    return score, r, post_means, precision.rsqrt()


MIX = dict(means=torch.tensor([-2.0, 1.5], dtype=F64), stds=torch.tensor([0.4, 0.7], dtype=F64),
           weights=torch.tensor([0.3, 0.7], dtype=F64))


def mixture_force(x):
    """∇ log p for the 1-D mixture MIX at x (any shape)."""
    means, stds, weights = MIX["means"], MIX["stds"], MIX["weights"]
    log_c = torch.log(weights) - torch.log(stds) - (x[..., None] - means) ** 2 / (2 * stds**2)
    return (torch.softmax(log_c, -1) * -(x[..., None] - means) / stds**2).sum(-1)


@pytest.mark.parametrize("alpha", [0.95, 0.6, 0.2])
def test_msi_exact_posterior_mixture(alpha):
    sigma = math.sqrt(1 - alpha**2)
    x_t = torch.tensor([-1.9, -0.5, 0.0, 0.4, 1.4], dtype=F64) * max(alpha, 0.5)
    score, r, post_means, post_std = mixture_posterior(x_t, alpha, sigma, **MIX)
    k, g = 40000, gen(5)
    comp = torch.multinomial(r, k, replacement=True, generator=g).T  # (k, B)
    index = torch.arange(len(x_t)).expand_as(comp)
    x = post_means[index, comp] + post_std[comp] * torch.randn(comp.shape, generator=g, dtype=F64)
    x, x_t3 = x[..., None, None], x_t[:, None, None]
    f = mixture_force(x)
    msi = mixed_score_identity(x_t3, x, f, alpha, sigma)[:, 0, 0]
    per_sample = (alpha * (x + f) - x_t3) / (alpha**2 + sigma**2)
    se = per_sample.std(0)[:, 0, 0] / math.sqrt(k)
    assert ((msi - score).abs() < 5 * se + 1e-9).all(), (msi, score, se)


def test_msi_importance_weights():
    x_t = torch.randn(3, 2, 2, generator=gen(0), dtype=F64)
    x = torch.randn(4, 3, 2, 2, generator=gen(1), dtype=F64)
    f = torch.randn(4, 3, 2, 2, generator=gen(2), dtype=F64)
    w = torch.tensor([[2.0, 1, 0], [0, 1, 1], [1, 1, 1], [1, 0, 3]], dtype=F64)
    # integer weights equal duplicating the samples
    reps = w.long()
    dup_x = [torch.repeat_interleave(x[:, b], reps[:, b], 0) for b in range(3)]
    dup_f = [torch.repeat_interleave(f[:, b], reps[:, b], 0) for b in range(3)]
    weighted = mixed_score_identity(x_t, x, f, 0.7, 0.5, weights=w)
    for b in range(3):
        plain = mixed_score_identity(x_t[b:b + 1], dup_x[b][:, None], dup_f[b][:, None], 0.7, 0.5)
        assert torch.allclose(weighted[b], plain[0], atol=1e-12)
    with pytest.raises(ValueError, match=r"weights must have shape \(K, B\)"):
        mixed_score_identity(x_t, x, f, 0.7, 0.5, weights=w[:, :2])
    with pytest.raises(ValueError, match="non-negative"):
        mixed_score_identity(x_t, x, f, 0.7, 0.5, weights=-w)
    with pytest.raises(ValueError, match="do not match x_t"):
        mixed_score_identity(x_t[:2], x, f, 0.7, 0.5)


def test_surrogate_loss_gradient():
    """∇_θ of the surrogate is E[w (s_model − s_target) · ∂x_t/∂θ] for x = θ z."""
    theta = torch.tensor(1.3, dtype=F64, requires_grad=True)
    z = torch.randn(8, 2, 2, generator=gen(0), dtype=F64)
    alpha, sigma, w = 0.8, 0.6, torch.rand(8, generator=gen(1), dtype=F64)
    x_t = alpha * theta * z + sigma * torch.randn(8, 2, 2, generator=gen(2), dtype=F64)
    s_model = torch.randn(8, 2, 2, generator=gen(3), dtype=F64)
    s_target = torch.randn(8, 2, 2, generator=gen(4), dtype=F64)
    dikl_surrogate_loss(x_t, s_model, s_target, w).backward()
    expected = (w[:, None, None] * (s_model - s_target) * alpha * z).sum() / 8
    assert theta.grad.item() == pytest.approx(expected.item(), rel=1e-12)

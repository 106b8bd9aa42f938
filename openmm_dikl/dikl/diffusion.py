"""Diffusion pieces of DiKL as pure functions: VP schedule, DSM loss, score identities.

Everything here is stateless: randomness comes from an explicit :class:`torch.Generator`
argument, nothing touches the global RNG or default dtype.  Positions are in nm and
scores (gradients of log-densities) in 1/nm; the noise ε and the noise prediction ε̂
are dimensionless in the papers' reduced units (1 length unit = 1 nm).

Conventions
-----------
* Gaussian kernel k_t(x_t | x) = N(x_t | α_t x, σ_t² I), VP: α_t² + σ_t² = 1.
* Levels are integers ``t_index`` in {0, …, T−1}; the network sees the float time
  t = (t_index + 1) / T in (0, 1] (:meth:`VPSchedule.time`).
* Score networks predict the noise: ``score_model(x_t, t)`` returns ε̂ (same shape as
  x_t) and the model score is s_φ(x_t, t) = −ε̂ / σ_t (``parameterization="noise"``,
  the default).  ``parameterization="score"`` takes the output as the score itself.
* Translation-invariant targets (DW-4, LJ) live in the zero-centre-of-mass subspace:
  with ``centre=True`` the data, the noise and hence x_t are centred
  (:func:`openmm_dikl.geometry.remove_mean`), so the whole diffusion runs on that subspace.
"""
import torch

from ..geometry import remove_mean

__all__ = ["VPSchedule", "gaussian_noise", "perturb", "level_weights", "model_score", "dsm_loss",
           "mixed_score_identity", "denoising_score_identity", "target_score_identity",
           "dikl_surrogate_loss", "clip_per_particle"]

WEIGHTINGS = ("sigma2", "uniform", "inv_alpha")
PARAMETERIZATIONS = ("noise", "score")


class VPSchedule:
    """Discrete variance-preserving noise schedule with linearly spaced β.

    Parameters
    ----------
    n_levels : int
        Number of noise levels T (≥ 1).
    beta_min, beta_max : float
        First and last β (dimensionless), 0 < beta_min < beta_max < 1.  With
        ``n_levels == 1`` only ``beta_min`` is used.

    Attributes
    ----------
    betas, alphas, sigmas : torch.Tensor, shape=(n_levels,), dtype=float64
        β_k = linspace(beta_min, beta_max, T)[k];  α_k = Π_{j≤k} sqrt(1 − β_j);
        σ_k = sqrt(1 − α_k²).

    Notes
    -----
    This is the discrete DDPM form (α_k² is DDPM's ``alphas_cumprod``), the convention of
    the DiKL code: T = 30, β from 1e-6 to 0.05 (DW-4, LJ-13), 0.15 (MW-32), 0.7 (MoG-40).
    With the DW-4 settings α ranges from 1 − 5e-7 (σ = 1e-3) down to 0.68 (σ = 0.73).
    Level 0 is the least noisy one.

    Examples
    --------
    >>> s = VPSchedule(30, 1e-6, 0.05)
    >>> bool(torch.allclose(s.alphas**2 + s.sigmas**2, torch.ones(30, dtype=torch.float64)))
    True
    """

    def __init__(self, n_levels=30, beta_min=1e-6, beta_max=0.05):
        if int(n_levels) != n_levels or n_levels < 1:
            raise ValueError(f"n_levels must be an integer >= 1, got {n_levels}")
        if not (0.0 < beta_min < beta_max < 1.0):
            raise ValueError("need 0 < beta_min < beta_max < 1, got "
                             f"beta_min={beta_min}, beta_max={beta_max}")
        self.n_levels = int(n_levels)
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.betas = torch.linspace(self.beta_min, self.beta_max, self.n_levels,
                                    dtype=torch.float64)
        alpha2 = torch.cumprod(1.0 - self.betas, dim=0)
        self.alphas = alpha2.sqrt()
        self.sigmas = (1.0 - alpha2).sqrt()

    def __repr__(self):
        return (f"VPSchedule(n_levels={self.n_levels}, beta_min={self.beta_min}, "
                f"beta_max={self.beta_max})")

    def _index(self, t_index):
        t_index = torch.as_tensor(t_index, dtype=torch.long)
        if t_index.numel() and (t_index.min() < 0 or t_index.max() >= self.n_levels):
            raise ValueError(f"t_index must lie in [0, {self.n_levels - 1}], got values in "
                             f"[{int(t_index.min())}, {int(t_index.max())}]")
        return t_index

    def alpha(self, t_index):
        """Signal scale α (dimensionless, float64) at integer level(s) ``t_index``."""
        return self.alphas[self._index(t_index)]

    def sigma(self, t_index):
        """Noise scale σ (nm, float64) at integer level(s) ``t_index``."""
        return self.sigmas[self._index(t_index)]

    def time(self, t_index):
        """Network time input t = (t_index + 1) / T in (0, 1], float64."""
        return (self._index(t_index) + 1).to(torch.float64) / self.n_levels

    def sample_levels(self, n, generator=None, low=0):
        """``n`` levels drawn uniformly from {low, …, T−1}, long tensor of shape (n,).

        ``low`` = 1 never draws the least noisy level 0 (the DiKL code's t ∈ 1 … T−1);
        with ``low`` = 0 the draws are the same as without the argument.
        """
        low = int(low)
        if not 0 <= low < self.n_levels:
            raise ValueError(f"low must lie in [0, {self.n_levels - 1}], got {low}")
        return torch.randint(low, self.n_levels, (int(n),), generator=generator)


def gaussian_noise(shape, generator=None, centre=False, dtype=torch.float64):
    """Standard normal noise of ``shape`` (..., n, d), projected to zero mean if ``centre``."""
    eps = torch.randn(tuple(shape), generator=generator, dtype=dtype)
    return remove_mean(eps) if centre else eps


def _per_sample(value, like):
    """A (B,) tensor (or scalar) broadcast against ``like`` (B, n, d), in like's dtype."""
    value = torch.as_tensor(value, dtype=like.dtype)
    return value.reshape(value.shape + (1,) * (like.dim() - value.dim()))


def perturb(x0, schedule, t_index, generator=None, centre=False):
    """Noise clean samples: x_t = α_t x0 + σ_t ε.

    Parameters
    ----------
    x0 : torch.Tensor, shape=(B, n, d)
        Clean configurations in nm.
    schedule : VPSchedule
    t_index : torch.Tensor, shape=(B,), dtype=long
        Noise level of each sample.
    generator : torch.Generator, optional
    centre : bool
        Draw ε in the zero-centre-of-mass subspace.

    Returns
    -------
    x_t : torch.Tensor, shape=(B, n, d)
        Noisy configurations in nm (x0's dtype).
    eps : torch.Tensor, shape=(B, n, d)
        The noise ε used.
    """
    eps = gaussian_noise(x0.shape, generator, centre, dtype=x0.dtype)
    alpha = _per_sample(schedule.alpha(t_index), x0)
    sigma = _per_sample(schedule.sigma(t_index), x0)
    return alpha * x0 + sigma * eps, eps


def level_weights(schedule, t_index, weighting="sigma2"):
    """Per-sample weights w(t) of the DSM and DiKL losses, float64 of shape (B,).

    ``"sigma2"``: w = σ_t² (the DSM loss becomes the plain ε-prediction loss
    ||ε̂ − ε||², and score errors, which scale like 1/σ_t, are balanced across levels);
    ``"uniform"``: w = 1;
    ``"inv_alpha"``: w = 1/α_t (in the DiKL gradient this cancels the factor α_t of
    ∂x_t/∂θ, so strongly noised levels, which connect distant modes, keep their full
    weight; the DiKL code's "1/a" for MoG-40 and MW-32).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    sigma = schedule.sigma(t_index)
    if weighting == "sigma2":
        return sigma**2
    if weighting == "inv_alpha":
        return 1.0 / schedule.alpha(t_index)
    return torch.ones_like(sigma)


def model_score(score_model, x_t, t_index, schedule, parameterization="noise"):
    """Model score s_φ(x_t, t) in 1/nm, shape (B, n, d) (x_t's dtype).

    With ``parameterization="noise"`` the network output ε̂ is turned into −ε̂ / σ_t.
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                         f"got {parameterization!r}")
    t = schedule.time(t_index).to(x_t.dtype)
    out = score_model(x_t, t)
    if out.shape != x_t.shape:
        raise ValueError(f"score_model returned shape {tuple(out.shape)}, expected "
                         f"{tuple(x_t.shape)}")
    if parameterization == "score":
        return out
    return -out / _per_sample(schedule.sigma(t_index), out)


def dsm_loss(score_model, x0, schedule, t_index, generator=None, centre=False,
             weighting="sigma2", parameterization="noise"):
    """Denoising score matching loss of a score network on clean samples.

    L = mean_b w(t_b) · || s_φ(x_t, t_b) − ∇ log k_t(x_t | x0) ||²,
    with ∇ log k_t(x_t | x0) = −ε / σ_t and the squared norm summed over particles and
    dimensions.  Its minimiser is the noisy-data score ∇ log p_t (Vincent, 2011).

    Parameters
    ----------
    score_model : callable
        ``score_model(x_t, t) -> (B, n, d)`` with t float (B,) in (0, 1].
    x0 : torch.Tensor, shape=(B, n, d)
        Clean samples in nm (detached generator samples during DiKL training).
    schedule : VPSchedule
    t_index : torch.Tensor, shape=(B,), dtype=long
    generator : torch.Generator, optional
        Source of the noise ε.
    centre : bool
        Zero-centre-of-mass noise (translation-invariant targets).
    weighting : {"sigma2", "uniform", "inv_alpha"}
        See :func:`level_weights`.  "sigma2" with the noise parameterization gives the
        ε-prediction loss mean ||ε̂ − ε||².
    parameterization : {"noise", "score"}

    Returns
    -------
    torch.Tensor
        Scalar loss (dimensionless for "sigma2"; nm⁻² for "uniform").
    """
    x_t, eps = perturb(x0, schedule, t_index, generator, centre)
    sigma = _per_sample(schedule.sigma(t_index), x_t)
    score = model_score(score_model, x_t, t_index, schedule, parameterization)
    residual = (score + eps / sigma).pow(2).flatten(1).sum(1)
    weights = level_weights(schedule, t_index, weighting).to(residual.dtype)
    return (weights * residual).mean()


def _posterior_mean(values, weights):
    """Average of ``values`` (K, B, n, d) over K with optional weights (K, B); (B, n, d) in."""
    if values.dim() == 3:
        if weights is not None:
            raise ValueError("weights need stacked samples of shape (K, B, n, d)")
        return values
    if weights is None:
        return values.mean(0)
    weights = torch.as_tensor(weights, dtype=values.dtype)
    if weights.shape != values.shape[:2]:
        raise ValueError(f"weights must have shape (K, B) = {tuple(values.shape[:2])}, "
                         f"got {tuple(weights.shape)}")
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError("importance weights must be finite and non-negative")
    total = weights.sum(0)
    if (total <= 0).any():
        raise ValueError("importance weights of some x_t sum to zero")
    return (weights[..., None, None] * values).sum(0) / total[:, None, None]


def _check_posterior(x_t, samples, forces):
    if samples.shape != forces.shape:
        raise ValueError(f"posterior samples {tuple(samples.shape)} and forces "
                         f"{tuple(forces.shape)} differ in shape")
    if samples.shape[-3:] != x_t.shape:
        raise ValueError(f"posterior samples {tuple(samples.shape)} do not match x_t "
                         f"{tuple(x_t.shape)}: expected (B, n, d) or (K, B, n, d)")


def mixed_score_identity(x_t, posterior_samples, posterior_forces, alpha, sigma, weights=None):
    """Noisy-target score ∇ log p_t(x_t) by the mixed score identity (MSI).

    Parameters
    ----------
    x_t : torch.Tensor, shape=(B, n, d)
        Noisy configurations in nm.
    posterior_samples : torch.Tensor, shape=(K, B, n, d) or (B, n, d)
        Samples of p(x | x_t) ∝ p(x) N(x_t | α x, σ² I), nm.
    posterior_forces : torch.Tensor, same shape as ``posterior_samples``
        Target scores ∇ log p(x) = −∇u(x) (reduced forces) at the samples, 1/nm.
    alpha, sigma : float or torch.Tensor, shape=(B,)
        Kernel scale (dimensionless) and noise (nm) of each x_t.
    weights : torch.Tensor, shape=(K, B), optional
        Non-negative (unnormalised) importance weights of the samples; normalised over K.

    Returns
    -------
    torch.Tensor, shape=(B, n, d)
        Estimate of ∇ log p_t(x_t) in 1/nm.

    Notes
    -----
    Two unbiased identities hold for the kernel N(x_t | α x, σ² I):
    Tweedie / denoising score identity ∇ log p_t(x_t) = E[(α x − x_t)] / σ² and the
    target score identity ∇ log p_t(x_t) = E[∇ log p(x)] / α (expectations over
    p(x | x_t)).  Any convex combination λ·DSI + (1 − λ)·TSI is unbiased; the MSI takes
    λ = σ² / (α² + σ²), which gives

        ∇ log p_t(x_t) = E[ α (x + ∇ log p(x)) − x_t ] / (α² + σ²),

    i.e. the DiKL paper's VP form E[α (x + ∇ log p(x)) − x_t] when α² + σ² = 1.  This λ
    is the one for which the estimator has zero variance for a standard normal target
    (∇ log p(x) = −x cancels x, leaving −x_t / (α² + σ²), the exact noisy score), so it
    is accurate whenever the target is locally close to unit-variance Gaussian.
    """
    _check_posterior(x_t, posterior_samples, posterior_forces)
    alpha = _per_sample(alpha, x_t)
    sigma = _per_sample(sigma, x_t)
    mean = _posterior_mean(posterior_samples + posterior_forces, weights)
    return (alpha * mean - x_t) / (alpha**2 + sigma**2)


def denoising_score_identity(x_t, posterior_samples, alpha, sigma, weights=None):
    """∇ log p_t(x_t) = E[α x − x_t] / σ² (Tweedie), 1/nm, shape (B, n, d); see MSI."""
    if posterior_samples.shape[-3:] != x_t.shape:
        raise ValueError(f"posterior samples {tuple(posterior_samples.shape)} do not match "
                         f"x_t {tuple(x_t.shape)}")
    alpha = _per_sample(alpha, x_t)
    sigma = _per_sample(sigma, x_t)
    return (alpha * _posterior_mean(posterior_samples, weights) - x_t) / sigma**2


def target_score_identity(x_t, posterior_forces, alpha, weights=None):
    """∇ log p_t(x_t) = E[∇ log p(x)] / α (target score identity), 1/nm, shape (B, n, d)."""
    if posterior_forces.shape[-3:] != x_t.shape:
        raise ValueError(f"posterior forces {tuple(posterior_forces.shape)} do not match "
                         f"x_t {tuple(x_t.shape)}")
    return _posterior_mean(posterior_forces, weights) / _per_sample(alpha, x_t)


def dikl_surrogate_loss(x_t, model_scores, target_scores, weights):
    """Surrogate whose gradient is the DiKL generator gradient.

    L = Σ_b w_b (s_model − s_target)_b.detach() · x_t,b / B, so that
    ∇_θ L = E[w(t) (s_model(x_t) − s_target(x_t)) · ∂x_t/∂θ] with x_t = α f_θ(z) + σ ε
    (He et al., 2025).  Its value is not the DiKL itself (the trainer logs the weighted
    squared score difference instead).

    Parameters
    ----------
    x_t : torch.Tensor, shape=(B, n, d)
        Noisy generator samples in nm, differentiable w.r.t. the generator parameters.
    model_scores, target_scores : torch.Tensor, shape=(B, n, d)
        Scores in 1/nm (any dtype; detached here).
    weights : torch.Tensor, shape=(B,)
        Level weights w(t).
    """
    diff = (model_scores - target_scores).detach()
    diff = _per_sample(weights, diff) * diff
    return (diff.to(x_t.dtype) * x_t).sum() / x_t.shape[0]



def clip_per_particle(v, max_norm):
    """Clip every particle's d-vector of v to norm ``max_norm``, keeping its direction.

    Parameters
    ----------
    v : torch.Tensor, shape=(B, n, d)
        E.g. score differences s_model − s_target (1/nm).
    max_norm : float
        Largest norm of one particle's vector (units of v).

    Returns
    -------
    torch.Tensor, shape=(B, n, d)
    """
    norm = v.norm(dim=-1, keepdim=True)
    return v * torch.clamp(max_norm / norm.clamp(min=1e-300), max=1.0)

"""Sampling the DiKL denoising posterior p(x | x_t) ∝ exp(−u(x)) N(x_t | α x, σ² I).

:class:`PosteriorSampler` draws, for a batch of noisy configurations x_t, samples of the
posterior by importance sampling / annealed importance sampling from N(x_t/α, (σ/α)² I)
followed by MALA with adaptive step sizes, driven by the target's reduced energy u and
force −∇u (torch twin or live OpenMM forces).  Its samples feed the mixed score identity
(:func:`openmm_dikl.dikl.diffusion.mixed_score_identity`) for the noisy target score.

Units: positions in nm, reduced energies dimensionless (kT), forces in 1/nm, MALA step
sizes in nm².
"""
import dataclasses
import logging
import math
from typing import Optional

import torch

from .diffusion import gaussian_noise

__all__ = ["PosteriorSample", "PosteriorSampler"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PosteriorSample:
    """Output of :meth:`PosteriorSampler.sample`.

    Attributes
    ----------
    samples : torch.Tensor, shape=(P, B, n, d), float64
        Posterior samples in nm (P = ``n_posterior``, or K = ``n_importance`` if not
        resampled).
    forces : torch.Tensor, shape=(P, B, n, d), float64
        Reduced target forces −∇u (1/nm) at the samples.
    weights : torch.Tensor or None, shape=(P, B)
        Normalised importance weights (only without resampling).
    acceptance : torch.Tensor, shape=(B,)
        Mean MALA acceptance probability per x_t (NaN without MALA steps).
    step_size : torch.Tensor, shape=(G,)
        Adapted MALA step sizes (nm²) per group.
    ess_fraction : torch.Tensor, shape=(B,)
        Effective sample size of the importance / AIS weights divided by K.
    """

    samples: torch.Tensor
    forces: torch.Tensor
    weights: Optional[torch.Tensor]
    acceptance: torch.Tensor
    step_size: torch.Tensor
    ess_fraction: torch.Tensor


class PosteriorSampler:
    """Samples p(x | x_t) ∝ exp(−u(x)) N(x_t | α x, σ² I) for a batch of x_t.

    Parameters
    ----------
    energy_and_force : callable
        x (B, n, d) nm -> (u (B,), −∇u (B, n, d)), float64 (see :class:`~openmm_dikl.energy.EnergyAndForce`).
    n_importance : int
        K proposals per x_t from q(x) = N(x_t/α, (σ/α)² I).
    n_ais_steps : int
        Annealed importance sampling steps from q to the posterior (0: plain importance
        sampling).  Step j targets q(x) exp(−β_j u(x)), β_j = j / n_ais_steps, with one
        MALA transition.
    n_mala_steps : int
        Adaptive MALA steps on the posterior after resampling.
    n_posterior : int
        P samples drawn (with replacement) from the K weighted particles per x_t.
    resample : bool
        If False, all K particles are kept, moved by MALA (which keeps them properly
        weighted) and returned with their normalised weights.
    acceptance_range : (float, float)
        After every MALA step each group's step size is multiplied by ``adapt_factor`` if
        its mean acceptance probability is above the range, divided if below.
    adapt_factor : float
        > 1.
    centre : bool
        Work in the zero-centre-of-mass subspace (translation-invariant targets): the
        proposal noise and MALA noise are centred, so centred x_t give centred samples.

    Notes
    -----
    The proposal q is proportional to the kernel N(x_t | α x, σ² I) as a function of x, so
    the importance weights are w ∝ exp(−u(x)).  MALA on the posterior uses
    ∇ log p(x | x_t) = −∇u(x) + α (x_t − α x) / σ² and the proposal
    x' = x + h ∇ log p + sqrt(2h) ξ with the Metropolis–Hastings correction.  Non-finite
    energies (particle overlaps) get zero weight and are always rejected.
    """

    def __init__(self, energy_and_force, n_importance=20, n_ais_steps=0, n_mala_steps=50,
                 n_posterior=1, resample=True, acceptance_range=(0.5, 0.6), adapt_factor=1.1,
                 centre=False):
        for name, value, low in (("n_importance", n_importance, 1),
                                 ("n_ais_steps", n_ais_steps, 0),
                                 ("n_mala_steps", n_mala_steps, 0),
                                 ("n_posterior", n_posterior, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        low, high = acceptance_range
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"acceptance_range must satisfy 0 < low <= high < 1, got "
                             f"{acceptance_range}")
        if not adapt_factor > 1.0:
            raise ValueError(f"adapt_factor must be > 1, got {adapt_factor}")
        self.energy_and_force = energy_and_force
        self.n_importance = int(n_importance)
        self.n_ais_steps = int(n_ais_steps)
        self.n_mala_steps = int(n_mala_steps)
        self.n_posterior = int(n_posterior)
        self.resample = bool(resample)
        self.acceptance_range = (float(low), float(high))
        self.adapt_factor = float(adapt_factor)
        self.centre = bool(centre)
        #: Number of configurations whose energy and force were computed so far.
        self.n_evaluations = 0

    def _evaluate(self, x):
        """u, f of x (..., n, d) with non-finite results mapped to u = +inf, f = 0."""
        flat = x.reshape((-1,) + x.shape[-2:])
        u, f = self.energy_and_force(flat)
        self.n_evaluations += flat.shape[0]
        u = u.reshape(x.shape[:-2]).to(torch.float64)
        f = f.reshape(x.shape).to(torch.float64)
        bad = ~(torch.isfinite(u) & torch.isfinite(f).flatten(-2).all(-1))
        if bad.any():
            u = torch.where(bad, torch.full_like(u, math.inf), u)
            f = torch.where(bad[..., None, None], torch.zeros_like(f), f)
        return u, f

    @staticmethod
    def _log_density(x, u, f, x_t, alpha, sigma, beta):
        """log π_β(x) = −β u − |x_t − α x|²/(2σ²) (up to a constant) and its gradient."""
        resid = x_t - alpha * x
        log_p = -beta * u - resid.pow(2).sum((-2, -1)) / (2.0 * sigma[..., 0, 0] ** 2)
        return log_p, beta * f + alpha * resid / sigma**2

    def _mala_step(self, x, u, f, x_t, alpha, sigma, beta, h, generator):
        """One MALA step on π_β for all chains; h broadcastable to x (nm²)."""
        log_p, grad = self._log_density(x, u, f, x_t, alpha, sigma, beta)
        noise = gaussian_noise(x.shape, generator, self.centre)
        y = x + h * grad + torch.sqrt(2.0 * h) * noise
        u_y, f_y = self._evaluate(y)
        log_p_y, grad_y = self._log_density(y, u_y, f_y, x_t, alpha, sigma, beta)
        log_forward = -noise.pow(2).sum((-2, -1)) / 2.0
        log_backward = -(x - y - h * grad_y).pow(2).sum((-2, -1)) / (4.0 * h[..., 0, 0])
        log_ratio = log_p_y - log_p + log_backward - log_forward
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        prob = torch.exp(torch.clamp(log_ratio, max=0.0))
        accept = torch.rand(prob.shape, generator=generator, dtype=torch.float64) < prob
        keep = accept[..., None, None]
        return (torch.where(keep, y, x), torch.where(accept, u_y, u), torch.where(keep, f_y, f),
                prob)

    def sample(self, x_t, alpha, sigma, step_size, generator=None, groups=None):
        """Draw posterior samples for each x_t.

        Parameters
        ----------
        x_t : torch.Tensor, shape=(B, n, d)
            Noisy configurations in nm (centred when ``centre``).
        alpha, sigma : torch.Tensor, shape=(B,) or float
            Kernel scale (dimensionless) and noise (nm) of each x_t.
        step_size : torch.Tensor, shape=(G,) or float
            MALA step sizes h (nm²) per group; not modified in place.
        generator : torch.Generator, optional
        groups : torch.Tensor, shape=(B,), dtype=long, optional
            Group of each x_t for step-size adaptation (e.g. its noise level); default
            every x_t is its own group (G = B).

        Returns
        -------
        PosteriorSample
        """
        x_t = torch.as_tensor(x_t).detach().to(torch.float64)
        if x_t.dim() != 3:
            raise ValueError(f"x_t must have shape (B, n, d), got {tuple(x_t.shape)}")
        n_batch = x_t.shape[0]
        alpha = torch.as_tensor(alpha, dtype=torch.float64).expand(n_batch).reshape(-1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(n_batch).reshape(-1, 1, 1)
        if not ((alpha > 0).all() and (sigma > 0).all()):
            raise ValueError("alpha and sigma must be positive")
        if groups is None:
            groups = torch.arange(n_batch)
        groups = torch.as_tensor(groups, dtype=torch.long)
        step_size = torch.as_tensor(step_size, dtype=torch.float64)
        if step_size.dim() == 0:
            step_size = step_size.expand(int(groups.max()) + 1)
        step_size = step_size.clone()
        if groups.shape != (n_batch,) or groups.min() < 0 or groups.max() >= len(step_size):
            raise ValueError(f"groups must be (B,) = ({n_batch},) indices into step_size "
                             f"(length {len(step_size)})")
        if not (step_size > 0).all():
            raise ValueError("MALA step sizes must be positive")

        # Importance proposals from q(x) = N(x_t / α, (σ / α)² I).
        shape = (self.n_importance,) + tuple(x_t.shape)
        x = x_t / alpha + (sigma / alpha) * gaussian_noise(shape, generator, self.centre)
        u, f = self._evaluate(x)
        log_w = torch.zeros(shape[:2], dtype=torch.float64)

        # AIS from q (β = 0) to the posterior (β = 1); plain IS when n_ais_steps == 0.
        n_stages = max(self.n_ais_steps, 1)
        h = step_size[groups].reshape(-1, 1, 1)
        for j in range(1, n_stages + 1):
            log_w = log_w - u / n_stages  # u = +inf (overlap) gives weight 0
            if self.n_ais_steps:
                x, u, f, _ = self._mala_step(x, u, f, x_t, alpha, sigma, j / n_stages, h,
                                             generator)
        dead = torch.isinf(log_w).all(0)
        if dead.any():
            logger.debug("%d x_t had no finite-energy proposal", int(dead.sum()))
            log_w[:, dead] = 0.0
        weights = torch.softmax(log_w, dim=0)
        ess_fraction = 1.0 / weights.pow(2).sum(0) / self.n_importance

        if self.resample:
            index = torch.multinomial(weights.T, self.n_posterior, replacement=True,
                                      generator=generator).T
            batch = torch.arange(n_batch).expand_as(index)
            x, u, f = x[index, batch], u[index, batch], f[index, batch]
            weights = None

        acceptance = torch.zeros(n_batch, dtype=torch.float64)
        low, high = self.acceptance_range
        counts = torch.bincount(groups, minlength=len(step_size)).to(torch.float64)
        for _ in range(self.n_mala_steps):
            h = step_size[groups].reshape(-1, 1, 1)
            x, u, f, prob = self._mala_step(x, u, f, x_t, alpha, sigma, 1.0, h, generator)
            prob_b = prob.mean(0)
            acceptance += prob_b
            group_acc = torch.zeros_like(step_size).index_add_(0, groups, prob_b)
            group_acc = group_acc / counts.clamp(min=1.0)
            used = counts > 0
            step_size = torch.where(used & (group_acc > high), step_size * self.adapt_factor,
                                    step_size)
            step_size = torch.where(used & (group_acc < low), step_size / self.adapt_factor,
                                    step_size)
        if self.n_mala_steps:
            acceptance /= self.n_mala_steps
        else:
            acceptance.fill_(math.nan)
        return PosteriorSample(x, f, weights, acceptance, step_size, ess_fraction)

"""Sampling the DiKL denoising posterior p(x | x_t) ∝ exp(−u(x)) N(x_t | α x, σ² I).

:class:`PosteriorSampler` draws, for a batch of noisy configurations x_t, samples of the
posterior by importance sampling / annealed importance sampling from N(x_t/α, (σ/α)² I)
followed by MALA with adaptive step sizes, driven by the target's reduced energy u and
force −∇u (torch twin or live OpenMM forces).  Its samples feed the mixed score identity
(:func:`openmm_dikl.dikl.diffusion.mixed_score_identity`) for the noisy target score.

Each MALA transition is :func:`openmm_dikl.samplers.steps.mala_step` on the conditional
energy u_c(x) = β u(x) + |x_t − α x|² / (2σ²) of the (tempered) posterior, with all
K × B chains of shape (K, B, n, d) at once (``event_dims=2``).

Units: positions in nm (in units of the trainer's ``coordinate_scale`` when it diffuses
x / c), reduced energies dimensionless (kT), forces in 1/nm, MALA step sizes in nm².
"""
import dataclasses
import logging
import math
from typing import Optional

import torch

from ..samplers.steps import mala_step, select
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
        resampled); with ``average_last`` > 0 the average of each chain's last
        ``average_last`` MALA iterates instead (an estimate of the posterior mean, not a
        sample).
    forces : torch.Tensor, shape=(P, B, n, d), float64
        Reduced target forces −∇u (1/nm) at the samples (with ``average_last``: the
        average of the forces at those iterates).
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
        x (B, n, d) nm -> (u (B,), −∇u (B, n, d) in 1/nm), float64; an
        :class:`~openmm_dikl.energy.Energy` such as
        :class:`~openmm_dikl.energy.EnergyAndForce`, or a plain callable.
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
    average_last : int
        0: return the last MALA iterate of every chain.  K in [1, n_mala_steps]: return
        the averages of x and −∇u over the last K iterates (iterate averaging, as the
        DiKL code's LJ-13 posterior).  Every estimator linear in (x, −∇u), such as the
        mixed score identity, then becomes the time average of its single-iterate
        values along the chain: lower variance at the same cost.
    jumps : (torch.Tensor, torch.Tensor), optional
        ``(coordinates, half_widths)``: flat indices into one state's ``n·d`` numbers of
        periodic coordinates on windows [−h, h) (e.g. the backbone dihedrals of
        :class:`~openmm_dikl.dikl.spaces.InternalSpace`), and their h.  With
        ``jump_every`` = k > 0, after every k-th MALA step each chain proposes a new
        value, uniform on its window, for one of these coordinates drawn at random,
        accepted by Metropolis–Hastings on the posterior (one evaluation per jump).  A
        uniform proposal is symmetric, so the ratio is the posterior's; the move lets
        chains change basin (a rigid torsional pivot, in internal coordinates) where
        MALA cannot cross a barrier.
    jump_every : int
        0 (default): no jumps.

    Notes
    -----
    The proposal q is proportional to the kernel N(x_t | α x, σ² I) as a function of x, so
    the importance weights are w ∝ exp(−u(x)).  MALA on the posterior uses
    ∇ log p(x | x_t) = −∇u(x) + α (x_t − α x) / σ² and the proposal
    x' = x + h ∇ log p + sqrt(2h) ξ with the Metropolis–Hastings correction (the centred
    noise ξ keeps centred chains centred, where the same ratio holds).  Non-finite
    energies (particle overlaps) get zero weight and are always rejected.  See He et al.,
    "Training neural samplers with reverse diffusive KL divergence" (AISTATS 2025) for
    the posterior and the mixed score identity.

    Attributes
    ----------
    n_evaluations : int
        Configurations whose energy and force were computed (read-only).
    """

    def __init__(self, energy_and_force, n_importance=20, n_ais_steps=0, n_mala_steps=50,
                 n_posterior=1, resample=True, acceptance_range=(0.5, 0.6), adapt_factor=1.1,
                 centre=False, average_last=0, jumps=None, jump_every=0):
        for name, value, low in (("n_importance", n_importance, 1),
                                 ("n_ais_steps", n_ais_steps, 0),
                                 ("n_mala_steps", n_mala_steps, 0),
                                 ("n_posterior", n_posterior, 1),
                                 ("average_last", average_last, 0),
                                 ("jump_every", jump_every, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if average_last > n_mala_steps:
            raise ValueError(f"average_last must be <= n_mala_steps = {n_mala_steps}, got "
                             f"{average_last}")
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
        self.average_last = int(average_last)
        if jump_every and jumps is None:
            raise ValueError("jump_every > 0 needs periodic coordinates to jump on (jumps=...; "
                             "in DiKL: schedule.space='internal' with wide dihedrals)")
        self.jumps = None if jumps is None else tuple(torch.as_tensor(v) for v in jumps)
        self.jump_every = int(jump_every)
        #: Jumps proposed and accepted so far (ints).
        self.jump_counts = [0, 0]
        self._n_evaluations = 0

    @property
    def n_evaluations(self):
        """Configurations whose energy and force were computed so far (int)."""
        return self._n_evaluations

    def _evaluate(self, x):
        """u, f of x (..., n, d) with non-finite results mapped to u = +inf, f = 0."""
        flat = x.reshape((-1,) + x.shape[-2:])
        u, f = self.energy_and_force(flat)
        self._n_evaluations += flat.shape[0]
        u = u.reshape(x.shape[:-2]).to(torch.float64)
        f = f.reshape(x.shape).to(torch.float64)
        bad = ~(torch.isfinite(u) & torch.isfinite(f).flatten(-2).all(-1))
        if bad.any():
            u = torch.where(bad, torch.full_like(u, math.inf), u)
            f = torch.where(bad[..., None, None], torch.zeros_like(f), f)
        return u, f

    def _mala_step(self, x, u, f, conditional, h, generator):
        """One MALA step on the conditional energy for all chains (K, B, n, d).

        ``u``, ``f`` are the target's energies and forces at x, h (B,) the step sizes
        (nm²); returns the new x, u, f and the acceptance probabilities (K, B).
        """
        u_c, f_c = conditional.of(x, u, f)
        x, _, _, accepted, prob = mala_step(
            x, u_c, f_c, conditional, h, generator, event_dims=2,
            noise=lambda shape: gaussian_noise(shape, generator, self.centre))
        u_new, f_new = conditional.last
        return x, torch.where(accepted, u_new, u), select(accepted, f_new, f), prob

    def sample(self, x_t, alpha, sigma, step_size, generator=None, groups=None, start=None):
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
        start : torch.Tensor, shape=(B, n, d), optional
            Warm start (nm): the clean configuration each x_t was made from.  The
            ``n_posterior`` chains of an x_t then start there instead of at importance
            samples (no proposals are drawn; ``ess_fraction`` is 1).  If x_t = α x₀ + σ ε
            with x₀ from the generator, x₀ is an exact draw of the *model's* posterior,
            so the chains start in the right basin; MALA then moves them towards the
            target's posterior, and once the generator matches the target the start is
            already an exact target draw (the estimate is unbiased at the fixed point).

        Returns
        -------
        PosteriorSample
        """
        x_t, alpha, sigma, step_size, groups = _check_inputs(x_t, alpha, sigma, step_size,
                                                             groups)
        if start is not None:
            return self._warm_started(x_t, alpha, sigma, step_size, groups, generator, start)
        x, u, f, log_w = self._annealed_proposals(x_t, alpha, sigma, step_size[groups],
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
            batch = torch.arange(x_t.shape[0]).expand_as(index)
            x, u, f = x[index, batch], u[index, batch], f[index, batch]
            weights = None
        x, f, acceptance, step_size = self._adaptive_mala(
            x, u, f, _ConditionalEnergy(self._evaluate, x_t, alpha, sigma, 1.0), step_size,
            groups, generator)
        return PosteriorSample(x, f, weights, acceptance, step_size, ess_fraction)

    def _jump(self, x, u, f, posterior, generator):
        """One uniform-window Metropolis–Hastings jump of a random periodic coordinate per
        chain (K, B, n, d); returns the new x and the target's u, f there."""
        coordinates, half_widths = self.jumps
        pick = torch.randint(len(coordinates), x.shape[:2], generator=generator)
        width = half_widths.to(x.dtype)[pick]
        value = (2 * torch.rand(x.shape[:2], generator=generator, dtype=x.dtype) - 1) * width
        proposal = x.reshape(x.shape[:2] + (-1,)).clone()
        proposal.scatter_(-1, coordinates[pick][..., None], value[..., None])
        proposal = proposal.reshape(x.shape)
        u_c, _ = posterior.of(x, u, f)
        u_c_new, _ = posterior(proposal)
        u_new, f_new = posterior.last
        log_ratio = torch.nan_to_num(u_c - u_c_new, nan=-math.inf)
        accepted = torch.log(torch.rand(x.shape[:2], generator=generator,
                                        dtype=x.dtype)) < log_ratio
        self.jump_counts[0] += accepted.numel()
        self.jump_counts[1] += int(accepted.sum())
        return (select(accepted, proposal, x), torch.where(accepted, u_new, u),
                select(accepted, f_new, f))

    def _warm_started(self, x_t, alpha, sigma, step_size, groups, generator, start):
        """:meth:`sample` with every chain started at ``start`` (B, n, d)."""
        start = torch.as_tensor(start).detach().to(torch.float64)
        if start.shape != x_t.shape:
            raise ValueError(f"start must have the shape of x_t {tuple(x_t.shape)}, got "
                             f"{tuple(start.shape)}")
        x = start.expand((self.n_posterior,) + tuple(x_t.shape)).clone()
        u, f = self._evaluate(x)
        x, f, acceptance, step_size = self._adaptive_mala(
            x, u, f, _ConditionalEnergy(self._evaluate, x_t, alpha, sigma, 1.0), step_size,
            groups, generator)
        return PosteriorSample(x, f, None, acceptance, step_size,
                               torch.ones(x_t.shape[0], dtype=torch.float64))

    def _annealed_proposals(self, x_t, alpha, sigma, h, generator):
        """K importance proposals from q(x) = N(x_t / α, (σ / α)² I), moved by AIS from q
        (β = 0) to the posterior (β = 1) when ``n_ais_steps`` > 0.

        Returns x (K, B, n, d), the target's u (K, B) and f there, and the log weights
        (K, B); u = +inf (an overlap) gives weight 0.
        """
        shape = (self.n_importance,) + tuple(x_t.shape)
        x = x_t / alpha + (sigma / alpha) * gaussian_noise(shape, generator, self.centre)
        u, f = self._evaluate(x)
        log_w = torch.zeros(shape[:2], dtype=torch.float64)
        n_stages = max(self.n_ais_steps, 1)
        for j in range(1, n_stages + 1):
            log_w = log_w - u / n_stages
            if self.n_ais_steps:
                tempered = _ConditionalEnergy(self._evaluate, x_t, alpha, sigma, j / n_stages)
                x, u, f, _ = self._mala_step(x, u, f, tempered, h, generator)
        return x, u, f, log_w

    def _adaptive_mala(self, x, u, f, posterior, step_size, groups, generator):
        """``n_mala_steps`` MALA steps on the posterior, adapting each group's step size.

        Returns x, f (with ``average_last``: their averages over the last iterates), the
        mean acceptance per x_t (B,) (NaN without steps) and the adapted step sizes (G,).
        """
        acceptance = torch.zeros(len(groups), dtype=torch.float64)
        low, high = self.acceptance_range
        counts = torch.bincount(groups, minlength=len(step_size)).to(torch.float64)
        used = counts > 0
        x_sum, f_sum = torch.zeros_like(x), torch.zeros_like(f)
        for step in range(self.n_mala_steps):
            x, u, f, prob = self._mala_step(x, u, f, posterior, step_size[groups], generator)
            if self.jump_every and (step + 1) % self.jump_every == 0:
                x, u, f = self._jump(x, u, f, posterior, generator)
            if step >= self.n_mala_steps - self.average_last:
                x_sum, f_sum = x_sum + x, f_sum + f
            prob_b = prob.mean(0)
            acceptance += prob_b
            group_acc = torch.zeros_like(step_size).index_add_(0, groups, prob_b)
            group_acc = group_acc / counts.clamp(min=1.0)
            step_size = torch.where(used & (group_acc > high), step_size * self.adapt_factor,
                                    step_size)
            step_size = torch.where(used & (group_acc < low), step_size / self.adapt_factor,
                                    step_size)
        if self.n_mala_steps:
            acceptance /= self.n_mala_steps
        else:
            acceptance.fill_(math.nan)
        if self.average_last:
            x, f = x_sum / self.average_last, f_sum / self.average_last
        return x, f, acceptance, step_size


def _check_inputs(x_t, alpha, sigma, step_size, groups):
    """Inputs of :meth:`PosteriorSampler.sample` as float64 tensors: x_t (B, n, d),
    α and σ (B, 1, 1), a copy of the step sizes (G,), groups (B,) long."""
    x_t = torch.as_tensor(x_t).detach().to(torch.float64)
    if x_t.dim() != 3:
        raise ValueError(f"x_t must have shape (B, n, d), got {tuple(x_t.shape)}")
    n_batch = x_t.shape[0]
    alpha = torch.as_tensor(alpha, dtype=torch.float64).expand(n_batch).reshape(-1, 1, 1)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(n_batch).reshape(-1, 1, 1)
    if not ((alpha > 0).all() and (sigma > 0).all()):
        raise ValueError("alpha and sigma must be positive")
    groups = torch.arange(n_batch) if groups is None else torch.as_tensor(groups,
                                                                           dtype=torch.long)
    step_size = torch.as_tensor(step_size, dtype=torch.float64)
    if step_size.dim() == 0:
        step_size = step_size.expand(int(groups.max()) + 1)
    step_size = step_size.clone()
    if groups.shape != (n_batch,) or groups.min() < 0 or groups.max() >= len(step_size):
        raise ValueError(f"groups must be (B,) = ({n_batch},) indices into step_size "
                         f"(length {len(step_size)})")
    if not (step_size > 0).all():
        raise ValueError("MALA step sizes must be positive")
    return x_t, alpha, sigma, step_size, groups


class _ConditionalEnergy:
    """The tempered posterior π_β(x) ∝ exp(−β u(x)) N(x_t | α x, σ² I) as an energy.

    u_c(x) = β u(x) + |x_t − α x|² / (2σ²) and f_c = −∇u_c = β f(x) + α (x_t − α x) / σ²,
    for chains x of shape (K, B, n, d) (x_t (B, n, d); α, σ (B, 1, 1)).  Calling it
    evaluates the target and keeps that evaluation's (u, f) in :attr:`last`, so the
    caller can carry the target's own energies of the accepted states.
    """

    def __init__(self, evaluate, x_t, alpha, sigma, beta):
        self.evaluate = evaluate
        self.x_t, self.alpha, self.sigma, self.beta = x_t, alpha, sigma, float(beta)
        self.last = None

    def of(self, x, u, f):
        """(u_c, f_c) at x from the target's u (K, B) and f (K, B, n, d) there."""
        resid = self.x_t - self.alpha * x
        u_c = self.beta * u + resid.pow(2).sum((-2, -1)) / (2.0 * self.sigma[..., 0, 0] ** 2)
        return u_c, self.beta * f + self.alpha * resid / self.sigma**2

    def __call__(self, x):
        self.last = self.evaluate(x)
        return self.of(x, *self.last)

"""Batched Diffusive Gibbs Sampling (DiGS; Chen et al., ICML 2024) in torch.

DiGS samples the joint p(y) k(ỹ | y) of the state y and a noisy copy ỹ by Gibbs steps:

1. *Noising*: ỹ ~ k(· | y) (exact).
2. *Denoising*: y ~ p(y | ỹ) ∝ p(y) k(ỹ | y) by
   a. an *initialisation* (Metropolis-within-Gibbs): propose y' from a density
      proportional to y' ↦ k(ỹ | y'); because the proposal is proportional to the kernel
      term, the acceptance probability is min(1, p(y')/p(y)).  This is the move that
      jumps between modes;
   b. ``n_denoise_steps`` MALA or HMC steps on log p(y | ỹ) = −u(y) + log k(ỹ | y).

Both steps leave p(y) k(ỹ | y) invariant, so the marginal chain of y is an exact MCMC for
p ∝ exp(−u).  A *sweep* is one noising + denoising at one noise level; sweeps cycle
through the levels in the order given.  The paper's order x → x̃_{σT} → x → x̃_{σT−1} → …
(largest noise first) is ``alphas=[α_T, …, α_1]`` with α_T the smallest.

Kernels:

* :class:`GaussianKernel` — k(ỹ | y) = N(ỹ; α y, σ² I), σ² = 1 − α² by default (VP),
  with proposal y' ~ N(ỹ/α, (σ/α)² I); on Cartesian positions or, with a ``transform``,
  on (standardised) internal coordinates.
* :class:`TorsionalKernel` — noise on chosen dihedrals only (for molecules):
  θ̃_j ~ wrapped normal WN(θ_j(x), σ_j²); the initialisation sets each θ_j to
  θ_j' ~ WN(θ̃_j, σ_j²) by rigidly rotating the atoms on one side of the torsion bond
  (a pivot move).  See its docstring for why the MH ratio is still p(x')/p(x).

Molecules.  An isotropic Gaussian kernel on Cartesian positions (or on the 60 internal
coordinates of alanine dipeptide) almost never accepts an initialisation large enough
to change a backbone dihedral: for a near-harmonic target the acceptance is about
exp(−d (1/α² − 1)/2) in d dimensions.  The torsional kernel puts the noise where the
slow mode lives; with σ = π (an almost uniform wrapped normal) and one MALA step per
sweep it made ≈ 700 core-to-core φ transitions per 10⁶ force evaluations on alanine
dipeptide in implicit solvent at 300 K, where MALA, HMC, Cartesian DiGS and 1 fs
Langevin made none (``benchmarks/digs_torch.py``).

The kernels live in :mod:`openmm_dikl.samplers.kernels`.

>>> import torch
>>> from openmm_dikl.samplers import DiGSSampler
>>> def gaussian(x):
...     return 0.5 * (x ** 2).sum(-1), -x
>>> sampler = DiGSSampler(gaussian, alphas=[0.5], step_size=0.3,
...                       generator=torch.Generator().manual_seed(0))
>>> result = sampler.run(torch.zeros(200, 2), n_steps=60, burn_in=10)
>>> tuple(result.samples.shape)
(200, 50, 2)
>>> bool(abs(result.samples.var() - 1.0) < 0.1)
True
"""

import logging
import math

import numpy as np
import torch

from ..energy import TransformedEnergy
from .base import Sampler, check_chain_starts
from .kernels import GaussianKernel, TorsionalKernel
from .steps import adapt_step_size, batch_sum, hmc_step, mala_step, metropolis_accept, select

__all__ = ["DiGSSampler"]

logger = logging.getLogger(__name__)


class DiGSSampler(Sampler):
    """Diffusive Gibbs sampler with many chains in torch.

    Parameters
    ----------
    energy : Energy, TargetSystem or callable
        ``energy(x) -> (u (batch,), −∇u (batch, ...))`` in reduced units (any torch
        energy, the OpenMM bridge, ANI; see :func:`~openmm_dikl.energy.as_energy`); a
        target opens its own energy (bridge with ``n_workers``; close with :meth:`close`).
    alphas : sequence of float, optional
        Gaussian-kernel levels α in (0, 1], used in this order (cycled).  Required unless
        ``kernel`` is given.
    n_denoise_steps : int or sequence of int
        MALA/HMC steps per sweep (>= 0), or one count per level (e.g. pure pivot sweeps
        with 0 steps mixed with sweeps that also relax the other coordinates; at least
        one level needs steps for the chain to be ergodic).
    step_size : float
        Initial denoising step: MALA h (units of y squared, e.g. nm²) or HMC ε (units of
        y); adapted per chain and level during burn-in if ``adapt``.
    denoiser : {"mala", "hmc"}
        Denoising MCMC.
    transform : object, optional
        Sample in transformed coordinates y = T(x): needs ``forward(x) -> (y, log_det)``
        and ``inverse(y) -> (x, log_det)`` with log_det = log|det ∂x/∂y| (e.g.
        :class:`~openmm_dikl.internal.InternalTransform`); the density of y is
        exp(−u(x(y)) + log_det(y)).  Only with a Gaussian kernel.
    sigmas : sequence of float, optional
        Gaussian-kernel σ per level (default VP, σ² = 1 − α²).
    kernel : GaussianKernel or TorsionalKernel, optional
        Noising kernel (instead of ``alphas``/``sigmas``).
    mh_init : bool
        Accept initialisations with min(1, p(y')/p(y)) (exact).  False accepts every
        finite proposal: biased, for comparison only.
    n_leapfrog : int
        Leapfrog steps per HMC step.
    adapt : bool
        Adapt step sizes during burn-in (frozen afterwards, keeping exactness).
    target_acceptance : float, optional
        Denoising acceptance targeted by adaptation (0.574 MALA, 0.65 HMC).
    generator : torch.Generator, optional
        Randomness (default seeded with ``seed``).
    seed : int
        Seed used when ``generator`` is None.
    n_workers : int
        Bridge workers when ``energy`` is a target without torch twin.

    Notes
    -----
    ``run(x0, n_steps, ...)`` counts steps in sweeps; the :class:`ChainResult` has
    ``acceptance`` = {``init_acceptance``, ``denoise_acceptance``} (n_levels,) after
    burn-in (denoise: the mean MH probability, NaN for levels without steps) and
    ``statistics`` = {``sweeps``, ``force_evaluations_per_level``, ``step_size``,
    ``levels``}.

    Step sizes adapted during a run's burn-in are kept in ``step_size`` (n_levels,
    n_chains) and reused by the next :meth:`run` with the same number of chains.

    Force evaluations per sweep and chain: 1 (initialisation) + ``n_denoise_steps``
    (MALA) or + ``n_denoise_steps · n_leapfrog`` (HMC) of the sweep's level.  The initialisation needs only
    the energy, but its force is kept for the denoising steps if accepted.
    """


    def __init__(self, energy, alphas=None, n_denoise_steps=5, step_size=None, denoiser="mala",
                 transform=None, sigmas=None, kernel=None, mh_init=True, n_leapfrog=5,
                 adapt=True, target_acceptance=None, generator=None, seed=0, n_workers=1):
        if kernel is None:
            if alphas is None:
                raise ValueError("pass alphas (Gaussian kernel levels) or a kernel")
            kernel = GaussianKernel(alphas, sigmas)
        elif alphas is not None or sigmas is not None:
            raise ValueError("pass either alphas/sigmas or kernel, not both")
        if not isinstance(kernel, (GaussianKernel, TorsionalKernel)):
            raise ValueError(f"kernel must be a GaussianKernel or TorsionalKernel, got "
                             f"{type(kernel).__name__}")
        if transform is not None and isinstance(kernel, TorsionalKernel):
            raise ValueError("the torsional kernel acts on Cartesian positions; use no transform")
        if denoiser not in ("mala", "hmc"):
            raise ValueError(f"denoiser must be 'mala' or 'hmc', got {denoiser!r}")
        if step_size is None or not (float(step_size) > 0 and math.isfinite(float(step_size))):
            raise ValueError(f"step_size must be a finite value > 0, got {step_size!r}")
        steps = np.atleast_1d(np.asarray(n_denoise_steps))
        if steps.ndim != 1 or len(steps) not in (1, kernel.n_levels) \
                or not np.issubdtype(steps.dtype, np.integer) or (steps < 0).any():
            raise ValueError(f"n_denoise_steps must be an integer >= 0 or one per level "
                             f"({kernel.n_levels}), got {n_denoise_steps!r}")
        if int(n_leapfrog) < 1:
            raise ValueError(f"n_leapfrog must be >= 1, got {n_leapfrog}")
        super().__init__(energy, generator=generator, seed=seed, n_workers=n_workers)
        self.target = self.energy.target  # shapes are checked against it, if known
        self.kernel, self.transform = kernel, transform
        self.n_denoise_steps = [int(k) for k in np.broadcast_to(steps, (kernel.n_levels,))]
        self.n_leapfrog = int(n_leapfrog)
        self.denoiser, self.mh_init, self.adapt = denoiser, bool(mh_init), bool(adapt)
        self.target_acceptance = float(target_acceptance if target_acceptance is not None
                                       else (0.574 if denoiser == "mala" else 0.65))
        self.initial_step_size = float(step_size)
        self.step_size = None  # (n_levels, n_chains) after a run
        # the density of the sampled variable: with a transform, u(x(y)) − log|det ∂x/∂y|
        self._sampled_energy = (self.energy if transform is None
                                else TransformedEnergy(self.energy, transform))
        self._counts = None

    @property
    def force_evaluations_per_step(self):
        """Evaluations per sweep and chain, averaged over the cycle of levels (float)."""
        per_denoise = self.n_leapfrog if self.denoiser == "hmc" else 1
        return sum(1 + k * per_denoise for k in self.n_denoise_steps) / self.kernel.n_levels

    # -------------------------------------------------------------- energies on y
    def _energy(self, y):
        """Reduced energy and force of the sampled variable y (Cartesian or transformed)."""
        return self._evaluate(y, self._sampled_energy)

    def _positions(self, state):
        y = state[0]
        return y if self.transform is None else self.transform.inverse(y)[0].detach()

    def _reduced_energies(self, state):
        y, u = state[0], state[1]
        return u if self.transform is None else u + self._sampled_energy.log_det(y)

    def _check_x0(self, x0):
        x0 = check_chain_starts(x0)
        if self.target is not None:
            expected = (self.target.n_particles, self.target.spatial_dim)
            if x0.dim() != 3 or tuple(x0.shape[1:]) != expected:
                raise ValueError(f"x0 must have shape (n_chains, {expected[0]}, {expected[1]}) "
                                 f"in nm, got {tuple(x0.shape)}")
        if isinstance(self.kernel, TorsionalKernel) and (x0.dim() != 3 or x0.shape[-1] != 3):
            raise ValueError(f"the torsional kernel needs positions (n_chains, n_atoms, 3), "
                             f"got {tuple(x0.shape)}")
        return x0

    def _denoise_step(self, y, uc, fc, energy_fn, h):
        if self.denoiser == "mala":
            return mala_step(y, uc, fc, energy_fn, h, self.generator)
        return hmc_step(y, uc, fc, energy_fn, h, self.n_leapfrog, self.generator)

    # -------------------------------------------------------------- one sweep
    def _start(self, x0):
        n_chains, n_levels = x0.shape[0], self.kernel.n_levels
        if self.step_size is None or self.step_size.shape != (n_levels, n_chains):
            self.step_size = torch.full((n_levels, n_chains), self.initial_step_size,
                                        dtype=torch.float64)
        self._counts = {name: np.zeros(n_levels) for name in
                        ("init_accepted", "sweeps", "denoise_prob", "evaluations")}
        y = x0 if self.transform is None else self.transform.forward(x0)[0].detach()
        u, f = self._energy(y)
        bad = torch.isnan(u) | (u == -math.inf)  # +inf (an overlap) leaves at the first
        if bad.any():                              # finite proposal; NaN and -inf cannot
            raise ValueError(f"x0 has energy {float(u[bad][0])} in chain "
                             f"{int(torch.nonzero(bad)[0])}")
        return y, u, f

    def _initialise(self, y, u, f, y_tilde, level):
        """Initialisation: proposal ∝ k(ỹ | y'), accepted with min(1, p(y')/p(y))."""
        y_new = self.kernel.propose(y, y_tilde, level, self.generator)
        u_new, f_new = self._energy(y_new)
        if self.mh_init:
            accepted, _ = metropolis_accept(u - u_new, self.generator)
        else:
            accepted = torch.isfinite(u_new) & torch.isfinite(batch_sum(f_new))
        return (select(accepted, y_new, y), torch.where(accepted, u_new, u),
                select(accepted, f_new, f), accepted)

    def _step(self, sweep, state, burn_in):
        kernel, level = self.kernel, sweep % self.kernel.n_levels
        before = self._force_evaluations
        y, u, f = state
        y_tilde = kernel.noise(y, level, self.generator)
        y, u, f, accepted = self._initialise(y, u, f, y_tilde, level)
        # denoising on −u(y) + log k(ỹ | y)
        e_k, f_k = kernel.energy(y, y_tilde, level)
        uc, fc = u + e_k, f + f_k

        def conditional(z):
            uz, fz = self._energy(z)
            ez, gz = kernel.energy(z, y_tilde, level)
            return uz + ez, fz + gz

        h, n_steps = self.step_size, self.n_denoise_steps[level]
        prob_sum = torch.zeros(y.shape[0], dtype=torch.float64)
        for _ in range(n_steps):
            y, uc, fc, _, prob = self._denoise_step(y, uc, fc, conditional, h[level])
            prob_sum += torch.nan_to_num(prob, nan=0.0)
            if sweep < burn_in and self.adapt:
                h[level] = adapt_step_size(h[level], prob, self.target_acceptance)
        e_k, f_k = kernel.energy(y, y_tilde, level)
        counts = self._counts
        counts["evaluations"][level] += self._force_evaluations - before
        if sweep >= burn_in:
            counts["init_accepted"][level] += float(accepted.double().mean())
            counts["sweeps"][level] += 1
            if n_steps:
                counts["denoise_prob"][level] += float(prob_sum.mean()) / n_steps
        return y, uc - e_k, fc - f_k

    @property
    def statistics(self):
        """Running ``init_acceptance`` and ``denoise_acceptance`` per level (NaN: none yet)."""
        counts = self._counts
        if counts is None:
            return {"init_acceptance": np.zeros(0), "denoise_acceptance": np.zeros(0)}
        sweeps = np.where(counts["sweeps"] > 0, counts["sweeps"], np.nan)
        no_steps = np.array(self.n_denoise_steps) == 0
        return {"init_acceptance": counts["init_accepted"] / sweeps,
                "denoise_acceptance": np.where(no_steps, np.nan, counts["denoise_prob"] / sweeps)}

    def _details(self):
        return {"sweeps": self._counts["sweeps"].astype(int),
                "force_evaluations_per_level": self._counts["evaluations"].astype(np.int64),
                "step_size": self.step_size.clone(),
                "levels": [self.kernel.describe(i) for i in range(self.kernel.n_levels)]}

"""Batched MCMC in torch: MALA and HMC on many independent chains.

Both samplers work on a reduced energy u(x) = U(x)/kT through the
:class:`~openmm_dikl.energy.Energy` protocol (positions in nm for molecular targets, u
dimensionless, forces −∇u in 1/nm, float64).  Chains are independent: each has its own
Metropolis–Hastings accept/reject and its own step size, adapted during burn-in only
(after burn-in the kernel is fixed, so the chains are exact MCMC for p ∝ exp(−u)).
Randomness comes from an explicit :class:`torch.Generator`.  Force evaluations are
counted per configuration: a call on a batch of B configurations counts B.

>>> import torch
>>> from openmm_dikl.samplers import MALA
>>> def gaussian(x):
...     return 0.5 * (x ** 2).sum(-1), -x
>>> sampler = MALA(gaussian, step_size=0.5, generator=torch.Generator().manual_seed(0))
>>> result = sampler.run(torch.zeros(100, 2), n_steps=200, burn_in=50)
>>> tuple(result.samples.shape)
(100, 150, 2)
>>> bool(abs(result.samples.var() - 1.0) < 0.1)
True
"""
import numpy as np
import torch

from .base import Sampler
from .steps import adapt_step_size, hmc_step, mala_step

__all__ = ["MALA", "HMC"]


class _AdaptiveMCMC(Sampler):
    """MALA / HMC: one proposal per step and chain, per-chain step sizes adapted in burn-in."""

    def __init__(self, energy, step_size, generator=None, adapt=True, target_acceptance=0.574,
                 adapt_rate=0.05, seed=0, n_workers=1):
        super().__init__(energy, generator=generator, seed=seed, n_workers=n_workers)
        step = torch.as_tensor(step_size, dtype=torch.float64)
        if not torch.isfinite(step).all() or (step <= 0).any():
            raise ValueError(f"step_size must be finite and > 0, got {step_size!r}")
        if not 0.0 < target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
        self.step_size = step
        self.adapt = bool(adapt)
        self.target_acceptance = float(target_acceptance)
        self.adapt_rate = float(adapt_rate)
        self._prob_sum, self._n_counted = None, 0

    def _start(self, x0):
        n = x0.shape[0]
        h = self.step_size.expand(n).clone() if self.step_size.dim() == 0 else self.step_size.clone()
        if h.shape != (n,):
            raise ValueError(f"step_size must be a scalar or have shape ({n},)")
        self.step_size = h
        self._prob_sum, self._n_counted = torch.zeros(n, dtype=torch.float64), 0
        u, f = self._evaluate(x0)
        return x0, u, f

    def _step(self, step, state, burn_in):
        x, u, f, _, prob = self._propose(*state, self.step_size)
        if step < burn_in:
            if self.adapt:
                self.step_size = adapt_step_size(self.step_size, prob, self.target_acceptance,
                                                 self.adapt_rate)
        else:
            self._prob_sum += prob
            self._n_counted += 1
        return x, u, f

    def _per_chain_acceptance(self):
        if self._prob_sum is None or not self._n_counted:
            n = 0 if self._prob_sum is None else len(self._prob_sum)
            return np.full(n, np.nan)
        return (self._prob_sum / self._n_counted).numpy()

    @property
    def statistics(self):
        """Running mean acceptance probability after burn-in, averaged over chains."""
        per_chain = self._per_chain_acceptance()
        return {"acceptance": np.float64(per_chain.mean()) if per_chain.size else np.nan}

    def _acceptance(self):
        """Mean acceptance probability per chain after burn-in (n_chains,)."""
        return {"acceptance": self._per_chain_acceptance()}

    def _details(self):
        return {"step_size": self.step_size.clone()}


class MALA(_AdaptiveMCMC):
    """Batched Metropolis-adjusted Langevin algorithm.

    Parameters
    ----------
    energy : Energy, TargetSystem or callable
        ``energy(x) -> (u (batch,), −∇u (batch, ...))`` in reduced units (see
        :func:`~openmm_dikl.energy.as_energy`).
    step_size : float or torch.Tensor, shape=(n_chains,)
        Initial step h (units of x squared, e.g. nm²): x' = x + h f + sqrt(2h) ξ.
    generator : torch.Generator, optional
        Source of randomness (default: seeded with ``seed``).
    adapt : bool
        Adapt h per chain during burn-in toward ``target_acceptance``.
    target_acceptance : float
        Default 0.574 (optimal for MALA).
    adapt_rate : float
        Robbins–Monro rate of :func:`~openmm_dikl.samplers.steps.adapt_step_size`.
    seed : int
        Seed when ``generator`` is None.
    n_workers : int
        Bridge workers when ``energy`` is a target without torch twin.

    Notes
    -----
    One force evaluation per step and chain.  After a run ``step_size`` holds the
    frozen per-chain step sizes, so a second run with as many chains continues with them.
    """

    @property
    def force_evaluations_per_step(self):
        """1 (one MALA proposal per step and chain)."""
        return 1

    def _propose(self, x, u, f, h):
        return mala_step(x, u, f, self._evaluate, h, self.generator)


class HMC(_AdaptiveMCMC):
    """Batched Hamiltonian Monte Carlo (unit mass, leapfrog, per-chain MH).

    Parameters
    ----------
    energy : Energy, TargetSystem or callable
        As :class:`MALA`.
    step_size : float or torch.Tensor, shape=(n_chains,)
        Initial leapfrog step ε (units of x).
    n_leapfrog : int
        Leapfrog steps per trajectory (force evaluations per step and chain).
    generator, adapt, adapt_rate, seed, n_workers
        As :class:`MALA`.
    target_acceptance : float
        Default 0.65.
    """

    def __init__(self, energy, step_size, n_leapfrog=10, generator=None, adapt=True,
                 target_acceptance=0.65, adapt_rate=0.05, seed=0, n_workers=1):
        super().__init__(energy, step_size, generator, adapt, target_acceptance, adapt_rate,
                         seed, n_workers)
        if int(n_leapfrog) < 1:
            raise ValueError(f"n_leapfrog must be >= 1, got {n_leapfrog}")
        self.n_leapfrog = int(n_leapfrog)

    @property
    def force_evaluations_per_step(self):
        """``n_leapfrog`` (one force per leapfrog step)."""
        return self.n_leapfrog

    def _propose(self, x, u, f, h):
        return hmc_step(x, u, f, self._evaluate, h, self.n_leapfrog, self.generator)

"""The sampler contract: one base class, one result type, one callback signature.

Every torch sampler of the package (:class:`~openmm_dikl.samplers.MALA`,
:class:`~openmm_dikl.samplers.HMC`, :class:`~openmm_dikl.samplers.DiGSSampler`) is a
:class:`Sampler`: it runs many independent chains on one :class:`~openmm_dikl.energy.Energy`,
declares its cost in :attr:`Sampler.force_evaluations_per_step` (per chain), counts what
it spends in :attr:`Sampler.force_evaluations`, and returns a :class:`ChainResult` from
:meth:`Sampler.run`.  The same result type is returned by
:func:`~openmm_dikl.samplers.run_sampler` (with the files written) and
:func:`~openmm_dikl.samplers.refine_samples`.

A callback passed to ``run`` is called after every step as

    callback(step, positions, reduced_energies, statistics)

with the step index (0-based), the positions of all chains (n_chains, ...) in nm, their
reduced energies u(x) (n_chains,) in kT, and the running statistics (dict of str ->
numpy array, e.g. acceptance rates; NaN until counted after burn-in).
"""
import dataclasses
import math
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..energy import as_energy
from ..units import as_nm_tensor

__all__ = ["Sampler", "ChainResult", "SamplingError"]


class SamplingError(RuntimeError):
    """A sampler met a non-finite energy (a blow-up)."""


@dataclasses.dataclass
class ChainResult:
    """Outcome of a sampler run (all chains).

    Attributes
    ----------
    n_steps : int
        Steps (MCMC steps, DiGS sweeps or integrator steps) taken per chain.
    force_evaluations : int
        Energy + force evaluations spent in total (all chains, the start included).
    acceptance : dict of str -> numpy.ndarray
        Acceptance statistics after burn-in: ``acceptance`` (n_chains,) for MALA / HMC;
        ``init_acceptance`` and ``denoise_acceptance`` (n_levels,) for DiGS;
        ``exchange_acceptance`` (n_replicas − 1,) for parallel tempering.
    final_positions : torch.Tensor, shape=(n_chains, ...), optional
        Last state of every chain (nm), to continue a run.
    final_reduced_energies : torch.Tensor, shape=(n_chains,), optional
        u(x) of the last states (kT).
    initial_reduced_energies : torch.Tensor, shape=(n_chains,), optional
        u(x) of the starting states (kT; +inf where a start overlaps: such a chain takes
        the first proposal of finite energy).
    samples : torch.Tensor, shape=(n_chains, n_kept, ...), optional
        Kept states (nm), None with ``keep_samples=False``.
    reduced_energies : torch.Tensor, shape=(n_chains, n_kept), optional
        u(x) of the kept states (kT).
    statistics : dict
        Further per-method details (step sizes, evaluations per level, level labels).
    paths : dict
        Files written (``trajectory``, ``topology``, ``log``) by
        :func:`~openmm_dikl.samplers.run_sampler`; empty otherwise.
    n_frames : int
        Frames written to ``paths["trajectory"]`` (0 if none).
    """

    n_steps: int
    force_evaluations: int
    acceptance: dict
    final_positions: Optional[torch.Tensor] = None
    final_reduced_energies: Optional[torch.Tensor] = None
    initial_reduced_energies: Optional[torch.Tensor] = None
    samples: Optional[torch.Tensor] = None
    reduced_energies: Optional[torch.Tensor] = None
    statistics: dict = dataclasses.field(default_factory=dict)
    paths: dict = dataclasses.field(default_factory=dict)
    n_frames: int = 0

    def __repr__(self):
        shape = None if self.samples is None else tuple(self.samples.shape)
        rates = {k: np.round(np.nanmean(v), 3).item() if np.size(v) else None
                 for k, v in self.acceptance.items()}
        return (f"ChainResult(n_steps={self.n_steps}, force_evaluations="
                f"{self.force_evaluations}, samples={shape}, acceptance={rates})")


def check_chain_starts(x0, name="x0"):
    """x0 (n_chains, ...) as a finite float64 tensor in nm (a copy)."""
    x0 = as_nm_tensor(x0, name)
    if x0.dim() < 2 or x0.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n_chains, ...) with n_chains >= 1, "
                         f"got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x0.clone()


class Sampler:
    """Base class of the batched torch samplers (many independent chains).

    Subclasses set up a run in :meth:`_start` and advance every chain by one step in
    :meth:`_step`; this class owns the loop, the budget counter, the progress bar
    (in force evaluations), sample keeping, the callback and the result.

    Parameters
    ----------
    energy : Energy, TargetSystem or callable
        ``energy(x) -> (u (batch,), −∇u)`` in reduced units (see
        :func:`~openmm_dikl.energy.as_energy`); a target opens its own energy (closed by
        :meth:`close`).
    generator : torch.Generator, optional
        Randomness (default seeded with ``seed``).
    seed : int
        Seed used when ``generator`` is None.
    n_workers : int
        Bridge workers when ``energy`` is a target without torch twin.
    """

    def __init__(self, energy, generator=None, seed=0, n_workers=1):
        self.energy, self._owns_energy = as_energy(energy, n_workers)
        self.generator = generator if generator is not None else \
            torch.Generator().manual_seed(int(seed))
        self._force_evaluations = 0

    # ------------------------------------------------------------------ contract
    @property
    def force_evaluations_per_step(self):
        """Energy + force evaluations per step and chain (float; averaged over a cycle)."""
        raise NotImplementedError

    @property
    def force_evaluations(self):
        """Energy + force evaluations spent by this sampler since construction (int)."""
        return self._force_evaluations

    def _start(self, x0):
        """Set up a run from checked starts x0; returns the state (evaluates u, f at x0)."""
        raise NotImplementedError

    def _step(self, step, state, burn_in):
        """Advance every chain by one step; returns the new state."""
        raise NotImplementedError

    def _positions(self, state):
        """Cartesian positions (n_chains, ...) in nm of a state."""
        return state[0]

    def _reduced_energies(self, state):
        """u(x) (n_chains,) in kT of a state."""
        return state[1]

    @property
    def statistics(self):
        """Running statistics of the current run (dict of str -> numpy array or float)."""
        return {}

    def _acceptance(self):
        """Acceptance statistics of the finished run for :attr:`ChainResult.acceptance`."""
        return self.statistics

    def _details(self):
        return {}

    # ------------------------------------------------------------------ engine
    def _evaluate(self, x, energy=None):
        """Energy + force of a batch (of ``energy``, default the sampler's), counted in
        :attr:`force_evaluations`."""
        self._force_evaluations += int(x.shape[0])
        return (self.energy if energy is None else energy)(x)

    def _check_x0(self, x0):
        return check_chain_starts(x0)

    def run(self, x0, n_steps, burn_in=0, thin=1, keep_samples=True, progress=False,
            callback=None):
        """Run all chains for ``n_steps`` steps.

        Parameters
        ----------
        x0 : torch.Tensor or openmm.unit.Quantity, shape=(n_chains, ...)
            Initial states (nm for molecules; Quantities are converted), finite.
        n_steps : int
            Steps per chain, burn-in included.
        burn_in : int
            Initial steps whose states are not kept and not counted in the acceptance
            (step sizes adapt during them where the sampler adapts).
        thin : int
            Keep one state every ``thin`` steps after burn-in.
        keep_samples : bool
            Store the kept states (False: only the final state; use ``callback``).
        progress : bool
            Show a progress bar counting force evaluations.
        callback : callable, optional
            ``callback(step, positions, reduced_energies, statistics)`` after every
            step (see the module docstring).

        Returns
        -------
        ChainResult

        Raises
        ------
        ValueError
            On non-finite or wrongly shaped x0, an empty batch or bad step counts.
        """
        x0 = self._check_x0(x0)
        n_steps, burn_in, thin = int(n_steps), int(burn_in), int(thin)
        if n_steps < 1 or not 0 <= burn_in < n_steps or thin < 1:
            raise ValueError(f"need n_steps >= 1, 0 <= burn_in < n_steps and thin >= 1, got "
                             f"n_steps={n_steps}, burn_in={burn_in}, thin={thin}")
        n_chains, spent = x0.shape[0], self._force_evaluations
        total = n_chains * (1 + n_steps * self.force_evaluations_per_step)
        kept, kept_u = [], []
        with tqdm(total=math.ceil(total), disable=not progress, unit="evals",
                  desc=type(self).__name__) as bar:
            state = self._start(x0)
            bar.update(self._force_evaluations - spent)
            initial_u = self._reduced_energies(state).clone()
            for step in range(n_steps):
                before = self._force_evaluations
                state = self._step(step, state, burn_in)
                bar.update(self._force_evaluations - before)
                if keep_samples and step >= burn_in and (step - burn_in) % thin == 0:
                    kept.append(self._positions(state).clone())
                    kept_u.append(self._reduced_energies(state).clone())
                if callback is not None:
                    callback(step, self._positions(state), self._reduced_energies(state),
                             self.statistics)
        return ChainResult(
            n_steps=n_steps, force_evaluations=self._force_evaluations - spent,
            acceptance=self._acceptance(), final_positions=self._positions(state).clone(),
            final_reduced_energies=self._reduced_energies(state).clone(),
            initial_reduced_energies=initial_u,
            samples=torch.stack(kept, 1) if kept else None,
            reduced_energies=torch.stack(kept_u, 1) if kept else None,
            statistics=self._details())

    # ------------------------------------------------------------------ resources
    def close(self):
        """Release an energy the sampler opened itself (from a TargetSystem); idempotent."""
        if self._owns_energy:
            self.energy.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False

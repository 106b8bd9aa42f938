"""Diffusive Gibbs sampling as an openmmtools MCMC move.

:class:`DiffusiveGibbsMove` runs :class:`~openmm_dikl.samplers.integrators.DiffusiveGibbsIntegrator`
through the openmmtools ``MCMCMove`` protocol, so DiGS can be combined with other moves
(``SequenceMove``), used in ``MCMCSampler`` or in multistate samplers.

>>> import openmm
>>> from openmmtools import cache, states
>>> from openmm_dikl import systems
>>> from openmm_dikl.samplers import DiffusiveGibbsMove
>>> target = systems.get("mog40")
>>> thermodynamic_state = states.ThermodynamicState(target.system, target.temperature)
>>> sampler_state = states.SamplerState(target.positions)
>>> context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
>>> move = DiffusiveGibbsMove(alphas=[0.1], step_size=0.1, planar=True, n_steps=20)
>>> move.apply(thermodynamic_state, sampler_state, context_cache)
>>> int(move.statistics["init_proposed"][0])
20
"""
import copy
import logging

import numpy as np
from openmm import unit
from openmmtools.integrators import ThermostatedIntegrator
from openmmtools.mcmc import BaseIntegratorMove

from ..units import check_samplable
from .integrators import DiffusiveGibbsIntegrator

__all__ = ["DiffusiveGibbsMove"]

logger = logging.getLogger(__name__)

_COUNTERS = ("init_accepted", "init_proposed", "denoise_accepted", "denoise_proposed")


class DiffusiveGibbsMove(BaseIntegratorMove):
    """An MCMC move that runs ``n_steps`` DiGS sweeps.

    Each call of :meth:`apply` builds a :class:`DiffusiveGibbsIntegrator` for the
    thermodynamic state's temperature, propagates the sampler state by ``n_steps``
    sweeps and adds the per-level acceptance counters to :attr:`statistics`.  The move
    remembers which noise level comes next, so consecutive applications continue the
    schedule cycle (level 0, 1, …, n_levels − 1, 0, …) even though the Context cache
    hands out integrators with fresh globals.

    Parameters
    ----------
    alphas : sequence of float, shape=(n_levels,)
        Signal scales α of the noise schedule, each in (0, 1].
    sigmas : openmm.unit.Quantity or sequence of float, shape=(n_levels,), optional
        Noise standard deviations (nm); default sqrt(1 − α²) nm.
    n_denoise_steps : int
        MALA/GHMC steps per sweep.
    step_size : openmm.unit.Quantity or float
        MALA step size ε (nm²).
    denoiser : {"mala", "ghmc"}
        Denoising kernel.
    momentum_retention : float
        GHMC momentum retention in [0, 1).
    mh_init : bool
        Metropolis test on the initialisation (False is biased; for comparison only).
    planar : bool
        Never move z (for the 2-D targets).
    blocks : sequence of sequences of int, optional
        Blocked kernel: level k moves only the particles of ``blocks[k]`` (see
        :class:`~openmm_dikl.samplers.integrators.DiffusiveGibbsIntegrator`).
    n_steps : int
        Sweeps per application.
    random_seed : int, optional
        Seed of the integrator's random numbers, applied when a Context is created for
        it (a cached Context continues its stream); None or 0: OpenMM picks one.
    **kwargs
        Passed to :class:`openmmtools.mcmc.BaseIntegratorMove` (e.g.
        ``n_restart_attempts``).  Velocities are never reassigned: DiGS does not use them.

    Attributes
    ----------
    statistics : dict of str to numpy.ndarray, shape=(n_levels,), dtype=int
        Accumulated ``init_accepted``, ``init_proposed``, ``denoise_accepted`` and
        ``denoise_proposed`` counts per level.
    level : int
        The level index the next sweep uses.

    Raises
    ------
    ValueError
        For invalid schedule or step arguments (at construction), and from
        :meth:`apply` if the System has constraints or virtual sites.

    Notes
    -----
    The move checks the System with
    :func:`openmm_dikl.units.check_samplable` before every integration.  Pass
    ``context_cache`` explicitly (e.g. ``ContextCache(platform=Reference)``); with
    ``None`` openmmtools falls back to its global cache.
    """

    def __init__(self, alphas, sigmas=None, n_denoise_steps=5, step_size=1e-4,
                 denoiser="mala", momentum_retention=0.9, mh_init=True, planar=False,
                 n_steps=1, blocks=None, random_seed=None, **kwargs):
        if kwargs.get("reassign_velocities"):
            raise ValueError("DiffusiveGibbsMove does not use velocities; "
                             "reassign_velocities must be False")
        kwargs["reassign_velocities"] = False
        if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        super().__init__(int(n_steps), **kwargs)
        # Validate once by building an integrator (the temperature is irrelevant here).
        probe = DiffusiveGibbsIntegrator(300.0, alphas, sigmas=sigmas,
                                         n_denoise_steps=n_denoise_steps, step_size=step_size,
                                         denoiser=denoiser, momentum_retention=momentum_retention,
                                         mh_init=mh_init, planar=planar, blocks=blocks)
        self.alphas = probe.alphas
        self.blocks = None if blocks is None else [[int(i) for i in b] for b in blocks]
        self.sigmas = probe.sigmas.value_in_unit(unit.nanometer)
        self.n_denoise_steps = probe.n_denoise_steps
        self.step_size = probe.step_size.value_in_unit(unit.nanometer ** 2)
        self.denoiser = denoiser
        self.momentum_retention = float(momentum_retention)
        self.mh_init = bool(mh_init)
        self.planar = bool(planar)
        if random_seed is not None and (isinstance(random_seed, bool) or
                                        int(random_seed) != random_seed or random_seed < 0):
            raise ValueError(f"random_seed must be a non-negative integer, got {random_seed!r}")
        self.random_seed = None if random_seed is None else int(random_seed)
        self.level = 0
        self.reset_statistics()

    # ------------------------------------------------------------------ statistics
    @property
    def n_levels(self):
        """Number of noise levels (int)."""
        return len(self.alphas)

    @property
    def statistics(self):
        """Per-level acceptance counters (dict of int arrays, shape (n_levels,))."""
        return {name: values.copy() for name, values in self._statistics.items()}

    @statistics.setter
    def statistics(self, value):
        missing = [name for name in _COUNTERS if name not in value]
        if missing:
            raise ValueError(f"statistics is missing {missing}")
        stats = {}
        for name in _COUNTERS:
            array = np.asarray(value[name], dtype=np.int64)
            if array.shape != (self.n_levels,):
                raise ValueError(f"statistics[{name!r}] must have shape ({self.n_levels},), "
                                 f"got {array.shape}")
            stats[name] = array
        self._statistics = stats

    def reset_statistics(self):
        """Set all accumulated counters to zero."""
        self._statistics = {name: np.zeros(self.n_levels, dtype=np.int64) for name in _COUNTERS}

    @property
    def acceptance_rates(self):
        """Acceptance rates per level from :attr:`statistics`.

        Returns
        -------
        dict of str to numpy.ndarray, shape=(n_levels,)
            ``initialisation`` and ``denoising`` rates in [0, 1] (NaN without proposals).
        """
        s = self._statistics
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"initialisation": s["init_accepted"] / s["init_proposed"],
                    "denoising": s["denoise_accepted"] / s["denoise_proposed"]}

    # ------------------------------------------------------------------ BaseIntegratorMove
    def _get_integrator(self, thermodynamic_state):
        """A new DiffusiveGibbsIntegrator at the state's temperature, at the next level."""
        integrator = DiffusiveGibbsIntegrator(
            thermodynamic_state.temperature, self.alphas, sigmas=self.sigmas,
            n_denoise_steps=self.n_denoise_steps, step_size=self.step_size,
            denoiser=self.denoiser, momentum_retention=self.momentum_retention,
            mh_init=self.mh_init, planar=self.planar, blocks=self.blocks)
        integrator.level = self.level
        if self.random_seed:
            integrator.setRandomNumberSeed(self.random_seed)
        return integrator

    def _before_integration(self, context, thermodynamic_state):
        """Refuse unsupported Systems; start the integrator at our level with zero counters."""
        check_samplable(context.getSystem(), what="DiffusiveGibbsMove")
        integrator = context.getIntegrator()
        ThermostatedIntegrator.restore_interface(integrator)
        integrator.reset_statistics()
        integrator.level = self.level
        if self.blocks is not None:
            # a cached Context may hold another blocked move's integrator: openmmtools
            # matches integrators without their per-DOF values, so set our masks
            n_particles = context.getSystem().getNumParticles()
            if max(max(block) for block in self.blocks) >= n_particles:
                raise ValueError(f"blocks name particle {max(map(max, self.blocks))} but the "
                                 f"System has {n_particles} particles")
            integrator.set_blocks(self.blocks, n_particles)
            integrator.setGlobalVariableByName("blocks_sized", 1)

    def _after_integration(self, context, thermodynamic_state):
        """Add the integrator's counters to :attr:`statistics`; remember the next level."""
        integrator = context.getIntegrator()
        ThermostatedIntegrator.restore_interface(integrator)
        counts = integrator.acceptance_counts
        for name in _COUNTERS:
            self._statistics[name] += counts[name]
        self.level = integrator.level

    # ------------------------------------------------------------------ serialization
    def __getstate__(self):
        serialization = super().__getstate__()
        serialization.update(
            alphas=[float(a) for a in self.alphas],
            sigmas=[float(s) for s in self.sigmas],
            n_denoise_steps=self.n_denoise_steps,
            step_size=self.step_size,
            denoiser=self.denoiser,
            momentum_retention=self.momentum_retention,
            mh_init=self.mh_init,
            planar=self.planar,
            blocks=self.blocks,
            random_seed=self.random_seed,
            level=self.level,
            statistics={name: [int(v) for v in values]
                        for name, values in self._statistics.items()})
        return serialization

    def __setstate__(self, serialization):
        super().__setstate__(serialization)
        self.alphas = np.asarray(serialization["alphas"], dtype=np.float64)
        self.sigmas = np.asarray(serialization["sigmas"], dtype=np.float64)
        self.n_denoise_steps = int(serialization["n_denoise_steps"])
        self.step_size = float(serialization["step_size"])
        self.denoiser = serialization["denoiser"]
        self.momentum_retention = float(serialization["momentum_retention"])
        self.mh_init = bool(serialization["mh_init"])
        self.planar = bool(serialization["planar"])
        self.blocks = serialization.get("blocks")
        self.random_seed = serialization.get("random_seed")
        self.level = int(serialization["level"])
        self.statistics = copy.deepcopy(serialization["statistics"])

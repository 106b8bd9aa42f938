"""Torsional Diffusive Gibbs sampling for any peptide or protein, in OpenMM workflows.

* :class:`TorsionalDiffusiveGibbsMove` — an openmmtools ``MCMCMove``: drop it into
  ``MCMCSampler``, a ``SequenceMove`` with ``LangevinDynamicsMove``, or
  ``ReplicaExchangeSampler`` (DiGS + replica exchange).
* :class:`TorsionalDiffusiveGibbsSimulation` — an ``app.Simulation`` whose ``step(n)`` runs
  n sweeps, so ``DCDReporter`` and ``StateDataReporter`` work as in MD.

Both run :class:`~openmm_dikl.samplers.torsional.TorsionalDiGSEngine` (the method, its
exactness argument and its force-evaluation count are documented there) on the torsions of
:func:`~openmm_dikl.systems.torsions.select_torsions`: by default the backbone φ and ψ of
every residue, one torsion per level.  Constraints (``HBonds``) are supported; virtual
sites are refused.  In explicit solvent a pivot drags the solute through water and is
rarely accepted (measurements in :func:`~openmm_dikl.samplers.torsional.low_acceptance_message`):
the move warns when a level's initialisation acceptance stays below 1 % after 100
attempts.

>>> import openmm
>>> from openmmtools import states
>>> from openmm_dikl import systems
>>> from openmm_dikl.samplers import TorsionalDiffusiveGibbsMove
>>> ala2 = systems.get("alanine_dipeptide_implicit")
>>> thermodynamic_state = states.ThermodynamicState(ala2.system, ala2.temperature)
>>> sampler_state = states.SamplerState(ala2.positions)
>>> move = TorsionalDiffusiveGibbsMove(ala2.topology, n_sweeps=2, random_seed=1)
>>> move.apply(thermodynamic_state, sampler_state)
>>> [int(n) for n in move.statistics["init_proposed"]]  # phi, psi: one pivot per sweep each
[2, 2]
"""
import copy
import logging
import math

import numpy as np
import openmm
from openmm import app, unit
from openmmtools.mcmc import MCMCMove

from ..seeding import derived_seed
from ..systems.torsions import Torsion, select_torsions, torsion_levels
from .torsional import (_COUNTERS, TorsionalDiGSEngine, acceptance_rates, as_picoseconds,
                         level_sigmas, low_acceptance_message)

__all__ = ["TorsionalDiffusiveGibbsMove", "TorsionalDiffusiveGibbsSimulation"]

logger = logging.getLogger(__name__)


class _TorsionalSettings:
    """Torsions, levels and kernel settings shared by the move and the Simulation."""

    def _configure(self, topology, torsions, grouping, sigmas, n_denoise_steps, timestep):
        self.torsions = select_torsions(topology, torsions)
        self.n_atoms = topology.getNumAtoms()
        self.levels = torsion_levels(self.torsions, grouping)
        self.sigmas = level_sigmas(sigmas, len(self.levels))
        self.n_denoise_steps = int(n_denoise_steps)
        if self.n_denoise_steps < 0:
            raise ValueError(f"n_denoise_steps must be >= 0, got {n_denoise_steps}")
        self.timestep = as_picoseconds(timestep)

    def _check_system(self, system):
        if system.getNumParticles() != self.n_atoms:
            raise ValueError(f"the torsions were selected on a topology of {self.n_atoms} atoms "
                             f"but the System has {system.getNumParticles()} particles "
                             "(torsions given for another topology?)")

    def _engine(self, system, temperature, platform, platform_properties, seed):
        self._check_system(system)
        return TorsionalDiGSEngine(system, self.torsions, self.levels, self.sigmas, temperature,
                                   timestep=self.timestep, n_denoise_steps=self.n_denoise_steps,
                                   platform=platform, platform_properties=platform_properties,
                                   seed=seed)

    @property
    def n_levels(self):
        """Number of levels per sweep (int)."""
        return len(self.levels)

    def _settings_state(self):
        return dict(torsions=[[list(t.atoms), t.name, list(t.moving_atoms)] for t in self.torsions],
                    n_atoms=self.n_atoms, levels=self.levels, sigmas=self.sigmas,
                    n_denoise_steps=self.n_denoise_steps, timestep=self.timestep)

    def _set_settings_state(self, state):
        self.torsions = [Torsion(tuple(atoms), name, tuple(moving))
                         for atoms, name, moving in state["torsions"]]
        self.n_atoms = int(state["n_atoms"])
        self.levels = [list(level) for level in state["levels"]]
        self.sigmas = [float(s) for s in state["sigmas"]]
        self.n_denoise_steps = int(state["n_denoise_steps"])
        self.timestep = float(state["timestep"])


class TorsionalDiffusiveGibbsMove(_TorsionalSettings, MCMCMove):
    """Torsional DiGS sweeps as an openmmtools ``MCMCMove``.

    Parameters
    ----------
    topology : openmm.app.Topology
        Topology of the System the move will be applied to (bonds needed).
    torsions : {"backbone", "chi1", "backbone+chi1"} or array-like of int, shape=(m, 4)
        Torsions to pivot (see :func:`~openmm_dikl.systems.torsions.select_torsions`).
    grouping : {"single", "disjoint"}
        One torsion per level, or greedy groups of commuting torsions
        (:func:`~openmm_dikl.systems.torsions.torsion_levels`).
    sigmas : float or sequence of float
        Kernel width σ (radians) of every level, or one per level; the von Mises
        concentration is κ = 1/σ².  σ = π (default) makes θ̃ nearly uninformative, so a
        pivot proposes almost any angle (the setting that crosses basins on alanine
        dipeptide; ``benchmarks/torsional_move.py``).
    n_sweeps : int
        Sweeps (every level once) per :meth:`apply`.
    n_denoise_steps : int
        GHMC steps per level.
    timestep : openmm.unit.Quantity or float
        GHMC time step (ps); 1 fs by default (2 fs is fine with ``HBonds``).
    platform : str, optional
        OpenMM platform of the move's Context; default: the context cache's platform,
        else "CPU".
    platform_properties : dict, optional
    random_seed : int, optional
        Seed of the move's randomness (reproducible runs); None draws one.

    Notes
    -----
    The move keeps a private Context per compatible thermodynamic state (a copy of the
    state's System plus the kernel force; states that differ only in temperature share
    one), so ``context_cache`` is used only for its platform.  After :meth:`apply` the
    sampler state holds the new positions, velocities and the potential energy of the
    state's System (kJ/mol).

    Attributes
    ----------
    statistics : dict of str -> numpy.ndarray, shape=(n_levels,)
        Counters ``init_accepted``, ``init_proposed``, ``denoise_accepted``,
        ``denoise_proposed`` summed over all applications.
    force_evaluations : int
        Force (and energy) evaluations since construction.
    """

    def __init__(self, topology, torsions="backbone", grouping="single", sigmas=math.pi,
                 n_sweeps=1, n_denoise_steps=10, timestep=0.001 * unit.picoseconds,
                 platform=None, platform_properties=None, random_seed=None):
        self._configure(topology, torsions, grouping, sigmas, n_denoise_steps, timestep)
        self.n_sweeps = int(n_sweeps)
        if self.n_sweeps < 1:
            raise ValueError(f"n_sweeps must be >= 1, got {n_sweeps}")
        self.platform, self.platform_properties = platform, platform_properties
        self.random_seed = (int(np.random.SeedSequence().entropy % (2 ** 31))
                            if random_seed is None else int(random_seed))
        self._statistics = {name: np.zeros(self.n_levels, dtype=np.int64) for name in _COUNTERS}
        self.force_evaluations = 0
        self._applications = 0
        self._engines = []   # [(ThermodynamicState, TorsionalDiGSEngine)]
        self._warned = False

    @property
    def statistics(self):
        """Per-level counters summed over all applications (dict of int arrays, copies)."""
        return {name: values.copy() for name, values in self._statistics.items()}

    @statistics.setter
    def statistics(self, value):
        # multistate samplers gather the statistics of each replica's copy and set them back
        self._statistics = {name: np.asarray(value[name], dtype=np.int64).copy()
                            for name in _COUNTERS}

    @property
    def acceptance_rates(self):
        """Per-level ``initialisation`` and ``denoising`` acceptance (float arrays)."""
        return acceptance_rates(self._statistics)

    def reset_statistics(self):
        """Zero the acceptance counters (the force-evaluation counter is kept)."""
        for values in self._statistics.values():
            values[:] = 0

    def _engine_for(self, thermodynamic_state, context_cache):
        for state, engine in self._engines:
            if state.is_state_compatible(thermodynamic_state):
                return engine
        platform = self.platform
        if platform is None:
            cached = getattr(context_cache, "platform", None)
            platform = cached.getName() if cached is not None else "CPU"
        system = thermodynamic_state.get_system(remove_thermostat=True, remove_barostat=True)
        seed = derived_seed(self.random_seed, self._applications + len(self._engines))
        engine = self._engine(system, thermodynamic_state.temperature, platform,
                              self.platform_properties, seed)
        self._engines.append((copy.copy(thermodynamic_state), engine))
        return engine

    def apply(self, thermodynamic_state, sampler_state, context_cache=None):
        """Run ``n_sweeps`` sweeps from ``sampler_state`` at ``thermodynamic_state``.

        Parameters
        ----------
        thermodynamic_state : openmmtools.states.ThermodynamicState
            Temperature and System (sampled at fixed volume, the state's box).
        sampler_state : openmmtools.states.SamplerState
            Updated in place: positions, velocities, energies (kJ/mol).
        context_cache : openmmtools.cache.ContextCache, optional
            Only its platform is used (see Notes of the class).
        """
        engine = self._engine_for(thermodynamic_state, context_cache)
        engine.set_temperature(thermodynamic_state.temperature)
        engine.set_positions(sampler_state.positions, sampler_state.box_vectors)
        before, counts = engine.force_evaluations, engine.statistics
        engine.sweep(self.n_sweeps)
        state = engine.get_state(getPositions=True, getVelocities=True, getEnergy=True)
        sampler_state.update_from_context(state, ignore_collective_variables=True)
        for name, values in engine.statistics.items():
            self._statistics[name] += values - counts[name]
        self.force_evaluations += engine.force_evaluations - before
        self._applications += 1
        self._warn_if_stuck()

    def _warn_if_stuck(self):
        message = low_acceptance_message(self._statistics, self.torsions, self.levels)
        if message and not self._warned:
            self._warned = True
            logger.warning(message)

    # ------------------------------------------------------------------ serialization
    def __getstate__(self):
        state = self._settings_state()
        state.update(n_sweeps=self.n_sweeps, platform=self.platform,
                     platform_properties=self.platform_properties, random_seed=self.random_seed,
                     force_evaluations=int(self.force_evaluations),
                     applications=self._applications,
                     statistics={k: [int(v) for v in vals] for k, vals in self._statistics.items()})
        return state

    def __setstate__(self, state):
        self._set_settings_state(state)
        self.n_sweeps = int(state["n_sweeps"])
        self.platform, self.platform_properties = state["platform"], state["platform_properties"]
        self.random_seed = int(state["random_seed"])
        self.force_evaluations = int(state["force_evaluations"])
        self._applications = int(state["applications"])
        self._statistics = {k: np.asarray(v, dtype=np.int64) for k, v in state["statistics"].items()}
        self._engines, self._warned = [], False


class _SweepIntegrator(openmm.CustomIntegrator):
    """Placeholder integrator of :class:`TorsionalDiffusiveGibbsSimulation`.

    Its Context holds the user's System for reporters; ``step(n)`` is replaced in Python
    by n engine sweeps (the C++ program itself does nothing).
    """

    def __init__(self, nominal_step):
        super().__init__(nominal_step)
        self._run = None

    def step(self, steps):
        """Run ``steps`` sweeps (``TorsionalDiffusiveGibbsSimulation`` attaches the engine)."""
        if self._run is None:
            raise RuntimeError("this integrator runs sweeps only inside a "
                               "TorsionalDiffusiveGibbsSimulation")
        self._run(int(steps))


class TorsionalDiffusiveGibbsSimulation(_TorsionalSettings, app.Simulation):
    """An ``app.Simulation`` whose ``step(n)`` runs n torsional DiGS sweeps.

    Reporters (``DCDReporter``, ``StateDataReporter``, ...) see one step per sweep, with
    the positions, velocities and energies (kJ/mol) of the user's System — the kernel
    force lives only in the engine's private Context.  The Context's time advances by a
    nominal 1 fs per sweep (DiGS has no physical time), so "Time (ps)" counts sweeps.
    Energy minimisation and ``context.setPositions`` work as usual; the next sweep starts
    from whatever the Context holds.

    Parameters
    ----------
    topology : openmm.app.Topology
    system : openmm.System
        Constraints allowed; no virtual sites.
    temperature : openmm.unit.Quantity or float
        Temperature (K).
    platform : str
        OpenMM platform of both Contexts.
    platform_properties : dict, optional
    torsions, grouping, sigmas, n_denoise_steps, timestep
        As in :class:`TorsionalDiffusiveGibbsMove`.
    random_seed : int
        Seed of the sweeps.

    Attributes
    ----------
    engine : TorsionalDiGSEngine
        ``engine.statistics`` (per-level acceptance counters) and
        ``engine.force_evaluations``.

    Examples
    --------
    >>> from openmm_dikl import systems
    >>> ala2 = systems.get("alanine_dipeptide_implicit")
    >>> simulation = TorsionalDiffusiveGibbsSimulation(ala2.topology, ala2.system, 300.0,
    ...                                                random_seed=3)
    >>> simulation.context.setPositions(ala2.positions)
    >>> simulation.step(2)
    >>> simulation.currentStep, int(simulation.engine.statistics["init_proposed"].sum())
    (2, 4)
    """

    def __init__(self, topology, system, temperature, platform="CPU", platform_properties=None,
                 torsions="backbone", grouping="single", sigmas=math.pi, n_denoise_steps=10,
                 timestep=0.001 * unit.picoseconds, random_seed=0):
        self._configure(topology, torsions, grouping, sigmas, n_denoise_steps, timestep)
        self.engine = self._engine(system, temperature, platform, platform_properties, random_seed)
        integrator = _SweepIntegrator(0.001 * unit.picoseconds)
        super().__init__(topology, system, integrator, openmm.Platform.getPlatformByName(platform),
                         platform_properties)
        integrator._run = self._sweeps
        self._written = None   # positions last copied into the Context (nm)

    def _sweeps(self, n):
        """Run n sweeps from the Context's positions and write the result back once.

        ``Simulation.step`` calls reporters only between integrator steps, so nothing can
        change the Context during one call; the engine resynchronises only when the
        Context no longer holds what was last written (``setPositions``, minimisation).
        """
        if n <= 0:
            return
        state = self.context.getState(getPositions=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if self._written is None or not np.array_equal(x, self._written):
            self.engine.set_positions(x, state.getPeriodicBoxVectors())
        self.engine.sweep(n)
        out = self.engine.get_state(getPositions=True, getVelocities=True)
        self.context.setPositions(out.getPositions())
        self.context.setVelocities(out.getVelocities())
        self._written = self.context.getState(getPositions=True).getPositions(
            asNumpy=True).value_in_unit(unit.nanometer)
        self.context.setStepCount(self.context.getStepCount() + n)
        self.context.setTime(self.context.getTime() + n * self.integrator.getStepSize())

"""Parallel tempering (replica exchange in temperature) with OpenMM Langevin dynamics.

Used for the long alanine dipeptide reference run and as the ``pt`` baseline.  Each
replica has its own Context and ``LangevinMiddleIntegrator``; after every block of
``steps_per_swap`` steps, neighbouring temperatures attempt an exchange with the exact
acceptance min(1, exp[(β_i − β_j)(U_i − U_j)]) and velocities rescaled by sqrt(T_j/T_i).
"""
import numpy as np
import openmm
from openmm import unit

from ..units import as_kelvin, check_samplable, kt_kjmol

__all__ = ["ParallelTempering", "geometric_temperatures"]


def geometric_temperatures(t_min, t_max, n_replicas):
    """Geometric temperature ladder in K (list of floats) from ``t_min`` to ``t_max``."""
    t_min, t_max = as_kelvin(t_min), as_kelvin(t_max)
    if n_replicas < 2 or t_max <= t_min:
        raise ValueError("need n_replicas >= 2 and t_max > t_min")
    return list(t_min * (t_max / t_min) ** (np.arange(n_replicas) / (n_replicas - 1)))


class ParallelTempering:
    """Replica exchange over a temperature ladder for an unconstrained OpenMM System.

    Parameters
    ----------
    system : openmm.System
        The System (no constraints or virtual sites).
    positions : openmm.unit.Quantity, shape=(n_atoms, 3)
        Initial positions (nm) for every replica.
    temperatures : list of float or Quantity
        Ladder in K, lowest first; samples of interest are at ``temperatures[0]``.
    steps_per_swap : int
        Langevin steps between exchange attempts.
    timestep : float
        Time step in fs.
    friction : float
        Collision rate in 1/ps.
    platform : str
        OpenMM platform name.
    seed : int
        Seed for velocities, integrators and exchanges.

    Notes
    -----
    Force evaluations per iteration: ``n_replicas * steps_per_swap`` (plus one energy
    evaluation per replica for the exchange step).
    """

    def __init__(self, system, positions, temperatures, steps_per_swap=500, timestep=1.0,
                 friction=1.0, platform="Reference", seed=0):
        check_samplable(system, "parallel tempering")
        self.temperatures = [as_kelvin(t) for t in temperatures]
        if sorted(self.temperatures) != self.temperatures or len(set(self.temperatures)) < 2:
            raise ValueError("temperatures must be strictly increasing with at least two replicas")
        self.steps_per_swap = int(steps_per_swap)
        self.beta = np.array([1.0 / kt_kjmol(t) for t in self.temperatures])
        self._rng = np.random.default_rng(seed)
        self._contexts = []
        for i, temperature in enumerate(self.temperatures):
            integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin,
                                                         friction / unit.picosecond,
                                                         timestep * unit.femtosecond)
            integrator.setRandomNumberSeed(int(seed) * 1000 + i + 1)
            context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
            context.setPositions(positions)
            context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed) * 1000 + i + 1)
            self._contexts.append(context)
        self.n_attempts = np.zeros(len(self.temperatures) - 1, dtype=int)
        self.n_accepted = np.zeros(len(self.temperatures) - 1, dtype=int)
        self.iteration = 0

    @property
    def force_evaluations_per_iteration(self):
        """Force evaluations per call of :meth:`step` (int)."""
        return len(self._contexts) * self.steps_per_swap

    @property
    def acceptance_rates(self):
        """Exchange acceptance rate of each neighbouring pair (numpy array)."""
        return self.n_accepted / np.maximum(self.n_attempts, 1)

    def _energies(self):
        return np.array([c.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole) for c in self._contexts])

    def step(self):
        """One iteration: ``steps_per_swap`` Langevin steps per replica, then exchanges.

        Returns
        -------
        positions : numpy.ndarray, shape=(n_atoms, 3)
            Positions (nm) of the lowest-temperature replica after the exchanges.
        energy : float
            Its potential energy in kJ/mol.
        """
        for context in self._contexts:
            context.getIntegrator().step(self.steps_per_swap)
        energies = self._energies()
        if not np.all(np.isfinite(energies)):
            raise RuntimeError(f"parallel tempering: non-finite energy at iteration {self.iteration}")
        start = self.iteration % 2  # alternate even and odd pairs
        for i in range(start, len(self._contexts) - 1, 2):
            self.n_attempts[i] += 1
            log_accept = (self.beta[i] - self.beta[i + 1]) * (energies[i] - energies[i + 1])
            if np.log(self._rng.uniform()) < log_accept:
                self.n_accepted[i] += 1
                self._swap(i, i + 1)
                energies[[i, i + 1]] = energies[[i + 1, i]]
        self.iteration += 1
        state = self._contexts[0].getState(getPositions=True)
        return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), float(energies[0])

    def _swap(self, i, j):
        si = self._contexts[i].getState(getPositions=True, getVelocities=True)
        sj = self._contexts[j].getState(getPositions=True, getVelocities=True)
        scale = np.sqrt(self.temperatures[j] / self.temperatures[i])
        self._contexts[i].setPositions(sj.getPositions(asNumpy=True))
        self._contexts[i].setVelocities(sj.getVelocities(asNumpy=True) / scale)
        self._contexts[j].setPositions(si.getPositions(asNumpy=True))
        self._contexts[j].setVelocities(si.getVelocities(asNumpy=True) * scale)

    def get_state(self):
        """Picklable state (positions, velocities, counters, RNG) for checkpoints."""
        states = [c.getState(getPositions=True, getVelocities=True) for c in self._contexts]
        return {"positions": np.array([s.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                                       for s in states]),
                "velocities": np.array([s.getVelocities(asNumpy=True).value_in_unit(
                    unit.nanometer / unit.picosecond) for s in states]),
                "n_attempts": self.n_attempts.copy(), "n_accepted": self.n_accepted.copy(),
                "iteration": self.iteration, "rng": self._rng.bit_generator.state,
                "temperatures": list(self.temperatures)}

    def set_state(self, state):
        """Restore a state from :meth:`get_state` (same ladder required)."""
        if list(state["temperatures"]) != self.temperatures:
            raise ValueError("checkpoint temperature ladder differs from this sampler's")
        for context, x, v in zip(self._contexts, state["positions"], state["velocities"]):
            context.setPositions(x)
            context.setVelocities(v)
        self.n_attempts = np.array(state["n_attempts"])
        self.n_accepted = np.array(state["n_accepted"])
        self.iteration = int(state["iteration"])
        self._rng.bit_generator.state = state["rng"]

"""Parallel tempering (replica exchange in temperature) with OpenMM Langevin dynamics.

Used for the long alanine dipeptide reference run and as the ``pt`` baseline.  Each
replica has its own Context and ``LangevinMiddleIntegrator``; after every block of
``steps_per_swap`` steps, neighbouring temperatures attempt an exchange with the exact
acceptance min(1, exp[(β_i − β_j)(U_i − U_j)]) and velocities rescaled by sqrt(T_j/T_i).

Observables at the lowest (target) temperature can be estimated from the lowest replica
alone, or from *all* replicas with MBAR weights (:func:`mbar_weights`): record every
replica with :meth:`ParallelTempering.run` and call :meth:`ReplicaSamples.mbar_weights`.

>>> import openmm
>>> from openmm import unit
>>> system = openmm.System(); _ = system.addParticle(1.0)
>>> force = openmm.CustomExternalForce("0.5*100*(x^2+y^2+z^2)"); _ = force.addParticle(0, [])
>>> _ = system.addForce(force)
>>> pt = ParallelTempering(system, [[0.0, 0.0, 0.0]] * unit.nanometer, [300.0, 450.0],
...                        steps_per_swap=10, seed=1)
>>> samples = pt.run(50)
>>> samples.positions.shape, samples.energies_kjmol.shape
((50, 2, 1, 3), (50, 2))
>>> weights, ess = samples.mbar_weights()  # both replicas, reweighted to 300 K
>>> weights.shape, bool(1.0 <= ess <= samples.n_samples)
((100,), True)
"""
import dataclasses

import numpy as np
import openmm
from openmm import unit

from ..units import as_kelvin, check_samplable, kt_kjmol

__all__ = ["ParallelTempering", "ReplicaSamples", "geometric_temperatures", "mbar_weights"]


def geometric_temperatures(t_min, t_max, n_replicas):
    """Geometric temperature ladder in K (list of floats) from ``t_min`` to ``t_max``."""
    t_min, t_max = as_kelvin(t_min), as_kelvin(t_max)
    if n_replicas < 2 or t_max <= t_min:
        raise ValueError("need n_replicas >= 2 and t_max > t_min")
    return list(t_min * (t_max / t_min) ** (np.arange(n_replicas) / (n_replicas - 1)))


def mbar_weights(energies_kjmol, temperatures, target_temperature):
    """MBAR weights of the pooled samples of all replicas at a target temperature.

    Parameters
    ----------
    energies_kjmol : array-like, shape=(n_iterations, n_replicas)
        Potential energies in kJ/mol; column k holds the configurations sampled at
        ``temperatures[k]`` (one per iteration, as recorded by
        :meth:`ParallelTempering.run`).
    temperatures : sequence of float or Quantity, shape=(n_replicas,)
        The temperature of each column, in K.
    target_temperature : float or Quantity
        Temperature (K) at which observables are wanted: one of the ladder's (usually the
        lowest) or any other (the ESS shows how well the samples cover it).

    Returns
    -------
    weights : numpy.ndarray, shape=(n_iterations * n_replicas,)
        Non-negative weights summing to 1, sample n = i * n_replicas + k being column k
        of iteration i (the order of ``positions.reshape(-1, n_atoms, 3)``).  The
        estimate of an observable A is Σ_n w_n A(x_n).
    ess : float
        Kish effective sample size 1 / Σ_n w_n², between 1 and n_iterations · n_replicas.

    Raises
    ------
    ValueError
        On a wrong shape, non-finite energies, or non-positive temperatures.
    ImportError
        If pymbar is not installed.

    Notes
    -----
    All replicas share the potential U; state k has reduced potential
    u_k(x) = U(x) / (R T_k).  MBAR (Shirts & Chodera, J. Chem. Phys. 129, 124105, 2008)
    solves the self-consistent equations for the reduced free energies f_k with N_k =
    n_iterations samples per state (``pymbar.MBAR``, versions 3 and 4), and the weight of
    sample n at the target is

        w_n ∝ exp(−u_t(x_n)) / Σ_k N_k exp(f_k − u_k(x_n)),

    normalised.  The estimate is consistent if every column samples its Boltzmann
    distribution (drop the equilibration first).  Time correlation does not bias it,
    but the Kish ESS ignores it: the ESS is an upper bound on the number of independent
    samples.  pymbar is imported here, on first use (it may print a notice at import).
    """
    import pymbar
    from scipy.special import logsumexp

    energies = np.asarray(energies_kjmol, dtype=np.float64)
    beta = np.array([1.0 / kt_kjmol(t) for t in temperatures])
    if energies.ndim != 2 or energies.shape[1] != len(beta) or energies.shape[0] < 1:
        raise ValueError(f"energies_kjmol must have shape (n_iterations, {len(beta)}) "
                         f"(one column per temperature), got {energies.shape}")
    if not np.isfinite(energies).all():
        raise ValueError("energies_kjmol contains NaN or inf")
    beta_target = 1.0 / kt_kjmol(target_temperature)
    flat = energies.reshape(-1) - energies.min()  # a constant shift leaves the weights alone
    u_kn = beta[:, None] * flat[None, :]
    n_k = np.full(len(beta), energies.shape[0])
    f_k = np.asarray(pymbar.MBAR(u_kn, n_k).f_k, dtype=np.float64)
    log_w = -beta_target * flat - logsumexp(f_k[:, None] - u_kn, b=n_k[:, None], axis=0)
    weights = np.exp(log_w - logsumexp(log_w))
    weights /= weights.sum()
    return weights, float(1.0 / np.sum(weights ** 2))


@dataclasses.dataclass
class ReplicaSamples:
    """Configurations and energies of every replica, recorded by :meth:`ParallelTempering.run`.

    Attributes
    ----------
    positions : numpy.ndarray, shape=(n_recorded, n_replicas, n_atoms, 3)
        Positions in nm; ``positions[i, k]`` is the configuration at ``temperatures[k]``
        after recorded iteration i (after the exchanges).
    energies_kjmol : numpy.ndarray, shape=(n_recorded, n_replicas)
        Their potential energies in kJ/mol.
    temperatures : numpy.ndarray, shape=(n_replicas,)
        The ladder in K, lowest first.
    iterations : numpy.ndarray of int, shape=(n_recorded,)
        Sampler iteration count at each record (1 = after the first iteration).
    force_evaluations : int
        Force evaluations the recorded run spent (all replicas).
    """

    positions: np.ndarray
    energies_kjmol: np.ndarray
    temperatures: np.ndarray
    iterations: np.ndarray
    force_evaluations: int

    @property
    def n_samples(self):
        """Recorded configurations over all replicas (int)."""
        return int(self.energies_kjmol.size)

    def flat_positions(self):
        """All configurations (n_recorded · n_replicas, n_atoms, 3) nm, in the order of
        :meth:`mbar_weights`."""
        return self.positions.reshape(-1, *self.positions.shape[2:])

    def discard(self, n_first):
        """A copy without the first ``n_first`` records (equilibration)."""
        return ReplicaSamples(self.positions[n_first:], self.energies_kjmol[n_first:],
                              self.temperatures, self.iterations[n_first:],
                              self.force_evaluations)

    def mbar_weights(self, target_temperature=None):
        """MBAR weights (n_samples,) of all recorded configurations and their Kish ESS.

        ``target_temperature`` (K) defaults to the lowest temperature of the ladder; see
        :func:`mbar_weights`.
        """
        target = self.temperatures[0] if target_temperature is None else target_temperature
        return mbar_weights(self.energies_kjmol, self.temperatures, target)


class ParallelTempering:
    """Replica exchange over a temperature ladder for an OpenMM System.

    Parameters
    ----------
    system : openmm.System
        The System (constraints allowed, Langevin handles them; no barostat).
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
    evaluation per replica for the exchange step).  :meth:`step` returns the lowest
    replica; :meth:`run` records every replica, whose pooled samples
    :func:`mbar_weights` reweights to the lowest temperature.
    """

    def __init__(self, system, positions, temperatures, steps_per_swap=500, timestep=1.0,
                 friction=1.0, platform="Reference", seed=0):
        # Langevin dynamics keeps constraints; a barostat would make the replicas' volumes
        # differ from the exchange criterion's fixed box
        check_samplable(system, "parallel tempering", allow_constraints=True)
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
            context = openmm.Context(system, integrator,
                                     openmm.Platform.getPlatformByName(platform))
            context.setPositions(positions)
            context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed) * 1000 + i + 1)
            self._contexts.append(context)
        self.n_attempts = np.zeros(len(self.temperatures) - 1, dtype=int)
        self.n_accepted = np.zeros(len(self.temperatures) - 1, dtype=int)
        self.iteration = 0
        self._last_energies = None  # kJ/mol per temperature after the last step

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
            raise RuntimeError("parallel tempering: non-finite energy at iteration "
                               f"{self.iteration}")
        start = self.iteration % 2  # alternate even and odd pairs
        for i in range(start, len(self._contexts) - 1, 2):
            self.n_attempts[i] += 1
            log_accept = (self.beta[i] - self.beta[i + 1]) * (energies[i] - energies[i + 1])
            if np.log(self._rng.uniform()) < log_accept:
                self.n_accepted[i] += 1
                self._swap(i, i + 1)
                energies[[i, i + 1]] = energies[[i + 1, i]]
        self.iteration += 1
        self._last_energies = energies
        state = self._contexts[0].getState(getPositions=True)
        return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), float(energies[0])

    def replica_states(self):
        """Positions and potential energies of every replica now (after the last step).

        Returns
        -------
        positions : numpy.ndarray, shape=(n_replicas, n_atoms, 3)
            Positions in nm, lowest temperature first.
        energies_kjmol : numpy.ndarray, shape=(n_replicas,)
            Potential energies in kJ/mol.
        """
        positions = np.array([c.getState(getPositions=True).getPositions(asNumpy=True)
                              .value_in_unit(unit.nanometer) for c in self._contexts])
        energies = self._energies() if self._last_energies is None else self._last_energies
        return positions, np.array(energies, dtype=np.float64)

    def run(self, n_iterations, record_every=1, callback=None):
        """Run ``n_iterations`` iterations and record every replica every ``record_every``.

        Parameters
        ----------
        n_iterations : int
            Iterations (calls of :meth:`step`).
        record_every : int
            Record all replicas after every ``record_every``-th iteration.
        callback : callable, optional
            ``callback(iteration)`` after every iteration (e.g. a progress bar).

        Returns
        -------
        ReplicaSamples
            ``n_iterations // record_every`` records of all replicas (memory:
            8 · n_replicas · (3 · n_atoms + 1) bytes per record).
        """
        n_iterations, record_every = int(n_iterations), int(record_every)
        if n_iterations < 0 or record_every < 1:
            raise ValueError("need n_iterations >= 0 and record_every >= 1")
        positions, energies, iterations = [], [], []
        for k in range(1, n_iterations + 1):
            self.step()
            if k % record_every == 0:
                x, u = self.replica_states()
                positions.append(x)
                energies.append(u)
                iterations.append(self.iteration)
            if callback is not None:
                callback(self.iteration)
        n_atoms = self._contexts[0].getSystem().getNumParticles()
        return ReplicaSamples(
            positions=np.array(positions).reshape(-1, len(self._contexts), n_atoms, 3),
            energies_kjmol=np.array(energies).reshape(-1, len(self._contexts)),
            temperatures=np.array(self.temperatures), iterations=np.array(iterations, dtype=int),
            force_evaluations=n_iterations * self.force_evaluations_per_iteration)

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
        self._last_energies = None

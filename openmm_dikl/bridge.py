"""Batched OpenMM → torch bridge: reduced energies and forces of configuration batches.

OpenMM computes, torch consumes.  :class:`OpenMMBridge` evaluates a batch of
configurations (nm) in one OpenMM Context, or in a pool of spawned worker processes, and
returns dimensionless reduced energies u = U/kT and reduced forces −∇u (1/nm) as float64
torch tensors.  :meth:`OpenMMBridge.reduced_energy` wraps that in a
``torch.autograd.Function`` whose gradient comes from the OpenMM forces.

>>> from openmm_dikl import systems
>>> from openmm_dikl.bridge import OpenMMBridge
>>> target = systems.get("dw4")
>>> x = target.reference_samples(n=3)
>>> with OpenMMBridge(target.system, target.temperature) as bridge:
...     u, f = bridge.compute(x)
>>> tuple(u.shape), tuple(f.shape), u.dtype
((3,), (3, 4, 2), torch.float64)
"""
import logging

import numpy as np
import openmm
import torch
from openmm import unit
from torch.autograd.function import once_differentiable

from ._workers import _ProcessPoolBackend, _SerialBackend
from .units import (BOND_LENGTH_RANGE, as_kelvin, as_nm, check_bond_lengths, check_positions,
                    kt_kjmol)

__all__ = ["OpenMMBridge", "platform_name"]

logger = logging.getLogger(__name__)

#: Configurations at the start of each batch whose bond lengths are checked (nm, not Å).
LENGTH_CHECKED_SAMPLES = 4


class _ReducedEnergy(torch.autograd.Function):
    """u(x) from the bridge; backward returns −grad_u · f with f = −∇u the OpenMM forces."""

    @staticmethod
    def forward(ctx, positions, bridge, check_length_scale):
        energies, forces = bridge.compute(positions.detach(), check_length_scale)
        ctx.input_dtype = positions.dtype
        ctx.positions_shape = positions.shape
        ctx.save_for_backward(forces.to(positions.device))
        return energies.to(positions.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energies):
        (forces,) = ctx.saved_tensors  # (batch, n, d), 1/nm
        grad_positions = -grad_energies.to(forces.dtype)[:, None, None] * forces
        return grad_positions.reshape(ctx.positions_shape).to(ctx.input_dtype), None, None


def _bonded_pairs(system):
    """Bonded particle pairs of a System: HarmonicBondForce bonds and constraints.

    Parameters
    ----------
    system : openmm.System
        The System.

    Returns
    -------
    pairs : numpy.ndarray of int, shape=(n_bonds, 2)
        Particle indices.
    lengths : numpy.ndarray, shape=(n_bonds,)
        Equilibrium bond lengths and constraint distances in nm.
    """
    pairs, lengths = [], []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                p1, p2, length, _ = force.getBondParameters(k)
                pairs.append((p1, p2))
                lengths.append(length.value_in_unit(unit.nanometer))
    for k in range(system.getNumConstraints()):
        p1, p2, distance = system.getConstraintParameters(k)
        pairs.append((p1, p2))
        lengths.append(distance.value_in_unit(unit.nanometer))
    return np.array(pairs, dtype=int).reshape(-1, 2), np.array(lengths, dtype=float)


def platform_name(platform):
    """Platform name from a name or an ``openmm.Platform``; ValueError if unavailable."""
    if isinstance(platform, openmm.Platform):
        return platform.getName()
    available = [openmm.Platform.getPlatform(i).getName()
                 for i in range(openmm.Platform.getNumPlatforms())]
    if platform not in available:
        raise ValueError(f"OpenMM platform {platform!r} is not available; available "
                         f"platforms: {', '.join(available)}")
    return platform


class OpenMMBridge:
    """Reduced energies and forces of configuration batches, computed by OpenMM.

    Positions go in in nm; reduced energies u = U/kT (dimensionless) and reduced forces
    −∇u (1/nm) come out, as float64 torch tensors.  kT = R·T is computed once from
    ``temperature``.

    Parameters
    ----------
    system : openmm.System
        The System to evaluate (copied at construction; later changes are not seen).
        Must not contain virtual sites.  Systems with constraints are accepted and
        evaluated without applying them (see Notes).  Periodic Systems are evaluated in
        their default box.
    temperature : openmm.unit.Quantity or float
        Temperature, compatible with kelvin or a bare number in K.
    platform : str or openmm.Platform
        OpenMM platform ("Reference" is fastest for small molecules and the toy systems,
        "CPU" for implicit solvent).
    n_workers : int
        1 evaluates in this process.  More than 1 starts that many worker processes
        (multiprocessing *spawn*; each builds its own Context) and splits every batch into
        contiguous chunks.
    platform_properties : dict of str to str, optional
        OpenMM platform properties used for every Context, e.g. ``{"Threads": "1"}`` for
        the CPU platform with several workers.

    Attributes
    ----------
    n_particles : int
        Number of particles in the System.
    temperature : openmm.unit.Quantity
        Temperature (K).
    kT : openmm.unit.Quantity
        Thermal energy (kJ/mol).
    platform : str
        Platform name.
    n_workers : int
        Number of worker processes (1 = in-process).
    bonded_pairs : numpy.ndarray of int, shape=(n_bonds, 2)
        Particle pairs whose lengths :meth:`compute` checks (the System's
        HarmonicBondForce bonds and constraints; empty if the check does not apply).

    Raises
    ------
    ValueError
        If the System has virtual sites or no particles, the temperature is not positive,
        the platform does not exist or ``n_workers`` is not a positive integer.
    RuntimeError
        If a worker process cannot build its Context.

    Notes
    -----
    *Constraints* are accepted, and the bridge evaluates U(x) and −∇U(x) at exactly the
    given positions, as if the System had none: positions are not moved onto the
    constraint surface (even when they violate it) and the constraint forces are not
    projected out, so the result equals that of the same System without constraints.
    This is what evaluating given configurations needs (energies of samples, forces for
    a score); *sampling* a constrained System this way would ignore the constraints, so
    the samplers refuse such Systems (:func:`openmm_dikl.units.check_samplable`).  The
    constructor logs the number of constraints at INFO level.

    *Length scale.* Bare numbers are taken as nm.  Positions in Å passed as bare
    numbers would give absurd energies (about 10⁶ kT for alanine dipeptide), so
    :meth:`compute` checks the median bond length of the first
    :data:`LENGTH_CHECKED_SAMPLES` configurations of every batch (a few µs) and raises
    ValueError outside 0.05-0.5 nm (:func:`openmm_dikl.units.check_bond_lengths`).  The
    bonds are the System's HarmonicBondForce bonds and constraints, read once here; the
    check is skipped for Systems whose own median equilibrium bond length is outside
    that range (coarse-grained or reduced-unit models) and for Systems without such
    bonds.

    *Virtual sites* are refused because OpenMM recomputes their positions from the other
    particles, which would silently overwrite the given ones.

    *2-D configurations.* Positions of shape (batch, n, 2) are padded with z = 0 before
    evaluation and the forces are returned with the z component dropped (2-D targets
    carry a separable z term in their System, which vanishes at z = 0).

    *Workers.* Results are identical to ``n_workers=1`` on deterministic platforms (the
    same Context code runs on the same positions).  Positions go to the workers, and
    energies and forces come back, through one shared-memory block per pool (named
    ``omdikl_<pid>_…``, in /dev/shm on Linux; it grows with the largest batch, up to
    256 MiB), and the workers take chunks of the batch as they become free, so a worker
    slowed down by other load does less of it.  If a worker process dies, the call
    raises RuntimeError within moments, the pool is shut down, and the next
    :meth:`compute` starts a fresh pool (or call :meth:`restart`).  Workers are stopped
    and the shared memory is unlinked by :meth:`close`, by leaving a ``with`` block,
    after a worker death, when the bridge is garbage collected and at interpreter exit
    (and by multiprocessing's resource tracker if this process is killed).  Because
    workers are spawned, a *script* that creates a multi-worker bridge at import time
    must guard its entry point with ``if __name__ == "__main__":``.

    Examples
    --------
    >>> from openmm_dikl import systems
    >>> target = systems.get("alanine_dipeptide_vacuum")
    >>> bridge = OpenMMBridge(target.system, 300.0, platform="Reference")
    >>> u, f = bridge.compute(target.positions)  # one configuration -> batch of 1
    >>> tuple(u.shape), tuple(f.shape)
    ((1,), (1, 22, 3))
    >>> bridge.close()
    """

    def __init__(self, system, temperature, platform="Reference", n_workers=1,
                 platform_properties=None):
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
        self.n_particles = system.getNumParticles()
        if self.n_particles == 0:
            raise ValueError("the System has no particles")
        virtual = [i for i in range(self.n_particles) if system.isVirtualSite(i)]
        if virtual:
            raise ValueError(f"the System has {len(virtual)} virtual site(s) (first: particle "
                             f"{virtual[0]}); the bridge cannot evaluate it because OpenMM "
                             "would overwrite the given positions of virtual sites")
        if system.getNumConstraints():
            logger.info("the System has %d constraints: the bridge evaluates energies and "
                        "forces at the given positions and does not apply them",
                        system.getNumConstraints())
        pairs, lengths = _bonded_pairs(system)
        low, high = BOND_LENGTH_RANGE
        if len(pairs) and not low <= np.median(lengths) <= high:
            logger.debug("median equilibrium bond length %.3g nm is outside %s-%s nm: "
                         "positions are not checked for the length scale",
                         np.median(lengths), low, high)
            pairs = pairs[:0]
        self.bonded_pairs = pairs
        if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) \
                or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
        if platform_properties is not None and not isinstance(platform_properties, dict):
            raise ValueError("platform_properties must be a dict of str to str or None, got "
                             f"{type(platform_properties).__name__}")
        self.temperature = as_kelvin(temperature) * unit.kelvin
        self._kt = kt_kjmol(self.temperature)
        self.kT = self._kt * unit.kilojoule_per_mole
        self.platform = platform_name(platform)
        self.n_workers = int(n_workers)
        self.platform_properties = ({str(k): str(v) for k, v in platform_properties.items()}
                                    if platform_properties else None)
        if self.n_workers == 1:
            self._backend = _SerialBackend(system, self.platform, self.platform_properties)
        else:
            self._backend = _ProcessPoolBackend(system, self.platform, self.platform_properties,
                                                self.n_workers)

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return (f"OpenMMBridge(n_particles={self.n_particles}, temperature={self.temperature}, "
                f"platform={self.platform!r}, n_workers={self.n_workers}, {state})")

    # ------------------------------------------------------------------ evaluation
    def _validate(self, positions):
        x = as_nm(positions, "positions")
        dim = x.shape[-1] if x.ndim in (2, 3) else 3
        if dim not in (2, 3):
            raise ValueError(f"positions must have a last axis of size 3, or 2 for planar "
                             f"systems (padded with z = 0), got shape {tuple(x.shape)}")
        return check_positions(x, self.n_particles, dim, name="positions")

    def compute(self, positions, check_length_scale=True):
        """Reduced energies and reduced forces of a batch of configurations.

        Parameters
        ----------
        positions : array-like, torch.Tensor or Quantity, shape=(batch, n_particles, d)
            Positions in nm (bare numbers) with d = 3, or d = 2 for planar systems
            (padded with z = 0); a Quantity in any length unit is converted.  A single
            configuration (n_particles, d) is treated as a batch of 1.  Torch tensors are
            detached (use :meth:`reduced_energy` for gradients).
        check_length_scale : bool
            Check the bond lengths of the first :data:`LENGTH_CHECKED_SAMPLES`
            configurations (positions in Å passed as nm raise ValueError).  Internal
            loops whose positions are already known to be in nm may pass False.

        Returns
        -------
        energies : torch.Tensor, shape=(batch,), dtype=float64
            Reduced energies u = U/kT (dimensionless).
        forces : torch.Tensor, shape=(batch, n_particles, d), dtype=float64
            Reduced forces −∇u in 1/nm (z dropped when d = 2).

        Raises
        ------
        ValueError
            On a wrong shape (ndim, particle count or d), an empty batch, NaN/inf
            entries (the message names the first bad sample index), or bond lengths
            showing that the positions are not in nm (e.g. bare numbers in Å).
        RuntimeError
            If the bridge is closed, or (n_workers > 1) a worker process died or raised
            (the worker's exception type, message and traceback are in the message).
        openmm.OpenMMException
            If OpenMM fails while evaluating in-process (n_workers == 1).
        """
        x = self._validate(positions)
        dim = x.shape[-1]
        if dim == 2:
            xyz = np.zeros(x.shape[:2] + (3,))
            xyz[..., :2] = x
        else:
            xyz = np.ascontiguousarray(x)
        if check_length_scale:
            check_bond_lengths(xyz[:LENGTH_CHECKED_SAMPLES], self.bonded_pairs)
        energies, forces = self._backend.compute(xyz)
        energies /= self._kt
        if dim == 2:
            forces = forces[..., :2] / self._kt
        else:
            forces /= self._kt
        return torch.from_numpy(energies), torch.from_numpy(forces)

    def reduced_energy(self, positions, check_length_scale=True):
        """Differentiable reduced energy u = U/kT; its gradient comes from OpenMM forces.

        Parameters
        ----------
        positions : torch.Tensor, shape=(batch, n_particles, d)
            Positions in nm (d = 3, or 2 padded with z = 0).  A single configuration
            (n_particles, d) gives a batch of 1.  Numpy arrays and Quantities are
            accepted (no gradient then).
        check_length_scale : bool
            As in :meth:`compute`.

        Returns
        -------
        torch.Tensor, shape=(batch,), dtype=float64
            Reduced energies (dimensionless) on the device of ``positions``; backward
            gives ∂u/∂x = −(reduced forces) in 1/nm.  Second derivatives are not
            available (a double backward raises).

        Raises
        ------
        ValueError
            As :meth:`compute`.
        """
        if not isinstance(positions, torch.Tensor):
            positions = torch.from_numpy(as_nm(positions, "positions"))
        return _ReducedEnergy.apply(positions, self, bool(check_length_scale))

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self):
        """True after :meth:`close` until :meth:`restart` (bool)."""
        return self._backend.closed

    @property
    def worker_pids(self):
        """Process ids of the worker processes (list of int; empty when n_workers == 1)."""
        return self._backend.worker_pids

    def restart(self):
        """Rebuild the Context, or stop and respawn all worker processes.

        Use after a worker failure (the next :meth:`compute` also restarts by itself) or
        to reopen a closed bridge.

        Raises
        ------
        RuntimeError
            If a worker process cannot build its Context.
        """
        self._backend.restart()

    def close(self):
        """Release the Context or stop the worker processes (idempotent)."""
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False

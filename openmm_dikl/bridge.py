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
from .units import as_kelvin, as_nm, check_positions, kt_kjmol

__all__ = ["OpenMMBridge"]

logger = logging.getLogger(__name__)


class _ReducedEnergy(torch.autograd.Function):
    """u(x) from the bridge; backward returns −grad_u · f with f = −∇u the OpenMM forces."""

    @staticmethod
    def forward(ctx, positions, bridge):
        energies, forces = bridge.compute(positions.detach())
        ctx.input_dtype = positions.dtype
        ctx.positions_shape = positions.shape
        ctx.save_for_backward(forces.to(positions.device))
        return energies.to(positions.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energies):
        (forces,) = ctx.saved_tensors  # (batch, n, d), 1/nm
        grad_positions = -grad_energies.to(forces.dtype)[:, None, None] * forces
        return grad_positions.reshape(ctx.positions_shape).to(ctx.input_dtype), None


def _platform_name(platform):
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
        Must not contain virtual sites.  Constraints are *not* applied (see Notes).
        Periodic Systems are evaluated in their default box.
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

    Raises
    ------
    ValueError
        If the System has virtual sites or no particles, the temperature is not positive,
        the platform does not exist or ``n_workers`` is not a positive integer.
    RuntimeError
        If a worker process cannot build its Context.

    Notes
    -----
    *Constraints.* Energies and forces are evaluated at exactly the given positions;
    constraints are neither applied to the positions nor projected out of the forces.
    The samplers refuse constrained Systems (:func:`openmm_dikl.systems.user.check_samplable`).

    *Virtual sites* are refused because OpenMM recomputes their positions from the other
    particles, which would silently overwrite the given ones.

    *2-D configurations.* Positions of shape (batch, n, 2) are padded with z = 0 before
    evaluation and the forces are returned with the z component dropped (2-D targets
    carry a separable z term in their System, which vanishes at z = 0).

    *Workers.* Results are identical to ``n_workers=1`` on deterministic platforms (the
    same Context code runs on the same positions).  If a worker process dies, the call
    raises RuntimeError within moments, the pool is shut down, and the next
    :meth:`compute` starts a fresh pool (or call :meth:`restart`).  Workers are stopped
    by :meth:`close`, by leaving a ``with`` block, when the bridge is garbage collected
    and at interpreter exit.  Because workers are spawned, a *script* that creates a
    multi-worker bridge at import time must guard its entry point with
    ``if __name__ == "__main__":``.

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
        if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) \
                or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
        if platform_properties is not None and not isinstance(platform_properties, dict):
            raise ValueError("platform_properties must be a dict of str to str or None, got "
                             f"{type(platform_properties).__name__}")
        self.temperature = as_kelvin(temperature) * unit.kelvin
        self._kt = kt_kjmol(self.temperature)
        self.kT = self._kt * unit.kilojoule_per_mole
        self.platform = _platform_name(platform)
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

    def compute(self, positions):
        """Reduced energies and reduced forces of a batch of configurations.

        Parameters
        ----------
        positions : array-like, torch.Tensor or Quantity, shape=(batch, n_particles, d)
            Positions in nm (bare numbers) with d = 3, or d = 2 for planar systems
            (padded with z = 0).  A single configuration (n_particles, d) is treated as
            a batch of 1.  Torch tensors are detached (use :meth:`reduced_energy` for
            gradients).

        Returns
        -------
        energies : torch.Tensor, shape=(batch,), dtype=float64
            Reduced energies u = U/kT (dimensionless).
        forces : torch.Tensor, shape=(batch, n_particles, d), dtype=float64
            Reduced forces −∇u in 1/nm (z dropped when d = 2).

        Raises
        ------
        ValueError
            On a wrong shape (ndim, particle count or d), an empty batch, or NaN/inf
            entries (the message names the first bad sample index).
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
        energies, forces = self._backend.compute(xyz)
        energies /= self._kt
        if dim == 2:
            forces = forces[..., :2] / self._kt
        else:
            forces /= self._kt
        return torch.from_numpy(energies), torch.from_numpy(forces)

    def reduced_energy(self, positions):
        """Differentiable reduced energy u = U/kT; its gradient comes from OpenMM forces.

        Parameters
        ----------
        positions : torch.Tensor, shape=(batch, n_particles, d)
            Positions in nm (d = 3, or 2 padded with z = 0).  A single configuration
            (n_particles, d) gives a batch of 1.  Numpy arrays and Quantities are
            accepted (no gradient then).

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
        return _ReducedEnergy.apply(positions, self)

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

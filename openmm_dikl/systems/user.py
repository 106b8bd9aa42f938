"""Wrap a user's own OpenMM System as a :class:`TargetSystem`."""
import openmm

from ..units import as_kelvin
from .base import TargetSystem

__all__ = ["from_openmm", "check_samplable"]


def check_samplable(system, what="openmm_dikl samplers"):
    """Raise ValueError if ``system`` has constraints, virtual sites or a barostat.

    DiGS and DiKL sample every Cartesian degree of freedom: a constraint would be
    ignored (a silently wrong distribution) and a virtual site is not a free coordinate.
    Periodic Systems are sampled in their default box, so a barostat (NPT) is refused
    rather than silently ignored.
    """
    n_constraints = system.getNumConstraints()
    if n_constraints:
        raise ValueError(f"the System has {n_constraints} constraints, which {what} cannot "
                         "handle; build it with constraints=None (and rigidWater=False)")
    virtual = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    if virtual:
        raise ValueError(f"the System has {len(virtual)} virtual sites (first: particle "
                         f"{virtual[0]}), which {what} cannot handle")
    barostats = [type(f).__name__ for f in system.getForces() if "Barostat" in type(f).__name__]
    if barostats:
        raise ValueError(f"the System has a {barostats[0]}, but {what} sample at fixed volume "
                         "(periodic Systems are evaluated in their default box); remove the "
                         "barostat")


def from_openmm(system, topology, positions, temperature, name="user", platform="Reference"):
    """A :class:`TargetSystem` for a user's OpenMM System (energies through the bridge).

    Parameters
    ----------
    system : openmm.System
        Unconstrained, without virtual sites (see :func:`check_samplable`).
    topology : openmm.app.Topology
        Topology with one atom per particle.
    positions : openmm.unit.Quantity or array-like, shape=(n_atoms, 3)
        Starting positions: a Quantity in any length unit (converted), or bare numbers
        in nm.  Bond lengths off the nm scale (e.g. Å given as bare numbers) are refused.
    temperature : openmm.unit.Quantity or float
        Temperature (K).
    name : str
        Name used in logs and file headers.
    platform : str
        OpenMM platform for energy evaluations.

    Examples
    --------
    >>> from openmm import app, unit
    >>> from openmm_dikl.systems import from_openmm, shipped_path
    >>> pdb = app.PDBFile(shipped_path("alanine_dipeptide.pdb"))
    >>> ff = app.ForceField("amber14-all.xml")
    >>> system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    >>> target = from_openmm(system, pdb.topology, pdb.positions, 300.0)
    >>> float(target.reduced_energy(target.positions.value_in_unit(unit.nanometer))) < 0
    True
    """
    if not isinstance(system, openmm.System):
        raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
    check_samplable(system)
    return TargetSystem(name, system, topology, positions, as_kelvin(temperature),
                        spatial_dim=3, platform=platform,
                        description=f"user system with {system.getNumParticles()} atoms")

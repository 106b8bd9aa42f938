"""Wrap a user's own OpenMM System as a :class:`TargetSystem`."""
import openmm

from ..units import as_kelvin, check_samplable
from .base import TargetSystem, molecular_sampler_defaults

__all__ = ["from_openmm"]


def from_openmm(system, topology, positions, temperature, name="user", platform="Reference"):
    """A :class:`TargetSystem` for a user's OpenMM System (energies through the bridge).

    Parameters
    ----------
    system : openmm.System
        Without virtual sites or barostat.  Constraints (``HBonds``) are accepted: the
        methods ``digs`` (the OpenMM-native torsional move) and ``langevin`` sample them;
        the torch methods and ``pt`` refuse them when a run starts
        (:func:`~openmm_dikl.units.check_samplable`).
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
    check_samplable(system, allow_constraints=True)
    target = TargetSystem(name, system, topology, positions, as_kelvin(temperature),
                          spatial_dim=3, platform=platform,
                          description=f"user system with {system.getNumParticles()} atoms")
    target.sampler_defaults = molecular_sampler_defaults(target.topology, engine="openmm")
    return target

"""Capped alanine peptides beyond the dipeptide: Ace-(Ala)3-Nme (42 atoms) in implicit solvent.

Both variants use the amber14 force field (``amber14-all.xml``, i.e. ff14SB) with OBC2
generalised-Born implicit solvent (``implicit/obc2.xml``, a ``CustomGBForce``), no cutoff,
no removal of the centre-of-mass motion, at 300 K.  Positions come from the shipped
``systems/ace_ala3_nme.pdb`` (an amber14 + OBC2 energy minimum near the polyproline-II
region, φ ≈ −68°, ψ ≈ 154° on all three residues, built by
``benchmarks/build_ace_ala3_nme.py``).  Energies are evaluated in OpenMM through
:class:`~openmm_dikl.bridge.OpenMMBridge` on the CPU platform (≈ 0.6 ms per energy and
forces on one thread; the Reference platform interprets the CustomGBForce at ≈ 3 ms).

* ``ace_ala3_nme_implicit`` — ``constraints=app.HBonds`` (the 22 X–H bond lengths fixed),
  the usual MD setup.  ``digs`` runs the OpenMM-native torsional move on it
  (:mod:`openmm_dikl.samplers.torsional`), and ``langevin`` and ``pt`` sample it; the
  torch samplers move every Cartesian coordinate and refuse constrained Systems when a
  run starts (:func:`openmm_dikl.units.check_samplable`).  Note that
  ``ForceField.createSystem`` drops the harmonic bond terms of constrained bonds, so
  this System's energy does not penalise X–H stretches.
* ``ace_ala3_nme_implicit_unconstrained`` — the same force field with every bond
  flexible, the variant to sample.

>>> from openmm_dikl import systems
>>> target = systems.get("ace_ala3_nme_implicit_unconstrained")
>>> target.n_particles, len(target.torsions["phi"]), len(target.torsions["psi"])
(42, 3, 3)
"""
from openmm import app

from .base import TargetSystem, molecular_sampler_defaults, shipped_path

__all__ = ["ace_ala3_nme", "ACE_ALA3_NME_PDB", "FORCEFIELD_FILES", "TEMPERATURE"]

TEMPERATURE = 300.0  # K
#: Shipped starting structure (amber14 residue and atom names, no CONECT records).
ACE_ALA3_NME_PDB = "ace_ala3_nme.pdb"
#: OpenMM force-field files of both variants.
FORCEFIELD_FILES = ("amber14-all.xml", "implicit/obc2.xml")
_FORCEFIELD_CACHE = {}


def _forcefield():
    """The amber14 + OBC2 ForceField (parsed once per process, ≈ 0.5 s)."""
    if "amber14_obc2" not in _FORCEFIELD_CACHE:
        _FORCEFIELD_CACHE["amber14_obc2"] = app.ForceField(*FORCEFIELD_FILES)
    return _FORCEFIELD_CACHE["amber14_obc2"]


def ace_ala3_nme(constraints="hbonds"):
    """Ace-(Ala)3-Nme (42 atoms) with amber14 + OBC2 implicit solvent at 300 K.

    Parameters
    ----------
    constraints : {"hbonds", None}
        ``"hbonds"``: bonds to hydrogen constrained (``app.HBonds``; 22 constraints),
        registered as ``ace_ala3_nme_implicit`` (sampled by ``digs``, ``langevin`` and
        ``pt``; the torch samplers refuse it).  None: no constraints, registered as ``ace_ala3_nme_implicit_unconstrained``.

    Returns
    -------
    TargetSystem
        Positions from the shipped PDB (nm), temperature 300 K, platform ``"CPU"``,
        ``evaluation=None`` (no reference: energies only), three φ and three ψ in
        :attr:`TargetSystem.torsions`, and the molecular sampler defaults
        (:func:`~openmm_dikl.systems.base.molecular_sampler_defaults`).

    Raises
    ------
    ValueError
        For another ``constraints`` value.
    """
    if constraints not in ("hbonds", None):
        raise ValueError(f"constraints must be 'hbonds' or None, got {constraints!r}")
    pdb = app.PDBFile(shipped_path(ACE_ALA3_NME_PDB))
    system = _forcefield().createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff,
        constraints=app.HBonds if constraints == "hbonds" else None,
        rigidWater=False, removeCMMotion=False)
    if constraints == "hbonds":
        name = "ace_ala3_nme_implicit"
        description = ("Ace-(Ala)3-Nme, amber14 + OBC2 implicit solvent, X-H bonds "
                       "constrained, 300 K")
    else:
        name = "ace_ala3_nme_implicit_unconstrained"
        description = "Ace-(Ala)3-Nme, amber14 + OBC2 implicit solvent, unconstrained, 300 K"
    return TargetSystem(name, system, pdb.topology, pdb.getPositions(asNumpy=True),
                        TEMPERATURE, spatial_dim=3, platform="CPU", description=description,
                        sampler_defaults=molecular_sampler_defaults(pdb.topology, engine="openmm"),
                        evaluation=None, translation_invariant=True)

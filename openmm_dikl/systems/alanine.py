"""Alanine dipeptide (22 atoms) with Amber (vacuum, OBC2 implicit solvent) or ANI-1x.

All variants are at 300 K, unconstrained (DiGS/DiKL sample every Cartesian degree of
freedom) and without cutoffs.  The Amber variants evaluate energies in OpenMM (the
torch energy goes through :class:`~openmm_dikl.bridge.OpenMMBridge`); the ANI-1x variant
is torch-native (torchani, parameters loaded offline from the installed package) and is
also a real ``openmm.System`` through ``openmm.PythonForce``.
"""
import math
import os
import warnings

import numpy as np
import openmm
import torch
from openmm import app, unit

from .base import TargetSystem, molecular_sampler_defaults, shipped_path

__all__ = ["alanine_dipeptide", "alanine_dipeptide_zmatrix", "ANIPotential", "HARTREE_TO_KJMOL",
           "ZMATRIX_BACKBONE_ROWS", "ZMATRIX_ROTOR_ROWS"]

TEMPERATURE = 300.0  # K
#: Parallel-tempering reference of the implicit-solvent variant (``benchmarks/ala2_reference.py``).
REFERENCE_FILE = "ala2_implicit_reference.npz"
HARTREE_TO_KJMOL = 2625.499639479
_ANI_CACHE = {}


def _amber_system(implicit):
    prmtop = app.AmberPrmtopFile(shipped_path("alanine_dipeptide.prmtop"))
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None,
                                 rigidWater=False, removeCMMotion=False,
                                 implicitSolvent=app.OBC2 if implicit else None)
    return system, prmtop.topology


def _pdb_positions():
    return app.PDBFile(shipped_path("alanine_dipeptide.pdb")).getPositions(asNumpy=True)


def _load_ani1x():
    """The ANI-1x 8-model ensemble from the files inside the torchani 2.2.4 wheel (offline)."""
    if "ani1x" not in _ANI_CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchani
            from torchani import neurochem
        root = os.path.join(os.path.dirname(torchani.__file__), "resources", "ani-1x_8x")
        if not os.path.isdir(root):
            raise RuntimeError("ANI-1x parameters not found in the installed torchani; "
                               "install torchani==2.2.4 (newer releases ship no weights)")
        consts = neurochem.Constants(os.path.join(root, "rHCNO-5.2R_16-3.5A_a4-8.params"))
        aev = torchani.AEVComputer(**consts)
        sae = neurochem.load_sae(os.path.join(root, "sae_linfit.dat"))
        ensemble = neurochem.load_model_ensemble(consts.species, os.path.join(root, "train"), 8)
        model = torchani.nn.Sequential(aev, ensemble, sae).to(torch.float64).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        _ANI_CACHE["ani1x"] = (model, consts)
    return _ANI_CACHE["ani1x"]


class ANIPotential:
    """ANI-1x reduced energy of a fixed molecule, usable from torch and from OpenMM.

    Parameters
    ----------
    symbols : list of str
        Element symbols (H, C, N, O) in atom order.
    temperature : float
        Temperature in K, used for u = E / kT.

    Notes
    -----
    Calling the object with a :class:`openmm.State` returns (energy in kJ/mol, forces in
    kJ/mol/nm as an (n, 3) array), the ``openmm.PythonForce`` protocol.  The object is
    picklable (the network is rebuilt lazily), so bridge workers in other processes and
    ``XmlSerializer`` copies of the System work.
    """

    def __init__(self, symbols, temperature):
        self.symbols = list(symbols)
        self.temperature = float(temperature)
        self.kt = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin) * self.temperature

    def __getstate__(self):
        return {"symbols": self.symbols, "temperature": self.temperature, "kt": self.kt}

    def energy_kjmol(self, x):
        """ANI-1x energy (kJ/mol) of x (..., n, 3) in nm, differentiable."""
        model, consts = _load_ani1x()
        species = consts.species_to_tensor(self.symbols)
        batch_shape = x.shape[:-2]
        flat = x.reshape(-1, len(self.symbols), 3) * 10.0  # nm -> Å
        species = species.unsqueeze(0).expand(flat.shape[0], -1)
        hartree = model((species, flat)).energies
        return (hartree * HARTREE_TO_KJMOL).reshape(batch_shape)

    def reduced_energy(self, x):
        """Reduced energy u = E/kT of x (..., n, 3) in nm."""
        return self.energy_kjmol(x) / self.kt

    def __call__(self, state):
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        x = torch.tensor(np.asarray(xyz), dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            energy = self.energy_kjmol(x)
            (grad,) = torch.autograd.grad(energy, x)
        return float(energy.detach()), -grad.numpy()


# (residue, atom name) of the roots and of each placed atom with its (bond, angle,
# dihedral) references.  Order matters: references are always placed earlier.
_ALA2_ROOTS = (("ALA", "N"), ("ALA", "CA"), ("ALA", "C"))
_ALA2_PLACED = (
    (("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C")),      # φ
    (("NME", "N"), ("ALA", "C"), ("ALA", "CA"), ("ALA", "N")),      # ψ
    (("ACE", "O"), ("ACE", "C"), ("ALA", "N"), ("ALA", "CA")),
    (("ACE", "CH3"), ("ACE", "C"), ("ALA", "N"), ("ACE", "O")),
    (("ALA", "H"), ("ALA", "N"), ("ALA", "CA"), ("ACE", "C")),
    (("ACE", "H1"), ("ACE", "CH3"), ("ACE", "C"), ("ALA", "N")),
    (("ACE", "H2"), ("ACE", "CH3"), ("ACE", "C"), ("ACE", "H1")),
    (("ACE", "H3"), ("ACE", "CH3"), ("ACE", "C"), ("ACE", "H1")),
    (("ALA", "CB"), ("ALA", "CA"), ("ALA", "N"), ("ALA", "C")),
    (("ALA", "HA"), ("ALA", "CA"), ("ALA", "N"), ("ALA", "CB")),
    (("ALA", "HB1"), ("ALA", "CB"), ("ALA", "CA"), ("ALA", "N")),
    (("ALA", "HB2"), ("ALA", "CB"), ("ALA", "CA"), ("ALA", "HB1")),
    (("ALA", "HB3"), ("ALA", "CB"), ("ALA", "CA"), ("ALA", "HB1")),
    (("ALA", "O"), ("ALA", "C"), ("ALA", "CA"), ("NME", "N")),
    (("NME", "C"), ("NME", "N"), ("ALA", "C"), ("ALA", "CA")),
    (("NME", "H"), ("NME", "N"), ("ALA", "C"), ("NME", "C")),
    (("NME", "H1"), ("NME", "C"), ("NME", "N"), ("ALA", "C")),
    (("NME", "H2"), ("NME", "C"), ("NME", "N"), ("NME", "H1")),
    (("NME", "H3"), ("NME", "C"), ("NME", "N"), ("NME", "H1")),
)
# Atom names differ between PDB conventions (prmtop vs. PDB): accepted aliases.
_ALIASES = {("NME", "C"): ("CH3",), ("ALA", "HB1"): ("1HB",), ("ALA", "HB2"): ("2HB",),
            ("ALA", "HB3"): ("3HB",)}
for _res in ("ACE", "NME"):
    for _k in (1, 2, 3):
        _ALIASES[(_res, f"H{_k}")] = (f"HH3{_k}", f"{_k}HH3")


#: Z-matrix rows whose dihedral is φ (row 0) and ψ (row 1), and the three methyl rotors.
ZMATRIX_BACKBONE_ROWS = (0, 1)
ZMATRIX_ROTOR_ROWS = (5, 10, 16)


def alanine_dipeptide_zmatrix(topology):
    """The alanine dipeptide Z-matrix as atom indices.

    Parameters
    ----------
    topology : openmm.app.Topology
        Topology whose atom order to use (names are looked up per residue, with the
        common PDB aliases).

    Returns
    -------
    roots : tuple of int
        (N, Cα, C) of the alanine residue.
    placed : list of tuple of int
        (atom, bond ref, angle ref, dihedral ref) for the 19 other atoms.

    Raises
    ------
    ValueError
        If the topology is not ACE-ALA-NME with 22 atoms.
    """
    lookup = {}
    for atom in topology.atoms():
        lookup[(atom.residue.name, atom.name)] = atom.index
    if topology.getNumAtoms() != 22:
        raise ValueError(f"alanine dipeptide has 22 atoms, the topology has {topology.getNumAtoms()}")

    def index(key):
        for name in (key[1],) + _ALIASES.get(key, ()):
            if (key[0], name) in lookup:
                return lookup[(key[0], name)]
        raise ValueError(f"atom {key[1]} of residue {key[0]} not found in the topology "
                         "(expected ACE-ALA-NME alanine dipeptide)")

    roots = tuple(index(k) for k in _ALA2_ROOTS)
    placed = [tuple(index(k) for k in row) for row in _ALA2_PLACED]
    return roots, placed


#: Widths of the standardised internal coordinates (nm, rad), from the spread of a 50 ps
#: Langevin run at 300 K (bonds 2.3–3.3 pm, angles 0.047–0.078 rad, stiff dihedrals
#: 0.07–0.21 rad); rotors and backbone dihedrals get 1 rad.
INTERNAL_WIDTHS = {"bond": 0.003, "angle": 0.06, "dihedral": 0.15, "rotor": 1.0,
                   "backbone": 1.0}

#: Where the φ and ψ circles are cut (degrees): the parallel-tempering reference puts no
#: sample at φ in [70°, 160°], and 0.2 % per 10° at ψ in [0°, 60°] (the barrier between
#: αR and β that is not their transition path, which runs through ψ ≈ −120°), so the
#: window keeps the two ψ basins joined along their path.
BACKBONE_CUTS_DEG = (120.0, 30.0)


def alanine_dipeptide_internal_transform(topology, positions):
    """Standardised internal coordinates z = (q − centre) / width of alanine dipeptide.

    The centre is the geometry ``positions`` (nm, (22, 3)), except for φ and ψ, whose
    centres lie opposite :data:`BACKBONE_CUTS_DEG`, so that each backbone window
    (centre ± π) is cut where the Boltzmann density is lowest; the methyl rotors are cut
    opposite their staggered reference (an eclipsed maximum).  Widths are
    :data:`INTERNAL_WIDTHS`.

    Returns
    -------
    openmm_dikl.internal.InternalTransform
    """
    from ..internal import InternalCoordinates, InternalTransform
    ic = InternalCoordinates(*alanine_dipeptide_zmatrix(topology), n_atoms=22)
    x = torch.as_tensor(np.asarray(positions, dtype=np.float64))[None]
    centre = ic.to_internal(x)[0][0].clone()
    width = torch.empty(ic.n_internal, dtype=torch.float64)
    width[ic.bond_index] = INTERNAL_WIDTHS["bond"]
    width[ic.angle_index] = INTERNAL_WIDTHS["angle"]
    for k, index in enumerate(ic.dihedral_index.tolist()):
        kind = ("backbone" if k in ZMATRIX_BACKBONE_ROWS else
                "rotor" if k in ZMATRIX_ROTOR_ROWS else "dihedral")
        width[index] = INTERNAL_WIDTHS[kind]
    for row, cut in zip(ZMATRIX_BACKBONE_ROWS, BACKBONE_CUTS_DEG):
        centre[ic.dihedral_index[row]] = math.radians(cut - 180.0)
    return InternalTransform(ic, centre, width, ic.frame(x))


def alanine_dipeptide(variant="implicit"):
    """Alanine dipeptide at 300 K: ``variant`` in {"vacuum", "implicit", "ani"}.

    Returns
    -------
    TargetSystem
        Named ``alanine_dipeptide_<variant>``; positions from the shipped PDB (nm).
    """
    if variant not in ("vacuum", "implicit", "ani"):
        raise ValueError(f"unknown alanine dipeptide variant {variant!r}")
    system, topology = _amber_system(implicit=(variant == "implicit"))
    energy_fn = None
    # With kappa = 0, OBC2 uses the built-in GBSAOBCForce: Reference ≈ 40 µs per energy +
    # forces for 22 atoms vs ≈ 600 µs on the CPU platform (thread start-up), so Reference.
    platform = "Reference"
    description = {"vacuum": "alanine dipeptide, Amber ff96, vacuum, 300 K",
                   "implicit": "alanine dipeptide, Amber ff96 + OBC2 implicit solvent, 300 K",
                   "ani": "alanine dipeptide, ANI-1x neural potential (torchani), 300 K"}[variant]
    if variant == "ani":
        potential = ANIPotential([a.element.symbol for a in topology.atoms()], TEMPERATURE)
        ani_system = openmm.System()
        for i in range(system.getNumParticles()):
            ani_system.addParticle(system.getParticleMass(i))
        ani_system.addForce(openmm.PythonForce(potential))
        system, energy_fn = ani_system, potential.reduced_energy
    # the shipped reference is a parallel-tempering run of the implicit-solvent variant; the
    # other variants are compared on their angles only
    evaluation_data = {"reference": REFERENCE_FILE, "reference_energies": variant == "implicit"}
    return TargetSystem(f"alanine_dipeptide_{variant}", system, topology, _pdb_positions(),
                        TEMPERATURE, spatial_dim=3, energy_fn=energy_fn, platform=platform,
                        description=description,
                        sampler_defaults=molecular_sampler_defaults(topology),
                        evaluation="backbone_dihedrals", evaluation_data=evaluation_data,
                        translation_invariant=True, zmatrix=alanine_dipeptide_zmatrix(topology),
                        internal_transform=alanine_dipeptide_internal_transform(
                            topology, _pdb_positions().value_in_unit(unit.nanometer)))

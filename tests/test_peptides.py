"""Ace-(Ala)3-Nme bundled systems: build, energies at the shipped minimum, torsions, constraints."""
import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from openmm_dikl import systems
from openmm_dikl.systems.torsions import select_torsions
from openmm_dikl.units import check_samplable

NAMES = ("ace_ala3_nme_implicit", "ace_ala3_nme_implicit_unconstrained")
#: The minimised energy written by benchmarks/build_ace_ala3_nme.py (kJ/mol, amber14 + OBC2).
MINIMUM_KJMOL = -132.8


@pytest.fixture(scope="module")
def built():
    return {name: systems.get(name) for name in NAMES}


def _h_bonds(topology):
    return sum(1 for a, b in topology.bonds()
               if "H" in (a.element.symbol, b.element.symbol))


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_42_atoms_and_its_residues(built, name):
    target = built[name]
    assert name in systems.names()
    assert target.name == name and target.n_particles == 42 and target.spatial_dim == 3
    assert [r.name for r in target.topology.residues()] == ["ACE", "ALA", "ALA", "ALA", "NME"]
    assert target.temperature.value_in_unit(unit.kelvin) == pytest.approx(300.0)
    assert target.platform == "CPU" and target.evaluation is None
    # nested φ/ψ along the chain: digs runs the OpenMM torsional move, one torsion per level
    assert target.sampler_defaults["digs"]["engine"] == "openmm"


@pytest.mark.parametrize("name", NAMES)
def test_finite_low_energy_at_the_shipped_positions(built, name):
    target = built[name]
    x = torch.as_tensor(target.positions.value_in_unit(unit.nanometer))
    u = target.reduced_energy(x)
    energy = float(u) * target.kT.value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy)
    # the constrained System lacks the X-H bond terms, which are tiny at the minimum
    assert energy == pytest.approx(MINIMUM_KJMOL, abs=1.0)
    force = target.reduced_force(x)
    assert torch.isfinite(force).all()


@pytest.mark.parametrize("name", NAMES)
def test_three_phi_and_three_psi(built, name):
    target = built[name]
    torsions = select_torsions(target.topology)
    assert [t.name.split()[0] for t in torsions] == ["phi", "psi"] * 3
    assert target.torsions["phi"].shape == (3, 4) and target.torsions["psi"].shape == (3, 4)
    x = target.to_mdtraj(target.positions.value_in_unit(unit.nanometer))
    import mdtraj
    phi = np.degrees(mdtraj.compute_dihedrals(x, target.torsions["phi"])[0])
    psi = np.degrees(mdtraj.compute_dihedrals(x, target.torsions["psi"])[0])
    assert np.all((phi > -100) & (phi < -40)) and np.all((psi > 100) & (psi < 180))  # PPII


def test_constraints_are_the_hydrogen_bonds(built):
    constrained = built["ace_ala3_nme_implicit"]
    n_h = _h_bonds(constrained.topology)
    assert n_h == 22
    assert constrained.system.getNumConstraints() == n_h > 0
    assert built["ace_ala3_nme_implicit_unconstrained"].system.getNumConstraints() == 0
    with pytest.raises(ValueError, match="22 constraints"):
        check_samplable(constrained.system)
    check_samplable(built["ace_ala3_nme_implicit_unconstrained"].system)


def test_shipped_pdb_is_templated_by_amber14():
    pdb = app.PDBFile(systems.shipped_path("ace_ala3_nme.pdb"))
    assert pdb.topology.getNumAtoms() == 42 and pdb.topology.getPeriodicBoxVectors() is None
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=app.HBonds)
    assert any(isinstance(f, openmm.CustomGBForce) for f in system.getForces())
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    distances = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)[np.triu_indices(42, 1)]
    assert distances.min() > 0.09  # no clashes (the shortest are X-H bonds)

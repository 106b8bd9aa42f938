"""A user peptide other than alanine dipeptide: glycine dipeptide built from a PDB written here."""
import io

import mdtraj
import numpy as np
import openmm
import pandas as pd
import pytest
from openmm import app, unit

from openmm_dikl import systems
from openmm_dikl.cli import main
from openmm_dikl.samplers import run_sampler

FORCEFIELD = ["amber14-all.xml", "implicit/obc2.xml"]

#: heavy atoms of ACE-GLY-NME (Å); hydrogens are added by openmm.app.Modeller
GLY_HEAVY_ATOMS = """\
ATOM      1  CH3 ACE     1       2.000   2.090   0.000
ATOM      2  C   ACE     1       3.427   2.641   0.000
ATOM      3  O   ACE     1       4.391   1.877   0.000
ATOM      4  N   GLY     2       3.555   3.970   0.000
ATOM      5  CA  GLY     2       4.853   4.614   0.000
ATOM      6  C   GLY     2       4.713   6.129   0.000
ATOM      7  O   GLY     2       3.601   6.653   0.000
ATOM      8  N   NME     3       5.846   6.835   0.000
ATOM      9  CH3 NME     3       5.846   8.284   0.000
END
"""


@pytest.fixture(scope="module")
def glycine_pdb(tmp_path_factory):
    heavy = app.PDBFile(io.StringIO(GLY_HEAVY_ATOMS))
    modeller = app.Modeller(heavy.topology, heavy.positions)
    # an explicit platform: its minimisation segfaults on PoCL's OpenCL (the default once present)
    modeller.addHydrogens(app.ForceField(*FORCEFIELD),
                          platform=openmm.Platform.getPlatformByName("CPU"))
    path = tmp_path_factory.mktemp("gly") / "glycine_dipeptide.pdb"
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    return path


def _energies_of_frames(traj, pdb):
    """Potential energies (kJ/mol) of trajectory frames recomputed with OpenMM."""
    system = app.ForceField(*FORCEFIELD).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                      constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(1.0),
                             openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for xyz in traj.xyz:
        context.setPositions(xyz * unit.nanometer)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()
                        .value_in_unit(unit.kilojoule_per_mole))
    return np.array(energies)


def test_cli_samples_user_peptide(glycine_pdb, tmp_path):
    out = tmp_path / "gly.dcd"
    assert main(["sample", "--pdb", str(glycine_pdb), "--forcefield", *FORCEFIELD,
                 "--method", "digs", "--force-evals", "2000", "--frames", "20", "--seed", "2",
                 "--no-progress", "--out", str(out)]) == 0
    traj = mdtraj.load(str(out), top=str(tmp_path / "gly.pdb"))
    assert traj.n_atoms == 19 and traj.n_frames >= 20
    # the torsional kernel is used for this peptide too: its φ takes both signs
    phi = mdtraj.compute_phi(traj)[1][:, 0]
    assert (phi > 0).any() and (phi < 0).any()
    # the log's energies are the OpenMM energies of the written frames (DCD is float32)
    log = pd.read_csv(tmp_path / "gly.csv")
    recomputed = _energies_of_frames(traj, app.PDBFile(str(glycine_pdb)))
    assert np.allclose(log["potential_energy_kJ_per_mol"].to_numpy(), recomputed, atol=0.5)


def test_cli_constrained_user_peptide(glycine_pdb, tmp_path):
    """--constraints hbonds: digs (the OpenMM torsional move) keeps every X-H length;
    a torch method is refused with the reason, before any file is written."""
    out = tmp_path / "glyc.dcd"
    assert main(["sample", "--pdb", str(glycine_pdb), "--forcefield", *FORCEFIELD,
                 "--constraints", "hbonds", "--method", "digs", "--force-evals", "1500",
                 "--frames", "10", "--no-progress", "--out", str(out)]) == 0
    traj = mdtraj.load(str(out), top=str(tmp_path / "glyc.pdb"))
    pdb = app.PDBFile(str(glycine_pdb))
    system = app.ForceField(*FORCEFIELD).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                      constraints=app.HBonds)
    for k in range(system.getNumConstraints()):
        i, j, d = system.getConstraintParameters(k)
        lengths = np.linalg.norm(traj.xyz[:, i] - traj.xyz[:, j], axis=1)
        np.testing.assert_allclose(lengths, d.value_in_unit(unit.nanometer), rtol=1e-4)
    bad = tmp_path / "bad.dcd"
    assert main(["sample", "--pdb", str(glycine_pdb), "--forcefield", *FORCEFIELD,
                 "--constraints", "hbonds", "--method", "mala", "--no-progress",
                 "--out", str(bad)]) != 0
    assert not bad.exists() and not (tmp_path / "bad.pdb").exists()


def test_python_equivalent_from_openmm(glycine_pdb, tmp_path):
    pdb = app.PDBFile(str(glycine_pdb))
    system = app.ForceField(*FORCEFIELD).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                      constraints=None)
    target = systems.from_openmm(system, pdb.topology, pdb.positions, 300 * unit.kelvin,
                                 name="glycine dipeptide")
    assert target.n_particles == 19 and target.spatial_dim == 3
    result = run_sampler(target, method="mala", force_evals=500, out=str(tmp_path / "m.dcd"),
                         n_frames=5, progress=False)
    assert result.force_evaluations <= 500 and result.n_frames >= 5
    # constraints are refused with a clear message
    constrained = app.ForceField(*FORCEFIELD).createSystem(pdb.topology,
                                                           nonbondedMethod=app.NoCutoff,
                                                           constraints=app.HBonds)
    with pytest.raises(ValueError, match="constraint"):
        run_sampler(systems.from_openmm(constrained, pdb.topology, pdb.positions, 300 * unit.kelvin),
                    method="mala", force_evals=100, out=str(tmp_path / "c.dcd"))
    assert not (tmp_path / "c.dcd").exists()

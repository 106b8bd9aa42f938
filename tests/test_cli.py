"""The openmm-dikl command line: main job, outputs, one-line errors without partial files."""
import os
import subprocess
import sys

import mdtraj
import numpy as np
import pytest

from openmm_dikl.cli import main


def test_systems_lists_names(capsys):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out.split()
    assert "alanine_dipeptide_implicit" in out and "dw4" in out


def test_sample_writes_readable_outputs(tmp_path, capsys):
    out = tmp_path / "run.dcd"
    assert main(["sample", "alanine_dipeptide_vacuum", "--method", "langevin", "--force-evals",
                 "2000", "--frames", "10", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2000 force evaluations" in printed
    traj = mdtraj.load(str(out), top=str(tmp_path / "run.pdb"))
    assert traj.n_frames == 10 and traj.n_atoms == 22
    log = np.genfromtxt(tmp_path / "run.csv", delimiter=",", names=True)
    assert len(log) == 10 and log["force_evaluations"][-1] == 2000
    assert np.all(np.isfinite(log["reduced_energy_kT"]))


def test_sample_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["sample", "dw4", "--force-evals", "500", "--frames", "5", "--seed", "3",
                     "--out", str(tmp_path / f"{name}.dcd"), "--no-progress"]) == 0
    a = mdtraj.load(str(tmp_path / "a.dcd"), top=str(tmp_path / "a.pdb"))
    b = mdtraj.load(str(tmp_path / "b.dcd"), top=str(tmp_path / "b.pdb"))
    np.testing.assert_array_equal(a.xyz, b.xyz)


BAD_INPUTS = [
    (["sample", "no_such_system"], "unknown system 'no_such_system'"),
    (["sample", "dw4", "--method", "nope"], "unknown method 'nope'"),
    (["sample", "dw4", "--force-evals", "0"], "must be positive"),
    (["sample", "dw4", "--out", "run.xyz"], "must end in .dcd"),
    (["sample", "dw4", "--out", "missing_dir/run.dcd"], "does not exist"),
    (["sample", "--pdb", "missing.pdb", "--forcefield", "amber14-all.xml"], "cannot read PDB"),
    (["sample", "--pdb", "water.pdb"], "--pdb needs --forcefield"),
    (["sample", "--pdb", "water.pdb", "--forcefield", "no_such_ff.xml"], "cannot load force field"),
    (["sample", "--pdb", "water.pdb", "--forcefield", "amber14-all.xml"], "force field does not match"),
]

WATER_PDB = """\
HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O
HETATM    2  H1  HOH A   1       0.957   0.000   0.000  1.00  0.00           H
HETATM    3  H2  HOH A   1      -0.240   0.927   0.000  1.00  0.00           H
END
"""


@pytest.mark.parametrize("argv, message", BAD_INPUTS)
def test_bad_input_one_line_error(tmp_path, argv, message):
    (tmp_path / "water.pdb").write_text(WATER_PDB.replace("HOH", "XYZ"))
    argv = [a if a not in ("water.pdb", "missing.pdb") else str(tmp_path / a) for a in argv]
    if "--out" in argv:
        i = argv.index("--out") + 1
        argv[i] = str(tmp_path / argv[i])
    else:
        argv += ["--out", str(tmp_path / "run.dcd")]
    before = set(os.listdir(tmp_path))
    result = subprocess.run([sys.executable, "-m", "openmm_dikl.cli"] + argv, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]
    assert set(os.listdir(tmp_path)) == before  # no partial output left behind


def test_ala2_sample_then_evaluate(tmp_path, capsys):
    out = tmp_path / "ala2.dcd"
    assert main(["sample", "--force-evals", "400", "--frames", "20", "--out", str(out),
                 "--no-progress"]) == 0  # the README main job, tiny
    assert main(["evaluate", str(out), "--system", "alanine_dipeptide_implicit"]) == 0
    printed = capsys.readouterr().out
    for row in ("KL phi", "KL psi", "KL Ramachandran", "fraction phi > 0"):
        assert row in printed
    for png in ("ala2_ramachandran.png", "ala2_marginals.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"

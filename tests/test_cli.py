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
    (["sample", "dw4", "--force-evals", "0"], "must be positive"),
    (["sample", "dw4", "--out", "run.xyz"], "must end in .dcd"),
    (["sample", "dw4", "--out", "missing_dir/run.dcd"], "does not exist"),
    (["sample", "--pdb", "missing.pdb", "--forcefield", "amber14-all.xml"], "cannot read PDB"),
    (["sample", "--pdb", "water.pdb"], "--pdb needs --forcefield"),
    (["sample", "--pdb", "water.pdb", "--forcefield", "no_such_ff.xml"], "cannot load force field"),
    (["sample", "--pdb", "water.pdb", "--forcefield", "amber14-all.xml"], "force field does not match"),
    (["sample", "dw4", "--constraints", "hbonds"], "--constraints applies to --pdb"),
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


# ---------------------------------------------------------------------- rough edges
def test_method_choices_are_listed_and_match_the_engine(capsys):
    from openmm_dikl.cli import SAMPLE_METHODS
    from openmm_dikl.samplers import METHODS
    assert list(SAMPLE_METHODS) == list(METHODS)
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "{digs,digs-cartesian,digs-torsional,hmc,langevin,mala,pt}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["sample", "dw4", "--method", "nope"])
    assert info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_help_needs_no_heavy_import():
    code = ("import sys, openmm_dikl.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'openmm', 'mdtraj', 'openmmtools') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_debug_shows_the_traceback_and_bugs_are_not_hidden(tmp_path, monkeypatch):
    argv = ["sample", "dw4", "--force-evals", "0", "--out", str(tmp_path / "a.dcd")]
    assert main(argv) == 2  # bad input: one line
    with pytest.raises(ValueError, match="must be positive"):
        main(["--debug"] + argv)
    with pytest.raises(ValueError, match="must be positive"):
        main(["-v"] + argv)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")
    monkeypatch.setattr("openmm_dikl.samplers.run_sampler", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not turned into one line
        main(["sample", "dw4", "--force-evals", "100", "--out", str(tmp_path / "b.dcd")])


def test_ctrl_c_prints_one_line_and_leaves_consistent_files(tmp_path):
    import signal
    import time
    out = tmp_path / "long.dcd"
    process = subprocess.Popen(
        [sys.executable, "-m", "openmm_dikl.cli", "sample", "dw4", "--method", "langevin",
         "--force-evals", "100000000", "--frames", "100000", "--out", str(out),
         "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts background jobs with SIGINT ignored, and a
        # Python started so never raises KeyboardInterrupt: give the child the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "long.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 5):
        time.sleep(0.2)
    assert log.exists() and log.read_text().count("\n") >= 5, "the run never wrote frames"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr
    rows = np.genfromtxt(log, delimiter=",", names=True)
    traj = mdtraj.load(str(out), top=str(tmp_path / "long.pdb"))
    assert traj.n_frames == len(rows) >= 4  # every logged row has its frame


def test_generate_does_not_clobber_a_topology_file(tmp_path):
    out, topology = tmp_path / "x.dcd", tmp_path / "x.pdb"
    topology.write_text("my own file\n")
    result = subprocess.run([sys.executable, "-m", "openmm_dikl.cli", "generate", "dw4", "-n",
                             "10", "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and "x.pdb exists" in result.stderr
    assert topology.read_text() == "my own file\n" and not out.exists()
    assert main(["generate", "dw4", "-n", "10", "--out", str(out), "--overwrite"]) == 0
    assert mdtraj.load(str(out), top=str(topology)).n_frames == 10


def test_sample_does_not_clobber_companion_files(tmp_path):
    (tmp_path / "y.csv").write_text("keep\n")
    argv = ["sample", "dw4", "--force-evals", "200", "--frames", "2", "--no-progress",
            "--out", str(tmp_path / "y.dcd")]
    assert main(argv) == 2
    assert (tmp_path / "y.csv").read_text() == "keep\n" and not (tmp_path / "y.dcd").exists()
    assert main(argv + ["--overwrite"]) == 0


def test_molecules_run_batched_chains_by_default(tmp_path):
    out = tmp_path / "ala.dcd"
    assert main(["sample", "alanine_dipeptide_vacuum", "--force-evals", "2000", "--frames",
                 "64", "--out", str(out), "--no-progress"]) == 0
    log = np.genfromtxt(tmp_path / "ala.csv", delimiter=",", names=True)
    assert int(log["chain"].max()) == 31 and len(log) == 64  # 32 chains, 2 reports
    assert log["force_evaluations"][-1] <= 2000
    # one numeric column per statistic: DiGS's per-level initialisation acceptance
    assert {"init_acceptance_0", "denoise_acceptance_0"} <= set(log.dtype.names)
    assert np.all((log["init_acceptance_0"] >= 0) & (log["init_acceptance_0"] <= 1))


def test_evaluate_reads_trajectories_quietly(tmp_path):
    """mdtraj's DCD plugin prints through C stdio on stdout; nothing of it reaches the user."""
    out = tmp_path / "q.dcd"
    assert main(["sample", "dw4", "--method", "langevin", "--force-evals", "200", "--frames",
                 "4", "--out", str(out), "--no-progress"]) == 0
    result = subprocess.run([sys.executable, "-m", "openmm_dikl.cli", "evaluate", str(out),
                             "--system", "dw4"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "dcdplugin" not in result.stdout + result.stderr
    assert "W2 (nm)" in result.stdout

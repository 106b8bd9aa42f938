"""Smoke-run every example script with tiny settings and check what it printed and wrote."""
import os
import re
import subprocess
import sys

import mdtraj
import numpy as np
import pytest

from openmm_dikl import systems

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

#: example -> tiny arguments
TINY = {
    "ala2_pipeline.py": ["--tiny", "--force-evals", "2000", "--chains", "4", "--iterations", "2",
                         "--samples", "200", "--refine", "3"],
    "bridge_forces.py": ["--batch", "8", "--workers", "2"],
    "digs_in_simulation.py": ["--sweeps", "500", "--peptide-sweeps", "100"],
    "dikl_dw4.py": ["--tiny", "--iterations", "3", "--samples", "300", "--refine", "5"],
    "torsional_digs_openmmtools.py": ["--iterations", "2", "--sweeps", "2", "--langevin-steps",
                                      "10", "--replicas", "2", "--re-iterations", "2"],
    "torsional_digs_simulation.py": ["--sweeps", "20", "--interval", "2"],
}


def test_every_example_is_listed():
    scripts = {f for f in os.listdir(EXAMPLES) if f.endswith(".py")}
    assert scripts == set(TINY), f"add tiny settings for {scripts ^ set(TINY)}"
    assert set(CHECKS) == set(TINY)


NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _check_ala2_pipeline(out, folder):
    rows = re.findall(rf"^(DiGS, \d+ evaluations|DiKL generator, one shot|\+ 3 DiGS sweeps.*?)\s+"
                      rf"({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+\(floor "
                      rf"{NUMBER}\)\s*$", out, re.M)
    assert len(rows) == 3, out  # DiGS, generator, refined: KL phi, psi, Rama, p(phi>0)
    for row in rows:
        kls, fraction = [float(v) for v in row[1:4]], float(row[4])
        assert all(k >= 0 for k in kls) and 0.0 <= fraction <= 1.0
    assert re.search(r"^DiKL: 2 iterations", out, re.M)
    traj = mdtraj.load(str(folder / "ala2_pipeline" / "refined.h5"))
    assert traj.n_frames == 200 and traj.n_atoms == 22
    for png in ("digs", "dikl", "refined"):
        assert (folder / "ala2_pipeline" / f"{png}_ramachandran.png").read_bytes()[:4] == b"\x89PNG"


def _check_bridge_forces(out, folder):
    assert re.search(r"^1 worker\(s\): 8 configurations", out, re.M)
    assert re.search(r"^2 worker\(s\): 8 configurations", out, re.M)
    assert "workers agree: True" in out
    before = float(re.search(rf"mean reduced energy ({NUMBER}) kT; workers agree", out).group(1))
    after = float(re.search(rf"after 20 gradient steps: mean reduced energy ({NUMBER}) kT", out).group(1))
    assert after < before  # gradient steps on the OpenMM energy lower it


def _check_digs_in_simulation(out, folder):
    digs = re.search(r"^DiGS: 500 sweeps = (\d+) force evaluations, (\d+) frames, (\d+)/40 modes",
                     out, re.M)
    langevin = re.search(r"^Langevin: (\d+) steps, (\d+)/40 modes visited", out, re.M)
    assert digs and langevin, out
    assert int(digs.group(1)) == 500 * 7 == int(langevin.group(1))  # equal budgets
    assert int(digs.group(3)) > int(langevin.group(2))  # DiGS jumps between modes
    assert re.search(r"^alanine dipeptide: 100 sweeps, \d+ frames; circular mean", out, re.M)


def _check_dikl_dw4(out, folder):
    assert re.search(r"^trained 3 iterations", out, re.M)
    rows = re.findall(rf"^(one-shot|\+5 MALA)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s*$", out, re.M)
    assert [r[0] for r in rows] == ["one-shot", "+5 MALA"], out
    assert all(float(v) >= 0 for r in rows for v in r[1:])
    assert re.search(r"^refinement cost: \d+ force evaluations", out, re.M)
    traj = mdtraj.load(str(folder / "dw4_dikl" / "samples.h5"))
    assert traj.n_frames == 300 and traj.n_atoms == 4


def _check_torsional_digs_simulation(out, folder):
    evaluations = re.search(r"^20 sweeps = (\d+) force evaluations", out, re.M)
    assert evaluations and int(evaluations.group(1)) >= 20 * 2 * (1 + 10), out  # 2 levels
    rows = re.findall(rf"^[01]\s+(phi|psi) ALA2\s+({NUMBER})\s+({NUMBER})\s*$", out, re.M)
    assert [r[0] for r in rows] == ["phi", "psi"], out
    assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r[1:])
    fraction = re.search(rf"^10 frames in .*fraction with φ > 0 \(per residue\): ({NUMBER})$",
                         out, re.M)
    assert fraction and 0.0 <= float(fraction.group(1)) <= 1.0, out
    traj = mdtraj.load(str(folder / "torsional_digs" / "trajectory.dcd"),
                       top=systems.shipped_path("alanine_dipeptide.pdb"))
    assert traj.n_frames == 10 and traj.n_atoms == 22
    log = (folder / "torsional_digs" / "log.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in log[1:]] == list(range(2, 21, 2))


def _check_torsional_digs_openmmtools(out, folder):
    rates = re.findall(rf"(phi|psi) ALA2: ({NUMBER})/({NUMBER})", out)
    assert len(rates) == 2 * 3, out  # φ and ψ: MCMCSampler, then each of 2 temperatures
    assert all(0.0 <= float(v) <= 1.0 for r in rates for v in r[1:])
    mcmc = re.search(r"^  DiGS force evaluations (\d+), Langevin steps 20$", out, re.M)
    assert mcmc and int(mcmc.group(1)) >= 2 * 2 * 2 * (1 + 5), out  # iterations × sweeps × levels
    assert re.search(r"^ReplicaExchangeSampler: 2 replicas at 300, 450 K, 2 iterations", out, re.M)
    exchange = re.search(rf"^  DiGS force evaluations (\d+); exchange acceptance ({NUMBER}); "
                         r"final reduced energies finite: (\w+)$", out, re.M)
    assert exchange and int(exchange.group(1)) >= 2 * 2 * 2 * 2 * (1 + 5), out
    assert 0.0 <= float(exchange.group(2)) <= 1.0 and exchange.group(3) == "True"
    from openmmtools import multistate  # imported here: it prints a pymbar banner
    reporter = multistate.MultiStateReporter(
        str(folder / "torsional_digs_openmmtools" / "replica_exchange.nc"), open_mode="r")
    energies, _, _ = reporter.read_energies()   # (iterations + 1, replicas, states), reduced
    reporter.close()
    assert energies.shape == (3, 2, 2) and np.isfinite(energies).all()


CHECKS = {"ala2_pipeline.py": _check_ala2_pipeline, "bridge_forces.py": _check_bridge_forces,
          "digs_in_simulation.py": _check_digs_in_simulation, "dikl_dw4.py": _check_dikl_dw4,
          "torsional_digs_openmmtools.py": _check_torsional_digs_openmmtools,
          "torsional_digs_simulation.py": _check_torsional_digs_simulation}


@pytest.mark.parametrize("script", sorted(TINY))
def test_example_runs(script, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)] + TINY[script],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    CHECKS[script](result.stdout, tmp_path)

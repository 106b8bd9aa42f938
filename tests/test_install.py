"""A regular (non-editable) install finds the shipped ``systems/`` files."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(600)
def test_wheel_install_finds_shipped_files(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheel_dir), REPO], check=True, cwd=tmp_path)
    wheels = list(wheel_dir.glob("openmm_dikl-*.whl"))
    assert len(wheels) == 1
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheels[0])], check=True, cwd=tmp_path)
    script = textwrap.dedent("""
        import os, openmm_dikl
        from openmm_dikl import systems
        assert openmm_dikl.__file__.startswith(os.environ["TARGET"]), openmm_dikl.__file__
        for name in ["alanine_dipeptide.prmtop", "alanine_dipeptide.pdb", "mog40.json",
                     "val_split_DW4.npy", "val_split_LJ13-1000.npy"]:
            path = systems.shipped_path(name)
            assert path.startswith(os.environ["TARGET"]), path
        assert systems.get("dw4").reference_samples(10).shape == (10, 4, 2)
        assert systems.get("alanine_dipeptide_vacuum").n_particles == 22
        from openmm_dikl import analysis, dikl, nn, samplers  # every subpackage is installed
        assert dikl.load_sampler("dw4").target_name == "dw4"
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(target), TARGET=str(target))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")

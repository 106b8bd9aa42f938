"""Smoke-run every example script with tiny settings."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

#: example -> tiny arguments
TINY = {
    "ala2_pipeline.py": ["--tiny", "--force-evals", "2000", "--chains", "4", "--iterations", "2",
                         "--samples", "200", "--refine", "3"],
    "bridge_forces.py": ["--batch", "8", "--workers", "2"],
    "digs_in_simulation.py": ["--sweeps", "500", "--peptide-sweeps", "100"],
    "dikl_dw4.py": ["--tiny", "--iterations", "3", "--samples", "300", "--refine", "5"],
}


def test_every_example_is_listed():
    scripts = {f for f in os.listdir(EXAMPLES) if f.endswith(".py")}
    assert scripts == set(TINY), f"add tiny settings for {scripts ^ set(TINY)}"


@pytest.mark.parametrize("script", sorted(TINY))
def test_example_runs(script, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)] + TINY[script],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "examples print what they did"

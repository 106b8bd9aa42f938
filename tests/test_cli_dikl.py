"""CLI train -> generate -> evaluate on a tiny DW-4 recipe, and its bad-input errors."""
import json
import os
import subprocess
import sys

import mdtraj
import numpy as np
import pytest
import torch

from openmm_dikl.cli import main

TINY_RECIPE = {
    "system": "dw4",
    "generator": None,
    "score_model": None,
    "dikl": {"n_levels": 5, "batch_size": 16, "score_steps_per_iter": 2, "n_importance": 4,
             "n_ais_steps": 0, "n_mala_steps": 2, "n_iterations": 3, "checkpoint_every": 1,
             "seed": 7},
    "notes": "smoke test",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from openmm_dikl.nn import EGNNGenerator, EGNNScore
    folder = tmp_path_factory.mktemp("dikl")
    recipe = dict(TINY_RECIPE, generator=EGNNGenerator(4, 2, n_layers=1, hidden=8).config,
                  score_model=EGNNScore(4, 2, n_layers=1, hidden=8).config)
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe))
    assert main(["train", "dw4", "--config", str(path), "--out", str(folder / "run"),
                 "--no-progress"]) == 0
    return folder


def test_train_writes_result(trained):
    result = json.loads((trained / "run" / "result.json").read_text())
    assert result["iterations"] == 3 and result["seed"] == 7
    assert 0 < result["cpu_time_s"] < 600
    assert {"w2", "energy_tvd", "distance_tvd"} <= set(result["metrics"])
    assert (trained / "run" / "sampler.pt").exists()
    # resuming to a larger total continues from the checkpoint
    assert main(["train", "dw4", "--config", str(trained / "recipe.json"), "--out",
                 str(trained / "run"), "--resume", "--iterations", "4", "--no-progress"]) == 0
    assert json.loads((trained / "run" / "result.json").read_text())["iterations"] == 4
    # fine-tuning: a new run with other settings starts from the trained networks
    recipe = json.loads((trained / "recipe.json").read_text())
    recipe["dikl"].update(n_mala_steps=4, n_iterations=1)
    (trained / "finetune.json").write_text(json.dumps(recipe))
    source = str(trained / "run" / "checkpoint.pt")
    assert main(["train", "dw4", "--config", str(trained / "finetune.json"), "--out",
                 str(trained / "finetune"), "--init-from", source, "--no-progress"]) == 0
    result = json.loads((trained / "finetune" / "result.json").read_text())
    assert result["iterations"] == 1 and result["init_from"] == source
    assert "--init-from" in result["command"]
    parent = torch.load(source, weights_only=False)["generator_state"]
    child = torch.load(trained / "finetune" / "checkpoint.pt", weights_only=False)
    moved = max(float((child["generator_state"][k] - v).abs().max()) for k, v in parent.items())
    assert 0 < moved < 0.1  # one step from the parent's networks, not from a fresh start
    # an interrupted fine-tuning (no result.json yet) still records where it started
    (trained / "finetune" / "result.json").unlink()
    assert main(["train", "dw4", "--config", str(trained / "finetune.json"), "--out",
                 str(trained / "finetune"), "--resume", "--iterations", "2", "--no-progress"]) == 0
    result = json.loads((trained / "finetune" / "result.json").read_text())
    assert result["iterations"] == 2 and result["init_from"] == source


@pytest.mark.parametrize("ext", [".npy", ".dcd", ".pdb", ".h5"])
def test_generate_formats(trained, ext, tmp_path):
    out = tmp_path / f"samples{ext}"
    assert main(["generate", str(trained / "run" / "sampler.pt"), "-n", "50", "--seed", "1",
                 "--out", str(out)]) == 0
    if ext == ".npy":
        x = np.load(out)
        assert x.shape == (50, 4, 2)
    else:
        kwargs = {"top": str(tmp_path / "samples.pdb")} if ext == ".dcd" else {}
        assert mdtraj.load(str(out), **kwargs).n_frames == 50
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_evaluate_prints_table_and_plots(trained, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["generate", str(trained / "run" / "sampler.pt"), "-n", "2000", "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--system", "dw4", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "w2 (nm)" in printed.lower() and "noise floor" in printed
    assert (tmp_path / "s_histograms.png").exists()


def run_cli(argv, cwd):
    return subprocess.run([sys.executable, "-m", "openmm_dikl.cli"] + argv, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_bad_inputs(trained, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "lj.json").write_text(json.dumps(dict(TINY_RECIPE, system="lj13")))
    (tmp_path / "lj.npy").write_bytes(b"")
    np.save(tmp_path / "wrong.npy", np.zeros((10, 13, 3)))
    cases = [
        (["train", "nope", "--out", "o"], "unknown system 'nope'"),
        (["train", "dw4", "--config", "bad.json", "--out", "o"], "not valid JSON"),
        (["train", "dw4", "--config", "lj.json", "--out", "o"], "is for system 'lj13'"),
        (["train", "dw4", "--config", "missing.json", "--out", "o"], "missing.json"),
        (["train", "dw4", "--out", "o", "--init-from", "missing.pt"], "missing.pt"),
        (["train", "dw4", "--out", "o", "--init-from", str(trained / "run" / "sampler.pt")],
         "holds a generator built with"),  # a sampler.pt of the tiny recipe's networks
        (["train", "dw4", "--out", "o", "--init-from", str(trained / "run" / "checkpoint.pt")],
         "holds a score network for other settings: schedule.n_levels=5"),  # bundled recipe: T = 20
        (["train", "dw4", "--out", "o", "--resume", "--init-from", "x.pt"],
         "--resume and --init-from exclude each other"),
        (["generate", "missing.pt", "-n", "5", "--out", "x.npy"], "missing.pt"),
        (["generate", str(trained / "run" / "sampler.pt"), "-n", "5", "--out", "x.xyz"], "unsupported output format"),
        (["generate", str(trained / "run" / "sampler.pt"), "-n", "5", "--out", "no/x.npy"], "does not exist"),
        (["evaluate", "wrong.npy", "--system", "dw4"], "shape (batch, 4, 2)"),
        (["evaluate", "missing.npy", "--system", "dw4"], "does not exist"),
        (["evaluate", "wrong.npy", "--system", "nope"], "unknown system 'nope'"),
    ]
    for argv, message in cases:
        before = set(os.listdir(tmp_path))
        result = run_cli(argv, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (argv, result.stderr)
        assert len(lines) == 1 and message in lines[0], (argv, result.stderr)
        assert set(os.listdir(tmp_path)) == before, argv

"""Data-parallel DiKL training (torch.distributed, gloo, 2 CPU processes) on tiny DW-4 models.

The two processes are started once per module with torch.multiprocessing (spawn; most of
the time is their import of torch and OpenMM) and meet through a file rendezvous in a tmp
folder, so no network port is needed.  They run every distributed scenario in turn and
write what they saw; the tests below check those files against single-process runs.
"""
import copy
import faulthandler
import gc
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from openmm_dikl import systems
from openmm_dikl.dikl import distributed
from openmm_dikl.dikl import DiKLConfig, DiKLTrainer
from openmm_dikl.nn import EGNNGenerator, EGNNScore
from openmm_dikl.seeding import derived_seed

WORLD = 2
SETTINGS = dict(n_levels=5, batch_size=8, score_steps_per_iter=1, n_importance=4,
                n_ais_steps=1, n_mala_steps=3, lr_generator=1e-3, lr_score=1e-3,
                grad_clip=10.0, ema_decay=0.9, checkpoint_every=1, seed=3)


def make_trainer(settings=SETTINGS, distributed_=None, init_seed=0):
    torch.manual_seed(init_seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    generator = EGNNGenerator(4, 2, hidden=16, n_layers=2).double()
    score = EGNNScore(4, 2, hidden=16, n_layers=1).double()
    return DiKLTrainer(systems.get("dw4"), generator, score, DiKLConfig.from_dict(settings),
                       distributed=distributed_)


def _join(rank, rendezvous):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=WORLD)


def _worker(rank, rendezvous, folder):
    faulthandler.enable(all_threads=True)  # a C++ abort prints the Python stacks to stderr
    _join(rank, rendezvous)
    try:
        # 1. one iteration from scratch
        first = make_trainer()
        row = first.step()
        state = first.state_dict()
        if rank == 0:
            torch.save({"state": state, "row": row, "world_size": first.world_size},
                       os.path.join(folder, "one_step.pt"))
        # 2. resume the 1-process checkpoint in folder/run for one more iteration
        second = make_trainer()
        second.train(n_iterations=2, out_dir=os.path.join(folder, "run"), resume=True,
                     progress=False)
        adam_steps = sorted({int(s["step"]) for s in
                             second.opt_generator.state_dict()["state"].values()})
        flat = torch.cat([p.detach().flatten() for p in second.generator.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            torch.save({"iteration": second.iteration, "adam_steps": adam_steps,
                        "same_on_all_ranks": torch.equal(gathered[0], gathered[1])},
                       os.path.join(folder, "resumed.pt"))
        # 3. a new 2-process run from the networks of run 2 (fine-tuning, other settings)
        parent = os.path.join(folder, "run", "checkpoint.pt")
        parent_state = torch.load(parent, weights_only=False)["generator_state"]
        third = make_trainer(dict(SETTINGS, n_mala_steps=2), init_seed=1)  # other random start
        third.train(n_iterations=1, out_dir=os.path.join(folder, "tuned"), progress=False,
                    init_from=parent)
        flat = torch.cat([p.detach().flatten() for p in third.generator.parameters()])
        dist.all_gather(gathered, flat)
        if rank == 0:
            moved = max(float((v - parent_state[k]).abs().max())
                        for k, v in third.generator.state_dict().items())
            torch.manual_seed(1)
            fresh = EGNNGenerator(4, 2, hidden=16, n_layers=2).double().state_dict()
            apart = max(float((v - parent_state[k]).abs().max()) for k, v in fresh.items())
            torch.save({"moved": moved, "apart": apart, "iteration": third.iteration,
                        "same_on_all_ranks": torch.equal(gathered[0], gathered[1])},
                       os.path.join(folder, "tuned.pt"))
        # Orderly shutdown: the DDP wrappers go before the group, and no process leaves
        # while the other may still talk to it.
        for trainer in (first, second, third):
            trainer.close()
        del first, second, third, trainer
        gc.collect()
        dist.barrier()
    finally:
        distributed.cleanup()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Folder with the results of the two-process runs (see ``_worker``)."""
    folder = tmp_path_factory.mktemp("ddp")
    single = make_trainer()
    single.train(n_iterations=1, out_dir=str(folder / "run"), progress=False)
    single.close()
    mp.spawn(_worker, args=(str(folder / "rdzv"), str(folder)), nprocs=WORLD, join=True)
    return folder


def test_two_processes_take_the_step_of_the_global_batch(two_processes):
    result = torch.load(two_processes / "one_step.pt", weights_only=False)
    assert result["world_size"] == WORLD
    two = result["state"]

    # Reference in one process: the same global batch is rank 0's share (8 / 2 samples,
    # generator seeded with `seed`) plus rank 1's (seeded with derived_seed(seed, 1)); its
    # gradient is the mean of the two share gradients, then one Adam step.
    ref = make_trainer(dict(SETTINGS, batch_size=SETTINGS["batch_size"] // WORLD),
                       distributed_=False)
    assert ref.world_size == 1
    rngs = [torch.Generator().manual_seed(derived_seed(SETTINGS["seed"], r)) for r in range(WORLD)]
    start_generator = copy.deepcopy(ref.generator.state_dict())
    ref._set_learning_rates()
    ref.opt_score.zero_grad()
    for rng in rngs:
        ref.rng = rng
        (ref.score_loss() / WORLD).backward()
    ref._update(ref.score_model, ref.opt_score)
    ref.opt_generator.zero_grad()
    start_steps, adapted, counts = ref.step_sizes.clone(), [], []
    sample = ref.posterior.sample

    def recording_sample(*args, groups=None, **kwargs):
        counts.append(torch.bincount(groups, minlength=len(start_steps)).double())
        return sample(*args, groups=groups, **kwargs)

    ref.posterior.sample = recording_sample
    for rng in rngs:
        ref.rng, ref.step_sizes = rng, start_steps
        loss, _ = ref.generator_loss()
        (loss / WORLD).backward()
        adapted.append(ref.step_sizes)
    ref._update(ref.generator, ref.opt_generator)
    ref._update_ema()
    # step sizes: per level, geometric mean of the two shares weighted by their samples
    total = counts[0] + counts[1]
    log_mean = (counts[0] * adapted[0].log() + counts[1] * adapted[1].log()) / total.clamp(min=1)
    expected_steps = torch.where(total > 0, log_mean.exp(), start_steps)

    # float64 models; the only differences are the order of the gradient averaging
    for what, module in (("generator_state", ref.generator), ("score_state", ref.score_model),
                         ("generator_ema_state", ref.generator_ema)):
        for name, value in module.state_dict().items():
            torch.testing.assert_close(two[what][name], value, rtol=1e-9, atol=1e-12,
                                       msg=f"{what}.{name}")
    torch.testing.assert_close(two["step_sizes"], expected_steps, rtol=1e-12, atol=0.0)
    # the test can fail: the step changed the weights and the shares were different
    moved = max(float((two["generator_state"][k] - v).abs().max())
                for k, v in start_generator.items())
    assert moved > 1e-5
    assert not torch.equal(adapted[0], adapted[1])
    assert len(two["rng_states"]) == WORLD and two["world_size"] == WORLD
    assert result["row"]["energy_evaluations"] == ref.posterior.n_evaluations


def test_one_process_checkpoint_resumes_under_two_and_back(two_processes):
    resumed = torch.load(two_processes / "resumed.pt", weights_only=False)
    assert resumed["iteration"] == 2
    assert resumed["adam_steps"] == [2]  # Adam continued from the 1-process state
    assert resumed["same_on_all_ranks"]  # the ranks stay in lock step
    out_dir = str(two_processes / "run")
    state = torch.load(os.path.join(out_dir, "checkpoint.pt"), weights_only=True)
    assert state["iteration"] == 2 and state["world_size"] == WORLD
    assert len(state["rng_states"]) == WORLD
    with open(os.path.join(out_dir, "log.csv")) as handle:
        lines = handle.read().splitlines()
    assert [line.split(",")[0] for line in lines] == ["iteration", "1", "2"]
    assert os.path.exists(os.path.join(out_dir, "sampler.pt"))
    # and back to one process
    again = make_trainer()
    rows = again.train(n_iterations=3, out_dir=out_dir, resume=True, progress=False)
    assert [r["iteration"] for r in rows] == [3]
    assert torch.isfinite(torch.tensor(rows[0]["score_gap"]))


def test_two_processes_start_from_another_runs_networks(two_processes):
    tuned = torch.load(two_processes / "tuned.pt", weights_only=False)
    assert tuned["iteration"] == 1 and tuned["same_on_all_ranks"]
    assert tuned["apart"] > 0.5  # the trainer's own random start is far from the parent
    assert 0 < tuned["moved"] < 0.1  # one step from the parent, not from the random start


def test_helpers_without_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.init_from_env()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    distributed.barrier()
    torch.testing.assert_close(distributed.all_reduce_mean(torch.tensor([1.0, 2.0])),
                               torch.tensor([1.0, 2.0], dtype=torch.float64))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        distributed.init_from_env()
    cmd = distributed.torchrun_command(2, ["train", "dw4", "--out", "x"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    assert cmd[-4:] == ["train", "dw4", "--out", "x"]
    with pytest.raises(ValueError, match="nproc"):
        distributed.torchrun_command(0, [])
    with pytest.raises(ValueError, match="distributed=True"):
        make_trainer(distributed_=True)


def test_cli_nproc_relaunches_the_command_under_torchrun(tmp_path, monkeypatch):
    import subprocess
    import sys

    from openmm_dikl import cli
    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "run",
                        lambda cmd, **kwargs: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    out = str(tmp_path / "run")
    assert cli.main(["train", "dw4", "--out", out, "--nproc", "2", "--iterations", "5",
                     "--no-progress"]) == 0
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                      "--standalone", "-m", "openmm_dikl.cli", "train", "dw4", "--out", out,
                      "--iterations", "5", "--no-progress"]]
    assert cli.main(["train", "dw4", "--out", out, "--nproc", "0"]) == 2

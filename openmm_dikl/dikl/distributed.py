"""Process-group helpers for data-parallel DiKL training (``torch.distributed``, gloo, CPU).

``openmm-dikl train SYSTEM --nproc N`` starts N copies of itself with torchrun
(``python -m torch.distributed.run``); each copy calls :func:`init_from_env`, which reads
the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins the default process group with the gloo backend.  Outside
torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) nothing is
initialised and every helper answers as for a single process (rank 0 of 1), so the
single-process code path never touches ``torch.distributed``.

:class:`~openmm_dikl.dikl.DiKLTrainer` uses the default group when one is initialised
with more than one process (data-parallel training of N processes):

* both networks are wrapped in :class:`torch.nn.parallel.DistributedDataParallel`
  (:func:`data_parallel`; gradients are averaged over the processes during ``backward``,
  rank 0's initial weights are broadcast);
* every batch of the config is the global batch: process r draws its share
  (:func:`share`) from its own torch.Generator, seeded with
  :func:`openmm_dikl.seeding.derived_seed` (``seed`` itself on rank 0), runs the
  posterior sampler on its share and weights its loss by share/(n/N), so the averaged
  gradient is that of the mean over the global batch;
* the per-level MALA step sizes are adapted on each share and then averaged over the
  processes (:func:`weighted_geometric_mean`, weighted by the samples per level); the
  log row holds global averages and sums (:func:`all_reduce_mean`);
* only rank 0 writes files; checkpoints hold unwrapped state dicts plus every rank's
  generator state (:func:`all_gather_objects`), so a run can be resumed with any number
  of processes (ranks not in the checkpoint get a fresh seed from ``seed``, rank and
  iteration; the same N resumes exactly).
"""
import datetime
import inspect
import logging
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["init_from_env", "is_initialized", "rank", "world_size", "is_main", "barrier",
           "cleanup", "all_reduce_mean", "all_gather_objects", "weighted_geometric_mean",
           "share", "data_parallel", "SampleModule", "torchrun_command", "ENV_VARS"]

logger = logging.getLogger(__name__)

#: Environment variables torchrun sets for every process it starts.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_initialized():
    """True if the default ``torch.distributed`` process group exists."""
    return dist.is_available() and dist.is_initialized()


def init_from_env(backend="gloo", timeout_s=1800.0, threads=None):
    """Join the default process group described by torchrun's environment variables.

    Parameters
    ----------
    backend : str
        ``torch.distributed`` backend (gloo: CPU tensors).
    timeout_s : float
        Seconds a collective may wait for the other processes before failing.
    threads : int, optional
        torch intra-op threads of this process; default ``max(1, cpu_count //
        LOCAL_WORLD_SIZE)`` under torchrun, so N local processes do not oversubscribe
        the cores.  Unchanged for a single process.

    Returns
    -------
    bool
        True if a group with more than one process is (now) initialised; False for a single
        process (``WORLD_SIZE`` unset or 1), in which case nothing is initialised.

    Raises
    ------
    ValueError
        If ``WORLD_SIZE`` > 1 but ``RANK``, ``MASTER_ADDR`` or ``MASTER_PORT`` is missing.
    """
    if is_initialized():
        return dist.get_world_size() > 1
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={size} but {', '.join(missing)} not set; start the "
                         "processes with torchrun (python -m torch.distributed.run)")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(int(threads))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("rank %d of %d joined the %s process group (%d threads)", dist.get_rank(),
                dist.get_world_size(), backend, threads)
    return dist.get_world_size() > 1


def rank():
    """Rank of this process in the default group (0 without a group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size():
    """Number of processes in the default group (1 without a group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main():
    """True on rank 0 (the process that writes files), and without a group."""
    return rank() == 0


def barrier():
    """Wait until every process reaches this point (no-op without a group)."""
    if is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup():
    """Leave and destroy the default process group (no-op without one)."""
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values):
    """Average a float64 tensor over all processes (returned as a new tensor).

    Parameters
    ----------
    values : torch.Tensor
        Same shape on every process.

    Returns
    -------
    torch.Tensor
        The element-wise mean over processes (``values`` itself, copied, without a group).
    """
    out = torch.as_tensor(values, dtype=torch.float64).clone()
    if is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def all_gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a group); collective."""
    if not (is_initialized() and dist.get_world_size() > 1):
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def weighted_geometric_mean(values, weights, default):
    """Element-wise geometric mean over processes of positive ``values``, weighted.

    Parameters
    ----------
    values : torch.Tensor, shape=(m,), float64
        This process's values (> 0).
    weights : torch.Tensor, shape=(m,)
        This process's weight of each entry (e.g. its number of samples).
    default : torch.Tensor, shape=(m,)
        Result where the weights of all processes sum to zero.

    Returns
    -------
    torch.Tensor, shape=(m,)
        exp(Σ_r w_r log v_r / Σ_r w_r) over the processes r (this process alone without
        a group).
    """
    weights = torch.as_tensor(weights, dtype=torch.float64)
    sums = all_reduce_mean(torch.stack([weights * torch.log(values), weights]))
    mean_log = sums[0] / sums[1].clamp(min=1e-300)
    return torch.where(sums[1] > 0, torch.exp(mean_log), default)


def share(n, rank_, world):
    """Process ``rank_``'s part of ``n`` items split as evenly as possible over ``world``:
    ``n // world``, plus one for the first ``n % world`` ranks."""
    return n // world + (1 if rank_ < n % world else 0)


class SampleModule(torch.nn.Module):
    """Wraps a generator so that ``forward(n, generator)`` is ``generator.sample``.

    DistributedDataParallel synchronises the gradients only of what runs through
    ``forward``.
    """

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, n, generator=None):
        return self.generator.sample(n, generator=generator)


def data_parallel(module):
    """``module`` in a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper whose
    buffers (constant features) are synchronised once, at construction, not every
    forward (needs an initialised process group)."""
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
               inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(module, **no_sync)


def torchrun_command(nproc, argv):
    """The command line that runs ``openmm-dikl ARGV`` as ``nproc`` processes on this machine.

    Parameters
    ----------
    nproc : int
        Processes (``--nproc_per_node``); torchrun's ``--standalone`` rendezvous.
    argv : list of str
        Arguments of ``openmm-dikl`` for every process (without ``--nproc``).

    Returns
    -------
    list of str
        ``[python, -m, torch.distributed.run, --nproc_per_node=N, --standalone, -m,
        openmm_dikl.cli, *argv]``.
    """
    if isinstance(nproc, bool) or int(nproc) != nproc or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    return ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={int(nproc)}",
             "--standalone", "-m", "openmm_dikl.cli"] + [str(a) for a in argv])

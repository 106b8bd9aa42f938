"""Process-group helpers for data-parallel DiKL training (``torch.distributed``, gloo, CPU).

``openmm-dikl train SYSTEM --nproc N`` starts N copies of itself with torchrun
(``python -m torch.distributed.run``); each copy calls :func:`init_from_env`, which reads
the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins the default process group with the gloo backend.  Outside
torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) nothing is
initialised and every helper answers as for a single process (rank 0 of 1), so the
single-process code path never touches ``torch.distributed``.

:class:`~openmm_dikl.dikl.DiKLTrainer` uses the default group when one is initialised
with more than one process; see its ``Notes``.
"""
import datetime
import logging
import os
import sys

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_initialized", "rank", "world_size", "is_main", "barrier",
           "cleanup", "all_reduce_mean", "torchrun_command", "ENV_VARS"]

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

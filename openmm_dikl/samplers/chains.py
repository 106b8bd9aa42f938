"""Independent chains of one run in worker processes, merged into one output.

``run_sampler(..., workers=W)`` runs its ``chains`` chains as independent runs in W
spawned processes (any method; each process has its own OpenMM Context or torch
sampler).  Chain k is exactly ``run_sampler(target, method, force_evals // chains,
seed=chain_seed(seed, k), n_frames=n_frames // chains, positions=<its start>, ...)``;
the outputs are merged as the batched ``chains`` output is (frame ``i * chains + k`` is
chain k at report i; the CSV's ``force_evaluations`` counts all chains).
"""
import concurrent.futures
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile

import numpy as np
import torch
from openmm import unit
from tqdm.auto import tqdm

from .. import systems
from ..seeding import derived_seed
from .base import ChainResult, SamplingError
from .output import merge_chains

__all__ = ["chain_seed", "run_chains_in_workers"]

logger = logging.getLogger(__name__)


def chain_seed(seed, chain):
    """Seed of chain ``chain`` of a multi-process run with ``seed`` (``seed`` for chain 0).

    See :func:`openmm_dikl.seeding.derived_seed`.
    """
    if int(chain) < 0:
        raise ValueError(f"chain must be >= 0, got {chain}")
    return derived_seed(seed, chain)


def _target_spec(target):
    """How a worker process rebuilds ``target``: its bundled name, or the pickled object."""
    if target.name in systems.names():
        return ("bundled", target.name)
    try:
        return ("pickled", pickle.dumps(target))
    except Exception as err:  # pickle raises several types
        raise ValueError(f"target {target.name!r} cannot be sent to worker processes "
                         f"({err}); run it with workers=None") from err


def _chain_worker(run, spec, method, force_evals, out, seed, n_frames, platform, positions,
                  threads, options):
    """Run one chain in a worker process with ``run`` (``run_sampler``); its ChainResult."""
    torch.set_num_threads(threads)
    target = systems.get(spec[1]) if spec[0] == "bundled" else pickle.loads(spec[1])
    return run(target, method=method, force_evals=force_evals, out=out, seed=seed,
                       n_frames=n_frames, platform=platform, positions=positions,
                       progress=False, **options)


def _chain_starts(positions, n_chains):
    if positions is not None and not unit.is_quantity(positions) and np.ndim(positions) == 3:
        if len(positions) != n_chains:
            raise ValueError(f"positions hold {len(positions)} starting configurations for "
                             f"{n_chains} chains; give one, or one per chain")
        return [np.asarray(p, dtype=np.float64) for p in positions]
    return [positions] * n_chains


def _run_all(run, target, method, force_evals, chain_outs, seed, n_frames, platform, starts,
             progress, workers, options):
    spec = _target_spec(target)
    threads = max(1, (os.cpu_count() or 1) // workers)
    n_chains = len(chain_outs)
    context = multiprocessing.get_context("spawn")  # never fork a process holding a Context
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_chain_worker, run, spec, method, force_evals // n_chains,
                               chain_outs[k], chain_seed(seed, k), n_frames, platform,
                               starts[k], threads, dict(options))
                   for k in range(n_chains)]
        done = tqdm(concurrent.futures.as_completed(futures), total=n_chains,
                    desc=f"{method} on {target.name}: {n_chains} chains in {workers} "
                         f"processes", unit="chain", disable=not progress)
        try:
            for future in done:
                future.result()  # re-raise the first failure
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [future.result() for future in futures]


def run_chains_in_workers(run, target, method, force_evals, out, seed, n_frames, platform,
                          positions, progress, workers, options):
    """The ``workers`` path of :func:`~openmm_dikl.samplers.run_sampler` (see the module doc).

    ``run`` is ``run_sampler`` itself (passed in, so that this module does not import
    the runner); every chain writes ``n_frames // chains`` frames.

    Returns
    -------
    ChainResult
        ``acceptance`` holds each statistic per chain (shape (n_chains, ...)).
    """
    options = dict(options)
    n_chains = int(options.pop("chains", 1))
    if n_chains < 1:
        raise ValueError(f"chains must be >= 1, got {n_chains}")
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    workers = min(int(workers), n_chains)
    if force_evals // n_chains < 1:
        raise ValueError(f"a budget of {force_evals} force evaluations is less than one per "
                         f"chain ({n_chains} chains)")
    starts = _chain_starts(positions, n_chains)
    if n_frames % n_chains:
        logger.warning("writing %d frames, not the %d asked for: every chain writes "
                       "%d", max(1, n_frames // n_chains) * n_chains, n_frames,
                       max(1, n_frames // n_chains))
    folder = tempfile.mkdtemp(prefix=".chains-", dir=os.path.dirname(os.path.abspath(out)))
    chain_outs = [os.path.join(folder, f"chain{k}.dcd") for k in range(n_chains)]
    try:
        results = _run_all(run, target, method, force_evals, chain_outs, seed,
                           max(1, n_frames // n_chains), platform, starts, progress, workers,
                           options)
        paths = merge_chains(target, chain_outs, out)
    except SamplingError as err:
        # keep the chain files: the failed chain's frames stay readable where it says
        raise SamplingError(f"{err} (chain files kept in {folder})") from err
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    acceptance = {key: np.stack([np.asarray(r.acceptance[key]) for r in results])
                  for key in results[0].acceptance}
    return ChainResult(n_steps=results[0].n_steps,
                       force_evaluations=sum(r.force_evaluations for r in results),
                       acceptance=acceptance, paths=paths,
                       n_frames=sum(r.n_frames for r in results))

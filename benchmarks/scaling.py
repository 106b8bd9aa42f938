"""Throughput of 1 against 2 processes: DiKL training and DiGS chains.

(a) DiKL training iterations per second on the DW-4 recipe (``systems/configs/dw4.json``,
    global batch 256): one process with one torch thread (with ``--threads2`` also one
    process with two threads) and two data-parallel processes (torch.distributed, gloo,
    one thread each, spawned with torch.multiprocessing, batch split 128 + 128).
    Warm-up iterations are excluded; each configuration times ``--iterations``
    iterations between barriers.
(b) DiGS force evaluations per second on alanine dipeptide in OBC2 implicit solvent
    (OpenMM Reference platform through the bridge, torsional DiGS), ``--chains`` chains
    of ``--evals`` force evaluations each: (i) end to end through
    ``run_sampler(..., chains=K, workers=W)`` for W = 1 and 2 (process start, imports
    and merging included), and (ii) the chains alone, timed in warm worker pools (the
    processes have imported everything and run one small chain first).  The batched
    single-process ``--chains`` path is shown for reference.

Target: 2 processes ≥ 1.6 × 1 process.  The machine may be shared: the load average is
printed before and after, and the configurations are run in alternation (``--rounds``).
Besides wall-clock rates, the CPU time (``time.process_time``) of every process is
summed: ``2 × CPU(1 process) / CPU(2 processes)`` is the speedup two idle cores would
give if the processes never waited for each other (an upper bound that a loaded machine
does not change much, since it counts only the work done, including the overhead of
the communication and of the smaller batches).
Run: ``python benchmarks/scaling.py [--iterations 6] [--evals 3000] [--rounds 2]``.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from openmm_dikl import systems  # noqa: E402
from openmm_dikl.dikl import DiKLTrainer  # noqa: E402
from openmm_dikl.dikl.recipes import load_recipe  # noqa: E402
from openmm_dikl.samplers import chains, run_sampler  # noqa: E402

ALA2 = "alanine_dipeptide_implicit"


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------ DiKL training
def _train_rate(recipe, n_iterations, warmup):
    """(iterations/s, CPU s per iteration of this process) of a trainer (distributed if a
    group is initialised)."""
    torch.manual_seed(0)
    trainer = DiKLTrainer.from_recipe(recipe)
    for _ in range(warmup):
        trainer.step()
    if dist.is_initialized():
        dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n_iterations):
        trainer.step()
    cpu = time.process_time() - cpu
    if dist.is_initialized():
        dist.barrier()
    elapsed = time.perf_counter() - start
    trainer.close()
    return n_iterations / elapsed, cpu / n_iterations


def _ddp_worker(rank, world, rendezvous, recipe, n_iterations, warmup, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        rate, cpu = _train_rate(recipe, n_iterations, warmup)
        cpus = [None] * world
        dist.all_gather_object(cpus, cpu)
        if rank == 0:
            with open(out, "w") as handle:
                json.dump({"rate": rate, "cpu": sum(cpus)}, handle)
    finally:
        dist.destroy_process_group()


def dikl_rates(n_iterations, warmup, rounds, threads2=False, batch_size=None):
    recipe = load_recipe("dw4")
    if batch_size:  # global batch of generator samples and of DSM samples
        recipe["dikl"].update(batch_size=batch_size, score_samples_per_iter=2 * batch_size)
    rates = {"1 process, 1 thread": [], "2 processes": []}
    cpu = {"1 process, 1 thread": [], "2 processes": []}
    if threads2:
        rates["1 process, 2 threads"] = []
    for _ in range(rounds):
        for threads in (1, 2) if threads2 else (1,):
            torch.set_num_threads(threads)
            name = f"1 process, {threads} thread{'s' if threads > 1 else ''}"
            rate, cpu_s = _train_rate(recipe, n_iterations, warmup)
            rates[name].append(rate)
            if threads == 1:
                cpu[name].append(cpu_s)
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "rate.json")
            start = time.perf_counter()
            mp.spawn(_ddp_worker, args=(2, os.path.join(folder, "rdzv"), recipe, n_iterations,
                                        warmup, out), nprocs=2, join=True)
            wall = time.perf_counter() - start
            with open(out) as handle:
                record = json.load(handle)
            rates["2 processes"].append(record["rate"])
            cpu["2 processes"].append(record["cpu"])
        print(f"  round done; 2-process spawn + run took {wall:.1f} s; load {load_average()}",
              flush=True)
    return rates, cpu


# ------------------------------------------------------------------------ DiGS chains
def _warm(_):
    """Import everything in a worker and run one tiny chain (Context creation included)."""
    with tempfile.TemporaryDirectory() as folder:
        chains._chain_worker(("bundled", ALA2), "digs", 50, os.path.join(folder, "w.dcd"), 0,
                             2, None, None, 1, {})
    return os.getpid()


def _timed_chain(*args):
    cpu = time.process_time()
    result = chains._chain_worker(*args)
    return result.force_evaluations, time.process_time() - cpu


def _chains_in_pool(n_workers, n_chains, evals, folder):
    """(force evaluations/s, CPU s per evaluation) of the chains alone in warm workers."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=context) as pool:
        list(pool.map(_warm, range(n_workers)))
        start = time.perf_counter()
        futures = [pool.submit(_timed_chain, ("bundled", ALA2), "digs", evals,
                               os.path.join(folder, f"pool{n_workers}_{k}.dcd"),
                               chains.chain_seed(0, k), 10, None, None, 1, {})
                   for k in range(n_chains)]
        done = [f.result() for f in futures]
        used = sum(d[0] for d in done)
        return used / (time.perf_counter() - start), sum(d[1] for d in done) / used


def _end_to_end(target, n_chains, evals, folder, workers):
    start = time.perf_counter()
    options = {"chains": n_chains} if n_chains > 1 else {}
    result = run_sampler(target, "digs", force_evals=n_chains * evals,
                         out=os.path.join(folder, f"e2e{workers}.dcd"), seed=0,
                         n_frames=10, progress=False, workers=workers, **options)
    return result.force_evaluations / (time.perf_counter() - start)


def digs_rates(n_chains, evals, rounds):
    target = systems.get(ALA2)
    rates = {"chains alone, 1 worker": [], "chains alone, 2 workers": [],
             "end to end, workers=1": [], "end to end, workers=2": [],
             "batched in-process (--chains, no --workers)": []}
    cpu = {"chains alone, 1 worker": [], "chains alone, 2 workers": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for w in (1, 2):
                name = f"chains alone, {w} worker{'s' if w > 1 else ''}"
                rate, cpu_s = _chains_in_pool(w, n_chains, evals, folder)
                rates[name].append(rate)
                cpu[name].append(cpu_s)
            for w in (1, 2):
                rates[f"end to end, workers={w}"].append(
                    _end_to_end(target, n_chains, evals, folder, w))
            rates["batched in-process (--chains, no --workers)"].append(
                _end_to_end(target, n_chains, evals, folder, None))
            print(f"  round done; load {load_average()}", flush=True)
    return rates, cpu


def report_cpu(cpu, baseline, parallel, what):
    one, two = statistics.median(cpu[baseline]), statistics.median(cpu[parallel])
    print(f"  CPU s per {what}: {baseline} {one:.4g}, {parallel} (all processes) {two:.4g}; "
          f"idle-machine bound 2 x {one:.4g} / {two:.4g} = {2 * one / two:.2f}x")


def report(title, rates, baseline, parallel, unit):
    print(f"\n{title}")
    for name, values in rates.items():
        print(f"  {name:<45s} median {statistics.median(values):9.2f} {unit}   "
              f"(runs: {', '.join(f'{v:.2f}' for v in values)})")
    base = statistics.median(rates[baseline])
    for name in parallel:
        print(f"  speedup {name} / {baseline}: {statistics.median(rates[name]) / base:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6, help="timed DiKL iterations")
    parser.add_argument("--warmup", type=int, default=1, help="DiKL warm-up iterations")
    parser.add_argument("--chains", type=int, default=2, help="DiGS chains")
    parser.add_argument("--evals", type=int, default=3000, help="force evaluations per chain")
    parser.add_argument("--rounds", type=int, default=2, help="alternating repeats")
    parser.add_argument("--threads2", action="store_true",
                        help="also time DiKL in one process with two torch threads")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global DiKL batch (default: the recipe's 256; DSM samples 2x)")
    parser.add_argument("--skip-dikl", action="store_true")
    parser.add_argument("--skip-digs", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) at start: {load_average()}")
    print(f"uptime: {os.popen('uptime').read().strip()}")
    if not args.skip_dikl:
        rates, cpu = dikl_rates(args.iterations, args.warmup, args.rounds, args.threads2,
                                args.batch_size)
        report(f"DiKL training, DW-4 recipe (global batch {args.batch_size or 256})", rates,
               "1 process, 1 thread",
               [n for n in rates if n != "1 process, 1 thread"], "it/s")
        report_cpu(cpu, "1 process, 1 thread", "2 processes", "iteration")
    if not args.skip_digs:
        rates, cpu = digs_rates(args.chains, args.evals, args.rounds)
        report(f"DiGS on {ALA2}, {args.chains} chains x {args.evals} force evaluations", rates,
               "chains alone, 1 worker", ["chains alone, 2 workers"], "evals/s")
        report_cpu(cpu, "chains alone, 1 worker", "chains alone, 2 workers", "force evaluation")
        e2e = statistics.median(rates["end to end, workers=1"])
        print(f"  speedup end to end workers=2 / workers=1: "
              f"{statistics.median(rates['end to end, workers=2']) / e2e:.2f}x")
    print(f"\nload average at end: {load_average()}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()

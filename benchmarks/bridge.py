"""Benchmark of :class:`openmm_dikl.bridge.OpenMMBridge`.

(a) Per-configuration cost of the bridge against a raw OpenMM loop
    (``context.setPositions(numpy_array); context.getState(getEnergy=True, getForces=True)``)
    at batch 256, alanine dipeptide in vacuum, Reference platform.  Target: ratio <= 1.2.
(b) Throughput of 2 workers against 1 (in-process) at batch 1024: alanine dipeptide in
    OBC2 implicit solvent (Reference, and CPU with one thread per worker), and in vacuum on
    the Reference platform.  Target: speedup >= 1.6 on ala2 implicit / Reference.  For
    that case the hardware ceiling is measured too: two independent processes evaluating
    half the batch each, with no communication (on this 2-vCPU VM running two processes
    at once costs each of them 15-35 % more CPU time per configuration).
(c) Where the time of a 2-worker call goes: OpenMM (setPositions, getState, reading the
    forces) per configuration, and the transport of one 512-configuration chunk between
    two processes, pickled through a pipe (the old path) or as row bounds with the data in
    shared memory (the current path).

Warm-up calls are excluded; the methods compared are called in interleaved rounds (so
that load drift on a shared machine hits them alike) and each is reported by its median,
minimum and maximum.  CPU time is the sum over the calling process and the worker
processes (``/proc/<pid>/task/*/schedstat``, ns resolution; ``/proc/<pid>/stat``
otherwise).
``cpu bound = n_workers x CPU(1 worker) / CPU(n workers)`` is the speedup that idle cores
would give if the workers never waited for each other: other jobs on a shared machine
slow the wall-clock speedup, not this bound.  Positions are the shipped structure plus
Gaussian noise from a fixed seed.
Run: ``python benchmarks/bridge.py [--repeats 15] [--seed 0] [--only-speedup]``.
"""
import argparse
import multiprocessing
import os
import pickle
import platform as host_platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import unit  # noqa: E402

from openmm_dikl import _workers, systems  # noqa: E402
from openmm_dikl.bridge import OpenMMBridge  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def batch_of(target, n, seed):
    rng = np.random.default_rng(seed)
    x0 = target.positions.value_in_unit(unit.nanometer)
    return x0 + 0.003 * rng.standard_normal((n,) + x0.shape)


def process_cpu_s(pid):
    """CPU time (s) used so far by all threads of process ``pid``."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0])
        return total * 1e-9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK


def timed(fns, repeats, warmup=2, pids=None):
    """Wall and CPU times (s) of callables, interleaved so that load drift hits all alike.

    Parameters
    ----------
    fns : list of callable
        Functions without arguments.
    repeats : int
        Timed rounds; each round calls every function once, in order.
    warmup : int
        Untimed rounds first.
    pids : list of (list of int), optional
        Per function, further processes (workers) whose CPU time counts.

    Returns
    -------
    list of dict
        Per function ``wall`` and ``cpu``: numpy arrays (repeats,) in s.
    """
    pids = pids or [[] for _ in fns]
    for _ in range(warmup):
        for fn in fns:
            fn()
    out = [{"wall": [], "cpu": []} for _ in fns]
    for _ in range(repeats):
        for fn, extra, bucket in zip(fns, pids, out):
            cpu0 = time.process_time() + sum(process_cpu_s(p) for p in extra)
            start = time.perf_counter()
            fn()
            bucket["wall"].append(time.perf_counter() - start)
            bucket["cpu"].append(time.process_time() + sum(process_cpu_s(p) for p in extra)
                                 - cpu0)
    return [{k: np.array(v) for k, v in bucket.items()} for bucket in out]


def raw_loop(target, platform_name, properties=None):
    """The baseline: one Context, public OpenMM API, numpy positions, no unit conversion."""
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName(platform_name)
    context = (openmm.Context(target.system, integrator, platform, properties) if properties
               else openmm.Context(target.system, integrator, platform))

    def run(x):
        for conf in x:
            context.setPositions(conf)
            context.getState(getEnergy=True, getForces=True)
    run.context = context  # keep alive
    return run


def row(*cells, widths=(30, 10, 9, 6, 9, 9, 9, 9, 8, 8, 8)):
    print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                    for i, (c, w) in enumerate(zip(cells, widths))))


def part_a(repeats, seed):
    target = systems.get("alanine_dipeptide_vacuum")
    batch = 256
    x = batch_of(target, batch, seed)
    raw = raw_loop(target, "Reference")
    with OpenMMBridge(target.system, target.temperature, platform="Reference") as bridge:
        xt = torch.from_numpy(x)
        t_raw, t_np, t_torch = timed([lambda: raw(x), lambda: bridge.compute(x),
                                      lambda: bridge.compute(xt)], repeats)
    print("(a) per-configuration cost, alanine dipeptide vacuum, batch 256, Reference")
    row("method", "platform", "n_workers", "batch", "us/conf", "min", "ratio", "ratio(min)")
    per = 1e6 / batch
    for label, t in (("raw setPositions/getState loop", t_raw), ("bridge.compute(numpy)", t_np),
                     ("bridge.compute(torch)", t_torch)):
        row(label, "Reference", 1, batch, f"{np.median(t['wall']) * per:.2f}",
            f"{t['wall'].min() * per:.2f}",
            f"{np.median(t['wall']) / np.median(t_raw['wall']):.2f}",
            f"{t['wall'].min() / t_raw['wall'].min():.2f}")
    print("    ratio = bridge time / raw loop time, from medians and from minima "
          "(target <= 1.2; the bridge also checks the input and the length scale)")


def part_b(repeats, seed, cases):
    batch = 1024
    print(f"(b) throughput, batch {batch}: 2 workers (shared memory, dynamic chunks) vs 1 "
          f"(in-process); {repeats} interleaved calls each")
    row("system", "platform", "n_workers", "batch", "wall med", "wall min", "wall max",
        "CPU med", "speedup", "spd(min)", "cpu bound")
    for name, platform_name, properties in cases:
        target = systems.get(name)
        x = batch_of(target, batch, seed)
        bridges = {n_workers: OpenMMBridge(target.system, target.temperature,
                                           platform=platform_name, n_workers=n_workers,
                                           platform_properties=properties)
                   for n_workers in (1, 2)}
        try:
            results = timed([lambda b=b: b.compute(x) for b in bridges.values()], repeats,
                            pids=[b.worker_pids for b in bridges.values()])
        finally:
            for bridge in bridges.values():
                bridge.close()
        times = dict(zip(bridges, results))
        label = name.replace("alanine_dipeptide_", "ala2 ")
        label += " (Threads=1)" if properties else ""
        base = times[1]
        for n_workers, t in times.items():
            wall, cpu = t["wall"], t["cpu"]
            row(label, platform_name, n_workers, batch, f"{np.median(wall):.4f}",
                f"{wall.min():.4f}", f"{wall.max():.4f}", f"{np.median(cpu):.4f}",
                f"{np.median(base['wall']) / np.median(wall):.2f}",
                f"{base['wall'].min() / wall.min():.2f}",
                f"{n_workers * np.median(base['cpu']) / np.median(cpu):.2f}")
        if platform_name == "Reference" and name.endswith("implicit"):
            ceiling = hardware_ceiling(target, x, repeats)
            print(f"    2 independent processes, half the batch each, no bridge (what 2 cores "
                  f"give here): speedup median {np.median(ceiling):.2f}, "
                  f"quartiles {np.percentile(ceiling, 25):.2f}-{np.percentile(ceiling, 75):.2f}")
    print("    times in s per batch; speedup = time with 1 worker / time with n workers, from "
          "medians and from minima;\n    CPU = calling process + workers; cpu bound = "
          "n_workers x CPU(1) / CPU(n)  (target: speedup >= 1.6 for ala2 implicit, Reference)")


def _ceiling_worker(index, conn, barrier, system_xml, x, rounds):
    """Child of :func:`hardware_ceiling`: time a full batch alone (worker 0, the other one
    waiting) and half batches on both processes at once, in alternate phases."""
    context = _workers.make_context(openmm.XmlSerializer.deserialize(system_xml),
                                    "Reference", None)
    half = x[index * len(x) // 2:(index + 1) * len(x) // 2]
    energies, forces = np.empty(len(x)), np.empty(x.shape)
    _workers.evaluate_batch(context, x, energies, forces)  # warm-up
    alone, pair = [], []
    for _ in range(rounds):
        barrier.wait()
        if index == 0:
            start = time.perf_counter()
            _workers.evaluate_batch(context, x, energies, forces)
            alone.append(time.perf_counter() - start)
        barrier.wait()
        start = time.perf_counter()
        _workers.evaluate_batch(context, half, energies[:len(half)], forces[:len(half)])
        pair.append(time.perf_counter() - start)
    conn.send((alone, pair))


def hardware_ceiling(target, x, rounds):
    """Speedups (rounds,) of two independent processes, each evaluating half of ``x`` with
    no communication at all, over one process evaluating all of it: what 2 cores give."""
    mp_context = multiprocessing.get_context("spawn")
    barrier = mp_context.Barrier(2)
    xml = openmm.XmlSerializer.serialize(target.system)
    pipes = [mp_context.Pipe() for _ in range(2)]
    processes = [mp_context.Process(target=_ceiling_worker, daemon=True,
                                    args=(k, pipes[k][1], barrier, xml, x, rounds))
                 for k in range(2)]
    for process in processes:
        process.start()
    (alone, pair0), (_, pair1) = [parent.recv() for parent, _ in pipes]
    for process in processes:
        process.join(5)
    return np.array(alone) / np.maximum(pair0, pair1)


def _echo_worker(conn):
    """Child of part (c): answer pickled chunks with pickled results, bounds with bounds."""
    while True:
        message = conn.recv()
        if message is None:
            return
        if isinstance(message, np.ndarray):
            conn.send(("ok", np.zeros(message.shape[0]), np.zeros(message.shape)))
        else:
            conn.send(("ok",))


def part_c(repeats, seed):
    target = systems.get("alanine_dipeptide_implicit")
    x = batch_of(target, 512, seed)
    context = _workers.make_context(target.system, "Reference", None)
    energies, forces = np.empty(len(x)), np.empty(x.shape)
    state = None

    def set_positions():
        for conf in x:
            _workers._SET_POSITIONS(context, conf)

    def get_state():
        nonlocal state
        for _ in x:
            state = _workers._GET_STATE(context, _workers._ENERGY_AND_FORCES, False, -1)

    def read_forces():
        for b in range(len(x)):
            energies[b] = _workers._GET_ENERGY(state)
            state._getVectorAsNumpy(openmm.State.Forces, forces[b])

    openmm_times = timed([set_positions, get_state, read_forces,
                          lambda: _workers.evaluate_batch(context, x, energies, forces)],
                         repeats)
    mp_context = multiprocessing.get_context("spawn")
    parent, child = mp_context.Pipe()
    process = mp_context.Process(target=_echo_worker, args=(child,), daemon=True)
    process.start()
    try:
        transport = timed([lambda: (parent.send(x), parent.recv()),
                           lambda: (parent.send((0, 512, "omdikl_x", 1024)), parent.recv())],
                          5 * repeats)
    finally:
        parent.send(None)
        process.join(5)
    print("(c) where the time goes, ala2 implicit, Reference, one 512-configuration chunk")
    row("step", "", "", "batch", "ms/chunk", "min", "us/conf")
    for label, t in zip(("OpenMM setPositions", "OpenMM getState (computes)",
                         "read energy + forces", "evaluate_batch (all, in loop)"),
                        openmm_times):
        row(label, "", "", 512, f"{np.median(t['wall']) * 1e3:.3f}",
            f"{t['wall'].min() * 1e3:.3f}", f"{np.median(t['wall']) / 512 * 1e6:.2f}")
    for label, t in zip(("pipe round trip, pickled arrays", "pipe round trip, row bounds"),
                        transport):
        row(label, "", "", 512, f"{np.median(t['wall']) * 1e3:.3f}",
            f"{t['wall'].min() * 1e3:.3f}", f"{np.median(t['wall']) / 512 * 1e6:.2f}")
    print(f"    pickled chunk: {len(pickle.dumps(x, protocol=5)) / 1e3:.0f} kB out, "
          f"{len(pickle.dumps((energies, forces), protocol=5)) / 1e3:.0f} kB back; shared "
          "memory copies the same bytes once in the caller instead")


CASES = [("alanine_dipeptide_implicit", "Reference", None),
         ("alanine_dipeptide_implicit", "CPU", {"Threads": "1"}),
         ("alanine_dipeptide_vacuum", "Reference", None)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15,
                        help="timed calls per measurement (x4 in part a)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position noise")
    parser.add_argument("--only-speedup", action="store_true",
                        help="only part (b) on ala2 implicit / Reference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"host: {host_platform.node()}, {os.cpu_count()} CPU cores, OpenMM "
          f"{openmm.__version__}, torch {torch.__version__}, seed {args.seed}, "
          f"repeats {args.repeats} (warm-up excluded), load average before "
          f"{os.getloadavg()[0]:.2f}")
    if args.only_speedup:
        part_b(args.repeats, args.seed, CASES[:1])
    else:
        part_a(4 * args.repeats, args.seed)
        part_b(args.repeats, args.seed, CASES)
        part_c(args.repeats, args.seed)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

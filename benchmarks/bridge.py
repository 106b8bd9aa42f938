"""Benchmark of :class:`openmm_dikl.bridge.OpenMMBridge`.

(a) Per-configuration cost of the bridge against a raw OpenMM loop
    (``context.setPositions(numpy_array); context.getState(getEnergy=True, getForces=True)``)
    at batch 256, alanine dipeptide in vacuum, Reference platform.  Target: ratio <= 1.2.
(b) Throughput of 2 workers against 1 (in-process) at batch 1024: alanine dipeptide in
    OBC2 implicit solvent (Reference, and CPU with one thread per worker), and in vacuum on
    the Reference platform.  Target: speedup >= 1.6 (needs two idle cores).

Warm-up calls are excluded; the methods compared are called in interleaved rounds (so
that load drift on a shared machine hits them alike) and each is reported by its median
and its minimum time.  Positions are the shipped structure plus Gaussian noise from a
fixed seed.  Run: ``python benchmarks/bridge.py [--repeats 15] [--seed 0]``.
"""
import argparse
import os
import platform as host_platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import unit  # noqa: E402

from openmm_dikl import systems  # noqa: E402
from openmm_dikl.bridge import OpenMMBridge  # noqa: E402


def batch_of(target, n, seed):
    rng = np.random.default_rng(seed)
    x0 = target.positions.value_in_unit(unit.nanometer)
    return x0 + 0.003 * rng.standard_normal((n,) + x0.shape)


def timed(fns, repeats, warmup=2):
    """Wall times in s of several callables, interleaved so that load drift hits all alike.

    Parameters
    ----------
    fns : list of callable
        Functions without arguments.
    repeats : int
        Timed rounds; each round calls every function once, in order.
    warmup : int
        Untimed rounds first.

    Returns
    -------
    list of (float, float)
        (median, minimum) time in s per function.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [(float(np.median(t)), float(np.min(t))) for t in times]


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


def row(*cells, widths=(34, 10, 9, 6, 11, 11, 8, 8)):
    print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                    for i, (c, w) in enumerate(zip(cells, widths))))


def part_a(repeats, seed):
    target = systems.get("alanine_dipeptide_vacuum")
    batch = 256
    x = batch_of(target, batch, seed)
    raw = raw_loop(target, "Reference")
    with OpenMMBridge(target.system, target.temperature, platform="Reference") as bridge:
        xt = torch.from_numpy(x)
        ((t_raw, t_raw_min), (t_bridge, t_bridge_min), (t_torch, t_torch_min)) = timed(
            [lambda: raw(x), lambda: bridge.compute(x), lambda: bridge.compute(xt)], repeats)
    print("(a) per-configuration cost, alanine dipeptide vacuum, batch 256")
    row("method", "platform", "n_workers", "batch", "us/conf", "min us/conf", "ratio",
        "ratio(min)")
    per = 1e6 / batch
    row("raw setPositions/getState loop", "Reference", 1, batch, f"{t_raw * per:.2f}",
        f"{t_raw_min * per:.2f}", "1.00", "1.00")
    row("bridge.compute(numpy)", "Reference", 1, batch, f"{t_bridge * per:.2f}",
        f"{t_bridge_min * per:.2f}", f"{t_bridge / t_raw:.2f}",
        f"{t_bridge_min / t_raw_min:.2f}")
    row("bridge.compute(torch)", "Reference", 1, batch, f"{t_torch * per:.2f}",
        f"{t_torch_min * per:.2f}", f"{t_torch / t_raw:.2f}", f"{t_torch_min / t_raw_min:.2f}")
    print("    ratio = bridge time / raw loop time, from medians and from minima "
          "(target <= 1.2)")


def part_b(repeats, seed):
    batch = 1024
    cases = [("alanine_dipeptide_implicit", "Reference", None),
             ("alanine_dipeptide_implicit", "CPU", {"Threads": "1"}),
             ("alanine_dipeptide_vacuum", "Reference", None)]
    print(f"(b) throughput, batch {batch}: 2 workers vs 1 (in-process)")
    row("system", "platform", "n_workers", "batch", "s/batch", "min s/batch", "speedup",
        "spd(min)")
    for name, platform_name, properties in cases:
        target = systems.get(name)
        x = batch_of(target, batch, seed)
        bridges = {n_workers: OpenMMBridge(target.system, target.temperature,
                                           platform=platform_name, n_workers=n_workers,
                                           platform_properties=properties)
                   for n_workers in (1, 2)}
        try:
            times = dict(zip(bridges, timed([lambda b=b: b.compute(x) for b in
                                             bridges.values()], repeats)))
        finally:
            for bridge in bridges.values():
                bridge.close()
        label = name.replace("alanine_dipeptide_", "ala2 ")
        label += " (Threads=1)" if properties else ""
        for n_workers in (1, 2):
            median, minimum = times[n_workers]
            row(label, platform_name, n_workers, batch, f"{median:.4f}", f"{minimum:.4f}",
                f"{times[1][0] / median:.2f}", f"{times[1][1] / minimum:.2f}")
    print("    speedup = time with 1 worker / time with n workers, from medians and from "
          "minima (target >= 1.6;\n    needs two idle cores: on a shared machine the minima "
          "are the better estimate)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15,
                        help="timed calls per measurement (x4 in part a, /3 in part b)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position noise")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"host: {host_platform.node()}, {os.cpu_count()} CPU cores, OpenMM "
          f"{openmm.__version__}, torch {torch.__version__}, seed {args.seed}, "
          f"repeats {args.repeats} (median and min; warm-up excluded), load average "
          f"{os.getloadavg()[0]:.2f}")
    part_a(4 * args.repeats, args.seed)
    part_b(max(3, args.repeats // 3), args.seed)


if __name__ == "__main__":
    main()

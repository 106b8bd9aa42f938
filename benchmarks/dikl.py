"""Benchmark of the shipped DiKL samplers (``systems/checkpoints/<name>.pt``).

For every bundled system with a shipped checkpoint (DW-4, LJ-13, MW-32, MoG-40) this
loads the generator with :func:`openmm_dikl.dikl.load_sampler` and prints

* the metrics of the system's evaluation protocol (``docs/methods.md``;
  :func:`openmm_dikl.analysis.evaluation.evaluation_metrics` on ``--n-samples``
  samples), each with its spread over ``--repeats`` random subsets and the value an
  exact sampler scores on the same protocol (the *noise floor*) beside it:
  - DW-4, LJ-13 (reference set): W2 (nm), energy TVD and interatomic-distance TVD of
    2,000 model vs 2,000 reference samples, centred, 200 bins;
  - MoG-40 (modes): fraction of the 40 modes covered, mode-weight error and mean
    log-density of the samples;
  - MW-32 (basins): largest and mean |P̂(x_k > 0) − P(x_k > 0)| over the 16 coordinates;
* the same metrics after ``--refine`` exact MALA steps on the target from the first
  ``--n-refine`` samples (``openmm-dikl generate --refine``), and for reference-set
  systems the *symmetric floor*: the W2 an exactly rotation- and permutation-symmetric
  sampler scores against the reference set, which is itself not symmetric
  (:func:`openmm_dikl.analysis.protocol.noise_floor` with ``symmetrise=True``);
* the time to draw 1,000 samples from the generator (median and minimum of
  ``--timing-repeats`` calls after a warm-up; one torch thread unless ``--threads``);
* the training wall time, seed and command recorded in ``systems/checkpoints/<name>.json``
  beside the checkpoint, and the targets of the DiKL issue.

Run: ``python benchmarks/dikl.py [--systems dw4 mog40 ...] [--repeats 5] [--seed 0]``.
Systems without a shipped checkpoint are listed as missing.
"""
import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from openmm_dikl import systems  # noqa: E402
from openmm_dikl.analysis.evaluation import evaluation_metrics  # noqa: E402
from openmm_dikl.analysis.protocol import noise_floor  # noqa: E402
from openmm_dikl.dikl import BUNDLED_SAMPLERS, load_sampler  # noqa: E402
from openmm_dikl.samplers import refine_samples  # noqa: E402
from openmm_dikl.systems.base import shipped_path  # noqa: E402

#: Targets of the DiKL issue (the DiKL paper's numbers, ×1 in our units), keyed like the
#: metrics of the systems' evaluation protocols.
TARGETS = {
    "dw4": {"w2": 1.58, "energy_tvd": 0.17, "distance_tvd": 0.10, "wall_time_h": 1.0},
    "lj13": {"w2": 4.23, "energy_tvd": 0.24, "distance_tvd": 0.042, "wall_time_h": 2.5,
             "sample_1000_s": 0.05},
    "mog40": {"mode_coverage": 1.0, "mean_log_density": -7.2},
    "mw32": {"max_basin_weight_error": 0.03},
}


def time_sampling(sampler, n=1000, repeats=20):
    """(median, minimum) wall time in s of ``sampler.sample(n)`` after one warm-up call."""
    sampler.sample(n, seed=0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        sampler.sample(n, seed=i + 1)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def metric_rows(target, x, args):
    """(metric, model, ± std, refined, floor, symmetric floor) rows of samples x (nm)."""
    model = evaluation_metrics(target, x, n_repeats=args.repeats, seed=args.seed)
    refined_x = refine_samples(target, x[:args.n_refine], args.refine,
                               seed=args.seed).final_positions
    refined = evaluation_metrics(target, refined_x, n_repeats=args.repeats, seed=args.seed,
                                 floors=False)
    symmetric = {}
    if target.evaluation == "reference_set":  # the protocol with a reference set
        symmetric = noise_floor(target, n_repeats=args.repeats, seed=args.seed,
                                symmetrise=True)
    keys = [k for k in model if not k.endswith(("_std", "_floor"))
            and not k.startswith("reference_")]
    return [(k, model[k], model.get(f"{k}_std"), refined.get(k), model.get(f"{k}_floor"),
             symmetric.get(k)) for k in keys]


def recorded(name):
    """The JSON record beside a shipped checkpoint (empty dict if absent)."""
    try:
        with open(shipped_path(f"checkpoints/{name}.json")) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def fmt(value):
    return "—" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def benchmark(name, args):
    try:
        sampler = load_sampler(name)
    except FileNotFoundError as err:
        print(f"\n{name}: no shipped checkpoint ({err})")
        return
    target = systems.get(name)
    record = recorded(name)
    median, minimum = time_sampling(sampler, 1000, args.timing_repeats)
    print(f"\n== {name}: {sampler.source}")
    print(f"   generator {sampler.generator.config['class']} "
          f"({sum(p.numel() for p in sampler.generator.parameters())} parameters), "
          f"trained {record.get('iterations', '?')} iterations, seed {record.get('seed', '?')}")
    print(f"   training wall time: {fmt(record.get('wall_time_s'))} s "
          f"({fmt(record.get('wall_time_s', float('nan')) / 3600)} h) on {record.get('machine', '?')}")
    if record.get("command"):
        print(f"   command: {record['command']}")
    print(f"   1,000 samples: median {median * 1e3:.1f} ms, min {minimum * 1e3:.1f} ms "
          f"({torch.get_num_threads()} thread(s))")
    rows = metric_rows(target, sampler.sample(args.n_samples, seed=args.seed), args)
    targets = TARGETS.get(name, {})
    print(f"   CPU time of training: {fmt(record.get('cpu_time_s'))} s")
    print(f"   {'metric':<24}{'model':>10}{'± std':>9}{f'+{args.refine} MALA':>12}"
          f"{'floor':>9}{'sym. floor':>11}{'target':>9}")
    for key, value, std, refined_value, floor_value, sym_value in rows:
        print(f"   {key:<24}{fmt(value):>10}{fmt(std):>9}{fmt(refined_value):>12}"
              f"{fmt(floor_value):>9}{fmt(sym_value):>11}{fmt(targets.get(key)):>9}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", nargs="+", default=list(BUNDLED_SAMPLERS),
                        choices=list(BUNDLED_SAMPLERS))
    parser.add_argument("--repeats", type=int, default=5, help="random 2,000-vs-2,000 subsets")
    parser.add_argument("--n-samples", type=int, default=10000,
                        help="model samples evaluated (at least 2,000)")
    parser.add_argument("--n-refine", type=int, default=5000,
                        help="of those, samples refined by --refine MALA steps (>= 2,000)")
    parser.add_argument("--timing-repeats", type=int, default=20)
    parser.add_argument("--refine", type=int, default=20,
                        help="MALA steps of the refined column (generate --refine)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.systems:
        benchmark(name, args)


if __name__ == "__main__":
    main()

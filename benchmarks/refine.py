"""What exact MCMC refinement buys a DiKL generator: metrics vs force evaluations.

For a trained sampler (bundled name or file), draws N one-shot samples and refines them
with k = 0, 5, 20, 100 MALA steps (``openmm-dikl generate --refine k``).  As a baseline,
the same MALA kernel runs N chains for the same number of steps from the target's
default configuration (no generator: what ``--init-from`` replaces).  Metrics are those
of ``openmm-dikl train`` (W2 in nm and TVDs for DW-4 / LJ-13, φ/ψ/Ramachandran KL and
energy TVD for alanine dipeptide, mode metrics for MoG-40 / MW-32); cost is force
evaluations per sample.

    python benchmarks/refine.py dw4 [--n 2000] [--steps 0 5 20 100] [--method mala]
"""
import argparse
import time

import numpy as np
import torch
from openmm import unit

from openmm_dikl import systems
from openmm_dikl.dikl import load_sampler
from openmm_dikl.analysis.evaluation import evaluation_metrics
from openmm_dikl.samplers import refine_samples

#: metric columns shown per system family (others are ignored)
COLUMNS = ("w2", "energy_tvd", "distance_tvd", "kl_phi", "kl_psi", "kl_ramachandran",
           "mode_coverage", "mean_log_density", "max_basin_weight_error")


def row(label, evaluations, values, seconds, cpu_seconds):
    cells = " ".join(f"{k}={values[k]:.3f}" for k in COLUMNS if k in values)
    print(f"{label:28s} {evaluations:9.0f} {seconds:7.1f} {cpu_seconds:7.1f}  {cells}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="bundled system name (shipped checkpoint) or sampler file")
    parser.add_argument("--n", type=int, default=2000, help="samples / chains")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 20, 100])
    parser.add_argument("--method", default="mala", choices=["mala", "hmc", "digs"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    sampler = load_sampler(args.source)
    target = systems.get(sampler.target_name)
    x = sampler.sample(args.n, seed=args.seed).double()
    start = target.positions.value_in_unit(unit.nanometer)[:, :target.spatial_dim]
    x_fixed = torch.as_tensor(np.asarray(start))[None].repeat(args.n, 1, 1)
    print(f"{target.name}: {args.n} samples, refinement by {args.method}")
    print(f"{'':28s} {'evals/sample':>9s} {'wall s':>7s} {'CPU s':>7s}  metrics")
    for k in args.steps:
        for label, x0 in ((f"generator + {k} {args.method}", x),
                          (f"fixed start + {k} {args.method}", x_fixed)):
            if k == 0 and x0 is x_fixed:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            if k:
                result = refine_samples(target, x0, k, method=args.method, seed=args.seed)
                samples, evaluations = result.final_positions, result.force_evaluations / args.n
            else:
                samples, evaluations = x0, 0
            row(label, evaluations, evaluation_metrics(target, samples, floors=False),
                time.perf_counter() - t0, time.process_time() - c0)
    values = evaluation_metrics(target, x)  # the floors: reference halves of the same size
    row("reference noise floor", 0, {k: values[k + "_floor"] for k in COLUMNS
                                     if k + "_floor" in values}, 0.0, 0.0)


if __name__ == "__main__":
    main()

"""What exact MCMC refinement buys a DiKL generator: metrics vs force evaluations.

For a trained sampler (bundled name or file), draws N one-shot samples and refines them
with k = 0, 5, 20, 100 MALA steps (``openmm-dikl generate --refine k``).  As a baseline,
the same MALA kernel runs N chains for the same number of steps from the target's
default configuration (no generator: what ``--init-from`` replaces).  Metrics are those
of ``openmm-dikl train`` (W2 in nm and TVDs for DW-4 / LJ-13, φ/ψ/Ramachandran KL and
energy TVD for alanine dipeptide, mode metrics for MoG-40 / MW-32); cost is force
evaluations per sample.

For a molecule with a reference set of energies (alanine dipeptide) it also prints
p(φ > 0) and the fraction of samples with a clash (energy above the reference's maximum
+ 100 kJ/mol), and with ``--pt-evaluations N`` a parallel-tempering run given N force
evaluations (for example those a generator's training spent; 8 replicas 300–800 K as
the shipped reference), scored on its 300 K frames.

    python benchmarks/refine.py dw4 [--n 2000] [--steps 0 5 20 100] [--method mala]
    python benchmarks/refine.py alanine_dipeptide_implicit --n 10000 --steps 0 10 20 45 \
        --method digs --pt-evaluations 16128000
"""
import argparse
import time

import numpy as np
import torch
from openmm import unit

from openmm_dikl import systems
from openmm_dikl.dikl import load_sampler
from openmm_dikl.analysis.evaluation import evaluation_metrics
from openmm_dikl.samplers import ParallelTempering, geometric_temperatures, refine_samples

#: metric columns shown per system family (others are ignored)
COLUMNS = ("w2", "energy_tvd", "distance_tvd", "kl_phi", "kl_psi", "kl_ramachandran",
           "fraction_phi_positive", "clash_fraction", "mode_coverage", "mean_log_density",
           "max_basin_weight_error")

#: energy above the reference's maximum that counts as a clash (kJ/mol)
CLASH_MARGIN_KJMOL = 100.0


def row(label, evaluations, values, seconds, cpu_seconds):
    cells = " ".join(f"{k}={values[k]:.4g}" for k in COLUMNS if k in values)
    print(f"{label:30s} {evaluations:9.0f} {seconds:7.1f} {cpu_seconds:7.1f}  {cells}", flush=True)


def clash_fraction(target, x):
    """Fraction of samples whose energy exceeds the reference maximum + the margin (None
    for systems without reference energies)."""
    path = target.evaluation_data.get("reference")
    if not (path and target.evaluation_data.get("reference_energies")):
        return None
    limit = float(np.load(systems.shipped_path(path))["energy_kjmol"].max()) + CLASH_MARGIN_KJMOL
    with target.bridge() as bridge:
        u = bridge.reduced_energy(torch.as_tensor(np.asarray(x, dtype=np.float64)),
                                  check_length_scale=False)
    energies = np.asarray(u) * target.kT.value_in_unit(unit.kilojoule_per_mole)
    return float(np.mean(~(energies <= limit)))


def metrics(target, x):
    values = evaluation_metrics(target, x, floors=False)
    clashes = clash_fraction(target, x)
    if clashes is not None:
        values["clash_fraction"] = clashes
    return values


def parallel_tempering(target, evaluations, seed):
    """300 K frames of a parallel-tempering run of ``evaluations`` force evaluations."""
    ladder = geometric_temperatures(target.temperature, 800.0, 8)
    pt = ParallelTempering(target.system, target.positions, ladder, steps_per_swap=250,
                           timestep=1.0, platform=target.platform, seed=seed)
    frames = []
    while pt.iteration * pt.force_evaluations_per_iteration < evaluations:
        x, _ = pt.step()
        frames.append(np.asarray(x, dtype=np.float64))
    return np.array(frames), pt.iteration * pt.force_evaluations_per_iteration


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="bundled system name (shipped checkpoint) or sampler file")
    parser.add_argument("--n", type=int, default=2000, help="samples / chains")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 20, 100])
    parser.add_argument("--method", default="mala", choices=["mala", "hmc", "digs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pt-evaluations", type=float, default=0,
                        help="also run parallel tempering with this many force evaluations")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    sampler = load_sampler(args.source)
    target = systems.get(sampler.target_name)
    x = sampler.sample(args.n, seed=args.seed).double()
    start = target.positions.value_in_unit(unit.nanometer)[:, :target.spatial_dim]
    x_fixed = torch.as_tensor(np.asarray(start))[None].repeat(args.n, 1, 1)
    print(f"{target.name}: {args.n} samples, refinement by {args.method}")
    print(f"{'':30s} {'evals/sample':>9s} {'wall s':>7s} {'CPU s':>7s}  metrics")
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
            row(label, evaluations, metrics(target, samples),
                time.perf_counter() - t0, time.process_time() - c0)
    if args.pt_evaluations:
        t0, c0 = time.perf_counter(), time.process_time()
        frames, spent = parallel_tempering(target, args.pt_evaluations, args.seed)
        row(f"PT, {spent:.3g} evaluations", spent / len(frames), metrics(target, frames),
            time.perf_counter() - t0, time.process_time() - c0)
    values = evaluation_metrics(target, x)  # the floors: reference halves of the same size
    floors = {k: values[k + "_floor"] for k in COLUMNS if k + "_floor" in values}
    floors.update({k: values["reference_" + k] for k in ("fraction_phi_positive",)
                   if "reference_" + k in values})
    row("noise floor / reference", 0, floors, 0.0, 0.0)


if __name__ == "__main__":
    main()

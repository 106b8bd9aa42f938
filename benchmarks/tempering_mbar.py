"""Parallel tempering on alanine dipeptide: the lowest replica alone vs MBAR over all replicas.

One parallel-tempering run (alanine dipeptide, OBC2 implicit solvent, 300 K, geometric
ladder 300-800 K, 8 replicas, Langevin 1 fs, Reference platform) records every replica
after every iteration.  From the *same* run — hence the same budget of force
evaluations — the 300 K distribution of the backbone dihedrals is estimated

(a) from the lowest replica only (equal weights), and
(b) from all replicas with MBAR weights at 300 K
    (:func:`openmm_dikl.samplers.tempering.mbar_weights`),

and compared with the shipped reference (``systems/ala2_implicit_reference.npz``:
4·10⁴ frames of a 10 ns-per-replica run with this ladder) by KL(reference ‖ estimate) of
the φ histogram, the ψ histogram (60 bins on [−π, π)) and the 60 × 60 Ramachandran
histogram, with :func:`openmm_dikl.analysis.metrics.dihedral_kl` /
:func:`~openmm_dikl.analysis.metrics.ramachandran_kl` (weights on the estimate; pseudo
probability 1e-10 per bin).  The first 10 % of the iterations are discarded.

Noise floor: the same KLs for frames drawn at random from the reference itself (mean and
standard deviation over 5 draws): for (a) as many frames as (a) has samples; for (b) as
many as (b) has, carrying the MBAR weights in random order (an exact sampler's
independent draws with the same weight profile); and, for comparison, the rounded Kish
ESS of (b) with equal weights.  The KL with a 1e-10 pseudo probability is dominated by
the reference bins that an estimate leaves empty, so a weighted estimate over many
samples fills more bins than ESS equal-weight samples would, and sits below floor(ESS).
Both floors assume independent samples; PT samples are time-correlated, so they are
optimistic.

Run: ``python benchmarks/tempering_mbar.py [--quick] [--iterations N] [--seed S]``
(``--quick``: 1,500 iterations of 100 steps, 1.2·10⁶ force evaluations, ~1-2 min on one
core; default: 4,000 iterations of 250 steps, 8·10⁶).
"""
import argparse
import logging
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import openmm  # noqa: E402

from openmm_dikl import systems  # noqa: E402
from openmm_dikl.analysis import metrics  # noqa: E402
from openmm_dikl.samplers import ParallelTempering, geometric_temperatures  # noqa: E402


def kls(phi_psi, reference, weights=None):
    """KL(reference ‖ estimate) of φ, ψ and (φ, ψ) in nats, optionally weighted."""
    return (metrics.dihedral_kl(phi_psi[:, 0], reference[:, 0], weights=weights),
            metrics.dihedral_kl(phi_psi[:, 1], reference[:, 1], weights=weights),
            metrics.ramachandran_kl(phi_psi, reference, weights=weights))


def noise_floor(reference, n, seed, weights=None, repeats=5):
    """Mean and std (3,) of the KLs of ``n`` random reference frames against the reference.

    With ``weights`` (n,), the frames carry a random permutation of them: an exact
    sampler's independent draws with the weight profile of the estimate.
    """
    rng = np.random.default_rng(seed)
    values = np.array([kls(reference[rng.integers(0, len(reference), n)], reference,
                           None if weights is None else rng.permutation(weights))
                       for _ in range(repeats)])
    return values.mean(0), values.std(0, ddof=1)


def run_tempering(args):
    target = systems.get("alanine_dipeptide_implicit")
    ladder = geometric_temperatures(target.temperature, args.t_max, args.replicas)
    pt = ParallelTempering(target.system, target.positions, ladder, args.steps_per_swap,
                           platform=args.platform, seed=args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    samples = pt.run(args.iterations)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return target, pt, samples, wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1500 iterations of 100 steps (about 1-2 min on one core)")
    parser.add_argument("--iterations", type=int, default=None, help="default 4000")
    parser.add_argument("--steps-per-swap", type=int, default=None,
                        help="1 fs Langevin steps per iteration (default 250)")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--t-max", type=float, default=800.0, help="hottest replica (K)")
    parser.add_argument("--discard", type=float, default=0.1,
                        help="fraction of iterations dropped as equilibration")
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.iterations = args.iterations or (1500 if args.quick else 4000)
    args.steps_per_swap = args.steps_per_swap or (100 if args.quick else 250)
    logging.getLogger("pymbar").setLevel(logging.ERROR)  # a script may; the library does not

    reference_file = np.load(systems.shipped_path("ala2_implicit_reference.npz"))
    reference = np.stack([reference_file["phi"], reference_file["psi"]], 1).astype(np.float64)
    target, pt, samples, wall, cpu = run_tempering(args)
    samples = samples.discard(int(args.discard * args.iterations))
    n_iter, n_rep = samples.energies_kjmol.shape
    angles = metrics.phi_psi(samples.flat_positions(), target.topology)
    lowest = angles.reshape(n_iter, n_rep, 2)[:, 0]
    weights, ess = samples.mbar_weights()

    print(f"alanine dipeptide implicit, {n_rep} replicas {samples.temperatures[0]:.0f}-"
          f"{samples.temperatures[-1]:.0f} K, {args.iterations} iterations x "
          f"{args.steps_per_swap} steps, {samples.force_evaluations:,} force evaluations, "
          f"platform {args.platform}, OpenMM {openmm.__version__}, seed {args.seed}")
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s ({cpu / samples.force_evaluations * 1e6:.1f} "
          f"us CPU per evaluation), load average {os.getloadavg()[0]:.2f}; exchange "
          f"acceptance {np.array2string(pt.acceptance_rates, precision=2)}")
    print(f"kept {n_iter} iterations (first {args.iterations - n_iter} discarded); MBAR "
          f"weight per temperature: "
          f"{np.array2string(weights.reshape(n_iter, n_rep).sum(0), precision=3)}")
    header = ("estimate", "samples", "ESS", "KL phi", "KL psi", "KL Rama",
              "floor phi", "floor psi", "floor Rama")
    print(("{:<28}" + "{:>9}" * 2 + "{:>9}" * 3 + "{:>17}" * 3).format(*header))
    rows = (("(a) lowest replica only", n_iter, n_iter, kls(lowest, reference),
             noise_floor(reference, n_iter, args.seed)),
            ("(b) MBAR, all replicas", n_iter * n_rep, ess, kls(angles, reference, weights),
             noise_floor(reference, n_iter * n_rep, args.seed, weights)),
            ("    floor of (b) at n = ESS", "", ess, (np.nan,) * 3,
             noise_floor(reference, max(1, round(ess)), args.seed)))
    for label, n, n_eff, values, (mean, std) in rows:
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std)]
        kl_cells = ["—" if np.isnan(v) else f"{v:.4f}" for v in values]
        print(("{:<28}" + "{:>9}" * 5 + "{:>17}" * 3).format(
            label, n, f"{n_eff:.0f}", *kl_cells, *cells))
    print("KL(reference ‖ estimate) in nats.  floor = KL of random reference frames (mean ± sd "
          "of 5): (a) as many as the samples;\n(b) as many as the samples, carrying the MBAR "
          "weights in random order; last row: ESS frames, equal weights")


if __name__ == "__main__":
    main()

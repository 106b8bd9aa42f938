"""Train a DW-4 generator with DiKL, sample it in one shot, polish and analyse the samples.

The bundled DW-4 recipe (EGNN generator and score network, VP schedule, Mixed Score
Identity with the target's forces) is trained for ``--iterations`` steps, then 2,000
one-shot samples are compared with the reference set (W2 in nm, energy and
interatomic-distance TVD) before and after a few exact MALA steps on the true target,
and written as an mdtraj trajectory.

    python examples/dikl_dw4.py [--iterations 300] [--out dw4_dikl]
"""
import argparse
import os

import torch

from openmm_dikl import systems
from openmm_dikl.analysis import metrics
from openmm_dikl.dikl import load_sampler
from openmm_dikl.dikl.recipes import load_recipe, train_from_recipe
from openmm_dikl.samplers import refine_samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300, help="DiKL iterations")
    parser.add_argument("--samples", type=int, default=2000, help="samples to evaluate")
    parser.add_argument("--refine", type=int, default=20, help="MALA steps of refinement")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (smoke test)")
    parser.add_argument("--out", default="dw4_dikl", help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    recipe = load_recipe("dw4")
    if args.tiny:  # the smoke test: small networks and batches, same code path
        recipe["generator"].update(n_layers=2, hidden=16)
        recipe["score_model"].update(n_layers=1, hidden=16)
        recipe["dikl"].update(batch_size=32, score_samples_per_iter=64, n_mala_steps=5)
    result = train_from_recipe("dw4", recipe, args.out, n_iterations=args.iterations,
                               progress=True)
    print(f"trained {result['iterations']} iterations in {result['wall_time_s']:.0f} s")

    target = systems.get("dw4")
    sampler = load_sampler(os.path.join(args.out, "sampler.pt"), target=target)
    x = sampler.sample(args.samples, seed=1).double()  # (n, 4, 2) in nm
    refined = refine_samples(target, x, args.refine, method="mala", seed=1)
    n_eval = min(args.samples, 2000)
    print(f"{'':12s} {'W2 (nm)':>8s} {'energy TVD':>11s} {'dist. TVD':>10s}")
    for label, samples in [("one-shot", x), (f"+{args.refine} MALA", refined.final_positions)]:
        m = metrics.evaluate_samples(target, samples, n_eval=n_eval, n_repeats=1)
        print(f"{label:12s} {m['w2']:8.3f} {m['energy_tvd']:11.3f} {m['distance_tvd']:10.3f}")
    print(f"refinement cost: {refined.force_evaluations} force evaluations "
          f"(acceptance {refined.acceptance['acceptance'].mean():.2f})")

    traj = target.to_mdtraj(refined.final_positions.numpy())  # mdtraj works in nm too
    path = os.path.join(args.out, "samples.h5")
    traj.save(path)
    print(f"wrote {traj.n_frames} frames to {path}")


if __name__ == "__main__":
    main()

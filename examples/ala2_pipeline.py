"""Alanine dipeptide end to end: DiGS chains, a DiKL generator on live OpenMM forces, refinement.

The workflow of a computational chemist, on alanine dipeptide in OBC2 implicit solvent at
300 K (energies and forces from OpenMM through the bridge):

1. torsional DiGS (``openmm-dikl sample --method digs``) for a budget of force evaluations,
   written as DCD + PDB and analysed with mdtraj;
2. a DiKL generator trained with the bundled recipe (internal-coordinate generator, live
   OpenMM forces in the mixed score identity) for ``--iterations`` steps;
3. one-shot generator samples, and the same samples polished by a few exact torsional-DiGS
   sweeps on the true target (``openmm-dikl generate --refine``).

Each result is compared with the shipped parallel-tempering reference (KL of φ, ψ and
Ramachandran histograms, with the reference-vs-reference floor) and a Ramachandran plot is
written for each.

    python examples/ala2_pipeline.py [--force-evals 200000] [--iterations 100]
"""
import argparse
import os

import mdtraj
import numpy as np
import torch

from openmm_dikl import systems
from openmm_dikl.analysis import metrics
from openmm_dikl.dikl import load_sampler
from openmm_dikl.analysis.evaluation import ala2_metrics, dihedral_reference
from openmm_dikl.analysis.plots import plot_ramachandran
from openmm_dikl.dikl.recipes import load_recipe, train_from_recipe
from openmm_dikl.samplers import refine_samples
from openmm_dikl.samplers import run_sampler


def report(label, target, x, out):
    """Print the KL row of samples x (n, 22, 3) nm and write their Ramachandran plot."""
    m = ala2_metrics(target, x)
    print(f"{label:34s} {m['kl_phi']:7.3f} {m['kl_psi']:7.3f} {m['kl_ramachandran']:7.3f} "
          f"{m['fraction_phi_positive']:7.4f}   (floor {m['kl_ramachandran_floor']:.3f})")
    ref = dihedral_reference(target)
    angles = metrics.phi_psi(np.asarray(x), target.topology)  # (n, 2) radians
    plot_ramachandran(angles, out, reference=np.stack([ref["phi"], ref["psi"]], axis=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force-evals", type=int, default=200000, help="DiGS budget")
    parser.add_argument("--chains", type=int, default=16, help="DiGS chains")
    parser.add_argument("--iterations", type=int, default=100, help="DiKL iterations")
    parser.add_argument("--samples", type=int, default=2000, help="generator samples")
    parser.add_argument("--refine", type=int, default=50, help="DiGS sweeps of refinement")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (smoke test)")
    parser.add_argument("--out", default="ala2_pipeline", help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    target = systems.get("alanine_dipeptide_implicit")
    print(f"{'':34s} {'KL φ':>7s} {'KL ψ':>7s} {'KL Rama':>7s} {'p(φ>0)':>7s}")

    # 1. DiGS chains through the same engine as `openmm-dikl sample`
    dcd = os.path.join(args.out, "digs.dcd")
    result = run_sampler(target, method="digs", force_evals=args.force_evals, out=dcd,
                         n_frames=2000, chains=args.chains,
                         progress=False)
    traj = mdtraj.load(dcd, top=result.paths["topology"])
    report(f"DiGS, {result.force_evaluations} evaluations", target, traj.xyz,
           os.path.join(args.out, "digs_ramachandran.png"))

    # 2. a DiKL generator trained against live OpenMM forces
    recipe = load_recipe(target.name)
    if args.tiny:
        recipe["generator"].update(hidden=32, n_layers=1)
        recipe["score_model"].update(hidden=32, n_layers=1)
        recipe["dikl"].update(batch_size=16, score_samples_per_iter=32, score_steps_per_iter=1,
                              n_posterior=2)
    record = train_from_recipe(target.name, recipe, os.path.join(args.out, "dikl"),
                               n_iterations=args.iterations, progress=False)
    print(f"DiKL: {record['iterations']} iterations, {record['wall_time_s']:.0f} s")
    sampler = load_sampler(os.path.join(args.out, "dikl", "sampler.pt"), target=target)
    x = sampler.sample(args.samples, seed=1).double()
    report("DiKL generator, one shot", target, x,
           os.path.join(args.out, "dikl_ramachandran.png"))

    # 3. the same samples refined by exact torsional DiGS sweeps on the true target
    refined = refine_samples(target, x, args.refine, method="digs", seed=1)
    report(f"+ {args.refine} DiGS sweeps ({refined.force_evaluations // args.samples}/sample)",
           target, refined.final_positions, os.path.join(args.out, "refined_ramachandran.png"))
    target.to_mdtraj(refined.final_positions.numpy()).save(os.path.join(args.out, "refined.h5"))
    print(f"wrote trajectories and Ramachandran plots to {args.out}/")


if __name__ == "__main__":
    main()

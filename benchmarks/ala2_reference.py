"""Long parallel-tempering reference run for a bundled peptide (implicit solvent, 300 K).

Produces ``systems/ala2_implicit_reference.npz`` (φ, ψ in radians, potential energies in
kJ/mol and a thinned set of 300 K configurations in nm) used by tests, benchmarks and
``openmm-dikl evaluate``.  Checkpoints atomically every ``--checkpoint-every`` iterations
and resumes with ``--resume``.

For longer peptides φ and ψ are (frames, residues) arrays.  Commands used for the
shipped files (recorded in the npz as ``command``)::

    python benchmarks/ala2_reference.py --iterations 40000 --checkpoint runs/ala2_pt.pkl --resume \
        --out systems/ala2_implicit_reference.npz
    python benchmarks/ala2_reference.py --system ace_ala3_nme_implicit --timestep 2 \
        --t-max 600 --iterations 3000 --keep-every 2 --checkpoint runs/ala4_pt.pkl --resume \
        --out systems/ace_ala3_nme_reference.npz

The second made the first Ace-(Ala)3-Nme reference, whose angles are kept as
``systems/ace_ala3_nme_reference_langevin_pt.npz``; it is not converged (its halves
disagree), and the shipped ``systems/ace_ala3_nme_reference.npz`` now comes from
``benchmarks/peptide_reference.py`` (replica exchange with torsional DiGS moves).
"""
import argparse
import os
import pickle
import sys
import time

import mdtraj
import numpy as np
from tqdm.auto import tqdm

from openmm_dikl import systems
from openmm_dikl.samplers import ParallelTempering, geometric_temperatures


def atomic_pickle(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        pickle.dump(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="alanine_dipeptide_implicit")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--t-max", type=float, default=800.0, help="hottest replica (K)")
    parser.add_argument("--steps-per-swap", type=int, default=250, help="Langevin steps per exchange")
    parser.add_argument("--timestep", type=float, default=1.0,
                        help="Langevin time step in fs (2 with HBonds constraints)")
    parser.add_argument("--keep-every", type=int, default=10, help="store positions every N iterations")
    parser.add_argument("--checkpoint", default="runs/ala2_pt.pkl")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", default="systems/ala2_implicit_reference.npz")
    args = parser.parse_args(argv)

    target = systems.get(args.system)
    ladder = geometric_temperatures(target.temperature, args.t_max, args.replicas)
    pt = ParallelTempering(target.system, target.positions, ladder, args.steps_per_swap,
                           timestep=args.timestep, platform=target.platform, seed=args.seed)
    record = {"energy": [], "positions": []}
    wall = 0.0
    if args.resume and os.path.exists(args.checkpoint):
        with open(args.checkpoint, "rb") as handle:
            saved = pickle.load(handle)
        pt.set_state(saved["sampler"])
        record, wall = saved["record"], saved["wall"]
        print(f"resumed at iteration {pt.iteration}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.checkpoint)), exist_ok=True)
    start = time.time() - wall
    topology = mdtraj.Topology.from_openmm(target.topology)
    for _ in tqdm(range(pt.iteration, args.iterations), initial=pt.iteration,
                  total=args.iterations, desc="parallel tempering", mininterval=10):
        x, energy = pt.step()
        record["energy"].append(energy)
        record["positions"].append(x.astype(np.float32))
        if pt.iteration % args.checkpoint_every == 0 or pt.iteration == args.iterations:
            atomic_pickle({"sampler": pt.get_state(), "record": record,
                           "wall": time.time() - start}, args.checkpoint)
    xyz = np.array(record["positions"])
    traj = mdtraj.Trajectory(xyz, topology)
    phi = mdtraj.compute_phi(traj)[1]
    psi = mdtraj.compute_psi(traj)[1]
    if phi.shape[1] == 1:   # a dipeptide: one angle per frame, as in the shipped file
        phi, psi = phi[:, 0], psi[:, 0]
    wall = time.time() - start
    evals = pt.iteration * pt.force_evaluations_per_iteration
    tmp = args.out + ".tmp.npz"
    np.savez_compressed(tmp, phi=phi.astype(np.float32), psi=psi.astype(np.float32),
                        energy_kjmol=np.array(record["energy"], dtype=np.float64),
                        positions=xyz[::args.keep_every], temperatures=np.array(ladder),
                        exchange_acceptance=pt.acceptance_rates, force_evaluations=evals,
                        wall_seconds=wall, command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    os.replace(tmp, args.out)
    print(f"{pt.iteration} iterations, {evals:.3g} force evaluations, {wall / 3600:.2f} h; "
          f"exchange acceptance {np.round(pt.acceptance_rates, 2)}; "
          f"fraction phi > 0: {np.mean(phi > 0):.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()

"""DiGS dropped into an ``openmm.app.Simulation`` with ordinary reporters.

Runs the :class:`~openmm_dikl.DiffusiveGibbsIntegrator` on the MoG-40 target (one
particle, 40 Gaussian modes 2D; one step = one Gibbs sweep), writes a DCD with
``app.DCDReporter`` and a log with ``app.StateDataReporter``, then analyses the
trajectory with mdtraj: which of the 40 modes the single chain visited.  A Langevin run
of the same force-evaluation budget is shown for comparison.

The second part drops the same integrator into a Simulation of alanine dipeptide
(implicit solvent, 300 K) and analyses the DCD with mdtraj: backbone φ/ψ and the
per-level acceptance.  In Cartesian coordinates the noisy initialisation is (almost)
never accepted on a molecule, so the integrator acts as an exact MALA sampler of the
denoising posterior there and stays in its starting basin; ``openmm-dikl sample
--method digs`` (torsional kernel) is the basin-hopping sampler for peptides.

    python examples/digs_in_simulation.py [--sweeps 20000] [--peptide-sweeps 2000]
"""
import argparse
import sys

import mdtraj
import numpy as np
import openmm
from openmm import app, unit

from openmm_dikl import DiffusiveGibbsIntegrator, systems


def visited_modes(dcd, pdb, means):
    """Number of mixture modes whose nearest-mean cell contains a frame of the trajectory."""
    xy = mdtraj.load(dcd, top=pdb).xyz[:, 0, :2]
    nearest = np.argmin(((xy[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return len(np.unique(nearest)), len(xy)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=20000, help="DiGS steps (Gibbs sweeps)")
    parser.add_argument("--peptide-sweeps", type=int, default=2000,
                        help="DiGS steps on alanine dipeptide")
    parser.add_argument("--out", default="mog40_digs", help="output prefix")
    args = parser.parse_args(argv)

    mog = systems.get("mog40")
    means = mog.evaluation_data["mode_means"].numpy()  # (40, 2) nm
    integrator = DiffusiveGibbsIntegrator(mog.temperature, alphas=[0.1], n_denoise_steps=5,
                                          step_size=0.1, planar=True)  # step size in nm²
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(mog.topology, mog.system, integrator,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(mog.positions)
    interval = max(1, args.sweeps // 2000)
    with open(args.out + ".pdb", "w") as handle:
        app.PDBFile.writeFile(mog.topology, mog.positions, handle)
    simulation.reporters.append(app.DCDReporter(args.out + ".dcd", interval))
    simulation.reporters.append(app.StateDataReporter(args.out + ".csv", interval, step=True,
                                                      potentialEnergy=True))
    simulation.step(args.sweeps)
    simulation.reporters.clear()  # closes the files
    evaluations = args.sweeps * integrator.force_evaluations_per_step
    modes, frames = visited_modes(args.out + ".dcd", args.out + ".pdb", means)
    print(f"DiGS: {args.sweeps} sweeps = {evaluations} force evaluations, {frames} frames, "
          f"{modes}/40 modes visited; acceptance {integrator.acceptance_rates}")

    langevin = openmm.LangevinMiddleIntegrator(mog.temperature, 1 / unit.picosecond,
                                               10 * unit.femtosecond)
    simulation = app.Simulation(mog.topology, mog.system, langevin,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(mog.positions)
    simulation.reporters.append(app.DCDReporter(args.out + "_langevin.dcd", evaluations // frames))
    simulation.step(evaluations)
    simulation.reporters.clear()
    modes, _ = visited_modes(args.out + "_langevin.dcd", args.out + ".pdb", means)
    print(f"Langevin: {evaluations} steps, {modes}/40 modes visited")
    peptide(args.peptide_sweeps, args.out + "_ala2")
    return 0


def peptide(sweeps, out):
    """DiGS on alanine dipeptide in an app.Simulation; φ/ψ analysis of the DCD with mdtraj."""
    ala2 = systems.get("alanine_dipeptide_implicit")
    integrator = DiffusiveGibbsIntegrator(ala2.temperature, alphas=[0.999, 0.9999],
                                          n_denoise_steps=5, step_size=1e-6)  # ε in nm²
    integrator.setRandomNumberSeed(2)
    simulation = app.Simulation(ala2.topology, ala2.system, integrator,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(ala2.positions)
    with open(out + ".pdb", "w") as handle:
        app.PDBFile.writeFile(ala2.topology, ala2.positions, handle)
    simulation.reporters.append(app.DCDReporter(out + ".dcd", max(1, sweeps // 500)))
    simulation.step(sweeps)
    simulation.reporters.clear()
    traj = mdtraj.load(out + ".dcd", top=out + ".pdb")
    phi = mdtraj.compute_phi(traj)[1][:, 0]
    psi = mdtraj.compute_psi(traj)[1][:, 0]
    mean_phi, mean_psi = (np.degrees(np.angle(np.exp(1j * a).mean())) for a in (phi, psi))
    rare = np.mean((phi > np.radians(30)) & (phi < np.radians(130)))
    print(f"alanine dipeptide: {sweeps} sweeps, {traj.n_frames} frames; circular mean "
          f"φ = {mean_phi:.0f}°, ψ = {mean_psi:.0f}°; fraction in the φ ∈ [30°, 130°] basin "
          f"{rare:.3f}; acceptance {integrator.acceptance_rates}")


if __name__ == "__main__":
    sys.exit(main())

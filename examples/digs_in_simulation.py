"""DiGS dropped into an ``openmm.app.Simulation`` with ordinary reporters.

Runs the :class:`~openmm_dikl.DiffusiveGibbsIntegrator` on the MoG-40 target (one
particle, 40 Gaussian modes 2D; one step = one Gibbs sweep), writes a DCD with
``app.DCDReporter`` and a log with ``app.StateDataReporter``, then analyses the
trajectory with mdtraj: which of the 40 modes the single chain visited.  A Langevin run
of the same force-evaluation budget is shown for comparison.

    python examples/digs_in_simulation.py [--sweeps 20000]
"""
import argparse
import json
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
    parser.add_argument("--out", default="mog40_digs", help="output prefix")
    args = parser.parse_args(argv)

    mog = systems.get("mog40")
    means = np.array(json.load(open(systems.shipped_path("mog40.json")))["means"])
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
          f"{modes}/40 modes visited; acceptance {integrator.acceptance_rates()}")

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
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Torsional DiGS as an openmmtools MCMCMove: with Langevin dynamics, and with replica exchange.

``TorsionalDiffusiveGibbsMove`` is an ordinary openmmtools ``MCMCMove`` (one application =
``n_sweeps`` torsional Diffusive Gibbs sweeps over the backbone φ and ψ), so it composes
with the rest of openmmtools:

1. a ``SequenceMove`` of DiGS sweeps and ``LangevinDynamicsMove`` (2 fs) run by
   ``MCMCSampler`` on alanine dipeptide (amber14 + OBC2, ``HBonds``) at 300 K;
2. DiGS + replica exchange: ``multistate.ReplicaExchangeSampler(mcmc_moves=move)`` over a
   geometric temperature ladder, stored in a NetCDF file.

Every OpenMM Context is made on the CPU platform (``cache.ContextCache``); the DiGS move
uses the cache's platform for its own private Contexts.

    python examples/torsional_digs_openmmtools.py [--iterations 200] [--replicas 4]
"""
import argparse
import os
import sys

import numpy as np
import openmm
from openmm import app, unit
from openmmtools import cache, mcmc, multistate, states

from openmm_dikl import TorsionalDiffusiveGibbsMove, systems


def build_system(pdb_path):
    """Topology, System and positions of a PDB: amber14-all + OBC2, no cutoff, HBonds.

    Parameters
    ----------
    pdb_path : str
        PDB file with hydrogens.

    Returns
    -------
    tuple of (openmm.app.Topology, openmm.System, openmm.unit.Quantity)
        Positions in nm.
    """
    pdb = app.PDBFile(pdb_path)
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=app.HBonds)
    return pdb.topology, system, pdb.positions


def cpu_cache():
    """An openmmtools ContextCache whose Contexts run on the CPU platform."""
    return cache.ContextCache(platform=openmm.Platform.getPlatformByName("CPU"))


def acceptance(move):
    """Per-level initialisation and denoising acceptance of a move, as "0.12/0.98" strings."""
    rates = move.acceptance_rates   # {"initialisation": (n_levels,), "denoising": (n_levels,)}
    names = [" + ".join(move.torsions[j].name for j in level) for level in move.levels]
    return "  ".join(f"{name}: {i:.3f}/{d:.3f}" for name, i, d in
                     zip(names, rates["initialisation"], rates["denoising"]))


def digs_with_langevin(topology, system, positions, args):
    """Part 1: MCMCSampler of [DiGS sweeps, Langevin dynamics] at 300 K.

    Returns
    -------
    openmmtools.states.SamplerState
        The final state (positions in nm), the start of part 2.
    """
    thermodynamic_state = states.ThermodynamicState(system, 300 * unit.kelvin)
    digs = TorsionalDiffusiveGibbsMove(topology, n_sweeps=args.sweeps, n_denoise_steps=5,
                                       timestep=2 * unit.femtoseconds, random_seed=args.seed)
    langevin = mcmc.LangevinDynamicsMove(timestep=2 * unit.femtoseconds,
                                         collision_rate=1 / unit.picosecond,
                                         n_steps=args.langevin_steps)
    sampler = mcmc.MCMCSampler(thermodynamic_state, states.SamplerState(positions),
                               mcmc.SequenceMove([digs, langevin]))
    context_cache = cpu_cache()
    sampler.minimize(context_cache=context_cache)
    sampler.run(args.iterations, context_cache=context_cache)
    print(f"MCMCSampler: {args.iterations} iterations of {args.sweeps} DiGS sweeps + "
          f"{args.langevin_steps} Langevin steps")
    print(f"  DiGS acceptance (initialisation/denoising) {acceptance(digs)}")
    print(f"  DiGS force evaluations {digs.force_evaluations}, Langevin steps "
          f"{args.iterations * args.langevin_steps}")
    return sampler.sampler_state


def digs_with_replica_exchange(topology, system, sampler_state, args):
    """Part 2: ReplicaExchangeSampler whose replicas propagate by DiGS sweeps."""
    temperatures = np.geomspace(300.0, 450.0, args.replicas)   # K
    thermodynamic_states = [states.ThermodynamicState(system, t * unit.kelvin)
                            for t in temperatures]
    move = TorsionalDiffusiveGibbsMove(topology, n_sweeps=args.sweeps, n_denoise_steps=5,
                                       timestep=2 * unit.femtoseconds, random_seed=args.seed + 1)
    storage = os.path.join(args.out, "replica_exchange.nc")
    for path in (storage, storage.replace(".nc", "_checkpoint.nc")):
        if os.path.exists(path):   # openmmtools refuses to overwrite a storage file
            os.remove(path)
    sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move,
                                                number_of_iterations=args.re_iterations)
    sampler.energy_context_cache = cpu_cache()
    sampler.sampler_context_cache = cpu_cache()
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=1)
    sampler.create(thermodynamic_states, sampler_state, reporter)
    sampler.run()

    energies, _, _ = reporter.read_energies(iteration=args.re_iterations)  # reduced, (n, n)
    accepted, proposed = reporter.read_mixing_statistics(iteration=slice(1, None))
    off_diagonal = ~np.eye(args.replicas, dtype=bool)
    exchange = accepted.sum(0)[off_diagonal].sum() / max(1, proposed.sum(0)[off_diagonal].sum())
    reporter.close()
    print(f"ReplicaExchangeSampler: {args.replicas} replicas at "
          f"{', '.join(f'{t:.0f}' for t in temperatures)} K, {args.re_iterations} iterations "
          f"-> {storage}")
    for temperature, state_move in zip(temperatures, sampler.mcmc_moves):  # one move per state
        print(f"  {temperature:.0f} K DiGS acceptance (initialisation/denoising) "
              f"{acceptance(state_move)}")
    evaluations = sum(state_move.force_evaluations for state_move in sampler.mcmc_moves)
    print(f"  DiGS force evaluations {evaluations}; exchange acceptance {exchange:.3f}; "
          f"final reduced energies finite: {bool(np.isfinite(energies).all())}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdb", default=systems.shipped_path("alanine_dipeptide.pdb"),
                        help="peptide PDB (default: the shipped alanine dipeptide)")
    parser.add_argument("--iterations", type=int, default=200, help="MCMCSampler iterations")
    parser.add_argument("--sweeps", type=int, default=5, help="DiGS sweeps per move")
    parser.add_argument("--langevin-steps", type=int, default=50, help="2 fs steps per move")
    parser.add_argument("--replicas", type=int, default=4, help="temperatures (2-4)")
    parser.add_argument("--re-iterations", type=int, default=20, help="replica-exchange iterations")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the DiGS moves")
    parser.add_argument("--out", default="torsional_digs_openmmtools", help="output folder")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    topology, system, positions = build_system(args.pdb)
    sampler_state = digs_with_langevin(topology, system, positions, args)
    digs_with_replica_exchange(topology, system, sampler_state, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

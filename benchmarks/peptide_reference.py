"""Reference samples of a bundled peptide by replica exchange whose replicas move by
torsional DiGS sweeps and Langevin dynamics (openmmtools' ``ReplicaExchangeSampler``).

Langevin parallel tempering alone barely crosses the φ barrier of a blocked peptide at
300 K (``benchmarks/torsional_move.py``: 12 Ala 2 transitions per 10⁶ evaluations on
Ace-(Ala)3-Nme, none on Ala 3 and Ala 4), so a reference made by it in hours is not
converged: the halves of the 6×10⁶-evaluation Langevin reference disagree (p(φ > 0)
of Ala 2 = 0.027 / 0.008).  Here every replica applies, per iteration, a
``SequenceMove`` of ``--sweeps`` torsional DiGS sweeps
(:class:`~openmm_dikl.samplers.TorsionalDiffusiveGibbsMove`, all backbone φ/ψ, σ = π,
``--denoise-steps`` GHMC steps of 1 fs per level) and ``--langevin-steps`` Langevin
steps of 2 fs; the replicas exchange over a geometric ladder up to ``--t-max``.  Every
part is an exact MCMC kernel for its temperature, so the 300 K frames are samples of the
Boltzmann distribution.  Because the DiGS move is also the sampler the reference scores,
the script compares the result with an independent reference (``--check``, e.g. the
Langevin parallel-tempering file) at the accuracy of the latter's halves.

The run stores every iteration in openmmtools' netCDF storage (``--storage``; its
``*_checkpoint.nc`` holds the positions) and resumes from it with ``--resume``; Ctrl-C
stops it (``--resume`` continues from the last stored iteration).  At the end it
writes the npz read by the benchmarks: ``phi``, ``psi`` (frames, residues) in radians, ``energy_kjmol``,
``positions`` (every ``--keep-every``-th frame, nm), ``temperatures`` (K),
``exchange_acceptance``, ``force_evaluations``, ``wall_seconds``, ``cpu_seconds`` and
``command``; and prints per residue p(φ > 0) and the Ramachandran KL of its two halves.

Usage (the shipped ``systems/ace_ala3_nme_reference.npz``)::

    python benchmarks/peptide_reference.py --iterations 13000 --storage runs/ala4_re.nc \\
        --resume --check systems/ace_ala3_nme_reference_langevin_pt.npz \\
        --out systems/ace_ala3_nme_reference.npz
"""
import argparse
import json
import os
import sys
import time

import mdtraj
import numpy as np
import openmm
from openmm import unit
from openmmtools import cache, mcmc, multistate, states

from openmm_dikl import systems
from openmm_dikl.io import atomic_write
from openmm_dikl.analysis.torsion_metrics import ramachandran_kl
from openmm_dikl.samplers import TorsionalDiffusiveGibbsMove, geometric_temperatures
from openmm_dikl.units import kt_kjmol

KL_BINS = 20   # per angle, as in benchmarks/torsional_move.py


def replica_move(target, args):
    """The per-replica move: DiGS sweeps over the backbone torsions, then Langevin."""
    digs = TorsionalDiffusiveGibbsMove(target.topology, n_sweeps=args.sweeps,
                                       n_denoise_steps=args.denoise_steps,
                                       timestep=1.0 * unit.femtoseconds, platform="CPU",
                                       random_seed=args.seed)
    langevin = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtoseconds,
                                         collision_rate=1.0 / unit.picoseconds,
                                         n_steps=args.langevin_steps,
                                         reassign_velocities=False)
    return mcmc.SequenceMove([digs, langevin])


def open_sampler(target, args):
    """A new ReplicaExchangeSampler on ``args.storage``, or the stored one (``--resume``)."""
    if args.resume and os.path.exists(args.storage):
        sampler = multistate.ReplicaExchangeSampler.from_storage(args.storage)
        print(f"resumed {args.storage} at iteration {sampler.iteration}", flush=True)
    else:
        for path in (args.storage, args.storage.replace(".nc", "_checkpoint.nc")):
            if os.path.exists(path):
                raise SystemExit(f"{path} exists: pass --resume to continue it, or remove it")
        os.makedirs(os.path.dirname(os.path.abspath(args.storage)), exist_ok=True)
        ladder = geometric_temperatures(target.temperature, args.t_max, args.replicas)
        thermodynamic_states = [states.ThermodynamicState(target.system, t * unit.kelvin)
                                for t in ladder]
        sampler = multistate.ReplicaExchangeSampler(mcmc_moves=replica_move(target, args),
                                                    number_of_iterations=args.iterations)
        reporter = multistate.MultiStateReporter(args.storage, checkpoint_interval=1)
        sampler.create(thermodynamic_states, states.SamplerState(target.positions), reporter)
    platform = openmm.Platform.getPlatformByName("CPU")
    sampler.energy_context_cache = cache.ContextCache(platform=platform)
    sampler.sampler_context_cache = cache.ContextCache(platform=platform)
    return sampler


def read_times(storage):
    """Wall and CPU seconds (s) spent by earlier parts of the run on ``storage``."""
    path = storage + ".time.json"
    if not os.path.exists(path):
        return {"wall_seconds": 0.0, "cpu_seconds": 0.0}
    with open(path) as handle:
        return json.load(handle)


def write_json(obj, path):
    with open(path, "w") as handle:
        json.dump(obj, handle)


def run(sampler, total, chunk, storage):
    """Extend ``sampler`` to ``total`` iterations in chunks, printing progress; the
    time spent is accumulated in ``storage + ".time.json"`` after every chunk."""
    start, start_cpu = time.perf_counter(), time.process_time()
    before = read_times(storage)
    first = sampler.iteration
    try:
        while sampler.iteration < total:
            sampler.extend(min(chunk, total - sampler.iteration))
            times = {"wall_seconds": before["wall_seconds"] + time.perf_counter() - start,
                     "cpu_seconds": before["cpu_seconds"] + time.process_time() - start_cpu}
            atomic_write(storage + ".time.json", lambda tmp: write_json(times, tmp))
            done = sampler.iteration - first
            rate = done / (time.perf_counter() - start)
            print(f"iteration {sampler.iteration} / {total} ({rate:.2f} per s, "
                  f"{(total - sampler.iteration) / rate / 60:.0f} min left)", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted at iteration {sampler.iteration}: --resume continues", flush=True)
        return False
    return True


def lowest_temperature_frames(storage, n_iterations):
    """Positions (frames, atoms, 3) in nm and energies (kJ/mol) of the lowest state."""
    reporter = multistate.MultiStateReporter(storage, open_mode="r")
    try:
        states_of = reporter.read_replica_thermodynamic_states()   # (iterations+1, replicas)
        thermodynamic_states, _ = reporter.read_thermodynamic_states()
        kt = kt_kjmol(thermodynamic_states[0].temperature)
        energies, _, _ = reporter.read_energies()                  # reduced, (it, replicas, states)
        xyz, u = [], []
        for iteration in range(1, n_iterations + 1):
            replica = int(np.flatnonzero(states_of[iteration] == 0)[0])
            sampler_states = reporter.read_sampler_states(iteration)
            xyz.append(sampler_states[replica].positions.value_in_unit(unit.nanometer))
            u.append(float(energies[iteration, replica, 0]) * kt)
        accepted, proposed = reporter.read_mixing_statistics()
    finally:
        reporter.close()
    pairs = [(i, i + 1) for i in range(len(thermodynamic_states) - 1)]
    totals = accepted.sum(0) + accepted.sum(0).T, proposed.sum(0) + proposed.sum(0).T
    exchange = np.array([totals[0][i, j] / max(totals[1][i, j], 1) for i, j in pairs])
    temperatures = np.array([s.temperature.value_in_unit(unit.kelvin)
                             for s in thermodynamic_states])
    return np.array(xyz, dtype=np.float32), np.array(u), temperatures, exchange


def halves_report(phi, psi, label):
    """Print p(φ > 0) of each half and the Ramachandran KL between the halves."""
    half = len(phi) // 2
    frames = np.stack([phi, psi], axis=-1)   # (frames, residues, 2)
    kl = [ramachandran_kl(frames[half:2 * half, r], frames[:half, r], bins=KL_BINS)
          for r in range(phi.shape[1])]
    print(f"{label}: {len(phi)} frames; p(phi > 0) per residue, first / second half: " +
          ", ".join(f"{np.mean(phi[:half, r] > 0):.4f} / {np.mean(phi[half:, r] > 0):.4f}"
                    for r in range(phi.shape[1])))
    print(f"{label}: Ramachandran KL between the halves per residue: " +
          " / ".join(f"{value:.3f}" for value in kl))


def check_against(phi, psi, path):
    """KL(other ‖ this) per residue against another reference, with that one's halves."""
    other = np.load(path)
    frames = np.stack([phi, psi], axis=-1)
    theirs = np.stack([other["phi"], other["psi"]], axis=-1)
    halves_report(other["phi"], other["psi"], os.path.basename(path))
    kl = [ramachandran_kl(frames[:, r], theirs[:, r], bins=KL_BINS)
          for r in range(frames.shape[1])]
    print(f"KL({os.path.basename(path)} || this) per residue: " +
          " / ".join(f"{value:.3f}" for value in kl))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="ace_ala3_nme_implicit")
    parser.add_argument("--iterations", type=int, default=13000, help="total iterations")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--t-max", type=float, default=450.0, help="hottest replica (K)")
    parser.add_argument("--sweeps", type=int, default=3, help="DiGS sweeps per iteration")
    parser.add_argument("--denoise-steps", type=int, default=1,
                        help="GHMC steps (1 fs) per DiGS level")
    parser.add_argument("--langevin-steps", type=int, default=10,
                        help="Langevin steps (2 fs) per iteration")
    parser.add_argument("--chunk", type=int, default=200, help="iterations between reports")
    parser.add_argument("--storage", default="runs/peptide_re.nc")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep-every", type=int, default=10,
                        help="store positions every N frames")
    parser.add_argument("--check", help="another reference npz to compare with")
    parser.add_argument("--out", required=True, help="output npz")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise SystemExit(f"the folder of --out {args.out} does not exist")

    target = systems.get(args.system)
    sampler = open_sampler(target, args)
    finished = run(sampler, args.iterations, args.chunk, args.storage)
    n_iterations = sampler.iteration
    moves = sampler.mcmc_moves
    evaluations = (sum(move.move_list[0].force_evaluations for move in moves) +
                   n_iterations * len(moves) * (args.langevin_steps + len(moves)))
    del sampler
    if not finished:
        return 1
    xyz, energies, temperatures, exchange = lowest_temperature_frames(args.storage, n_iterations)
    traj = mdtraj.Trajectory(xyz, mdtraj.Topology.from_openmm(target.topology))
    phi, psi = mdtraj.compute_phi(traj)[1], mdtraj.compute_psi(traj)[1]
    times = read_times(args.storage)
    tmp = args.out + ".tmp.npz"
    np.savez_compressed(tmp, phi=phi.astype(np.float32), psi=psi.astype(np.float32),
                        energy_kjmol=energies, positions=xyz[::args.keep_every],
                        temperatures=temperatures, exchange_acceptance=exchange,
                        force_evaluations=evaluations, **times,
                        command=" ".join([os.path.basename(sys.argv[0])] + list(argv or sys.argv[1:])))
    os.replace(tmp, args.out)
    print(f"{n_iterations} iterations, {evaluations:.3g} force evaluations, "
          f"{times['cpu_seconds'] / 3600:.2f} CPU-h; exchange acceptance "
          f"{np.round(exchange, 2)}; wrote {args.out}")
    halves_report(phi, psi, "this reference")
    if args.check:
        check_against(phi, psi, args.check)
    return 0


if __name__ == "__main__":
    sys.exit(main())

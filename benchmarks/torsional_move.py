"""Torsional DiGS in OpenMM: speed against Langevin, and sampling against MD and replica exchange.

Three parts, each printed as a table (``--parts`` picks them):

``speed``
    Force evaluations per CPU-second and per wall-second of the move
    (:class:`~openmm_dikl.samplers.torsional.TorsionalDiGSEngine`, σ = π, one GHMC step of
    1 fs per level unless ``--denoise-steps`` says otherwise) against
    ``LangevinMiddleIntegrator`` (2 fs, 1/ps) on the same System and platform, timed in
    the same run.  The ratio is the goal of the issue (≥ 0.5).  Platforms: CPU, and
    OpenCL / CUDA where present.
``sampling``
    Ace-(Ala)3-Nme (amber14 + OBC2, ``HBonds``, 300 K) at an equal budget of force
    evaluations: the move, Langevin MD (2 fs, one evaluation per step) and parallel
    tempering (8 replicas 300–600 K, 2 fs Langevin, 50 steps per exchange; its frames are
    the 300 K replica's).  Per residue: core-to-core φ transitions (φ ∈ [−170°, −30°] to
    φ ∈ [30°, 130°] or back) per 10⁶ evaluations and per CPU-second, and the Ramachandran
    KL (``--kl-bins`` per angle, default 20 × 20: the reference has 13,000 frames;
    KL(reference ‖ sampler), pseudo-count 1e-10) against the shipped replica-exchange
    reference ``systems/ace_ala3_nme_reference.npz`` (``benchmarks/peptide_reference.py``)
    when it exists, with the noise floor of its two halves.
``protein``
    T4 lysozyme L99A in OBC implicit solvent (openmmtools' ``LysozymeImplicit``, 2,621
    atoms, OBC as a ``CustomGBForce`` without cutoff: ≈ 1–2 s per force evaluation on one
    CPU thread; the Amber prmtop has no constraints): the backbone φ/ψ are selected (about
    320 levels), and ``--protein-levels`` levels spread along the chain are run — energies
    finite, the pivots accepted, and the cost of a level in Langevin steps (a full sweep
    costs the number of levels times that).

Usage::

    OPENMM_CPU_THREADS=1 python benchmarks/torsional_move.py             # ~25 min
    python benchmarks/torsional_move.py --parts sampling --budget 1000000 --traces runs/t.pkl
    python benchmarks/torsional_move.py --parts speed --budget 20000      # quick
"""
import argparse
import os
import pickle
import time

import numpy as np
import openmm
from openmm import app, unit
from openmmtools import testsystems

from openmm_dikl import systems
from openmm_dikl.analysis.torsion_metrics import ramachandran_kl
from openmm_dikl.samplers import ParallelTempering, TorsionalDiGSEngine, geometric_temperatures
from openmm_dikl.samplers.torsional import dihedrals
from openmm_dikl.systems.torsions import backbone_torsions, select_torsions, torsion_levels

PEPTIDE = "ace_ala3_nme_implicit"
REFERENCE = "ace_ala3_nme_reference.npz"
CORES = ((-170.0, -30.0), (30.0, 130.0))   # φ basins, degrees


def timed(run):
    """(result, CPU seconds, wall seconds) of ``run()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def langevin_context(system, positions, platform, seed=1):
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 2 * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    return context, integrator


def make_engine(target, platform, n_denoise_steps, seed=0):
    torsions = select_torsions(target.topology)
    return TorsionalDiGSEngine(target.system, torsions, torsion_levels(torsions), np.pi,
                               target.temperature, n_denoise_steps=n_denoise_steps,
                               platform=platform, seed=seed)


def available_platforms():
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    return [p for p in ("CPU", "OpenCL", "CUDA") if p in names]


# ---------------------------------------------------------------------- speed
def speed(args):
    print("\n## speed: force evaluations per second, move / Langevin on the same platform")
    print(f"{'system':24s} {'platform':8s} {'denoise':>7s} {'Langevin/cpu-s':>15s} "
          f"{'move/cpu-s':>11s} {'ratio cpu':>9s} {'ratio wall':>10s}")
    for name in ("alanine_dipeptide_implicit", PEPTIDE):
        target = systems.get(name)
        for platform in available_platforms():
            context, integrator = langevin_context(target.system, target.positions, platform)
            integrator.step(10)
            _, cpu_md, wall_md = timed(lambda: (integrator.step(args.speed_evals),
                                                context.getState(getEnergy=True)))
            for steps in args.denoise_steps:
                engine = make_engine(target, platform, steps)
                engine.set_positions(target.positions)
                engine.sweep(2)
                before = engine.force_evaluations
                sweeps = max(1, args.speed_evals // (engine.n_levels * (steps + 2)))
                _, cpu_mv, wall_mv = timed(lambda: engine.sweep(sweeps))
                evals = engine.force_evaluations - before
                md_rate, mv_rate = args.speed_evals / cpu_md, evals / cpu_mv
                print(f"{name:24s} {platform:8s} {steps:7d} {md_rate:15.0f} {mv_rate:11.0f} "
                      f"{mv_rate / md_rate:9.2f} {(evals / wall_mv) / (args.speed_evals / wall_md):10.2f}")


# ---------------------------------------------------------------------- sampling
class Trace:
    """φ/ψ of every residue per recorded frame, and core-to-core φ transitions per residue."""

    def __init__(self, topology):
        quads = backbone_torsions(topology)
        self.phi_quads, self.psi_quads = quads["phi"], quads["psi"]
        self.frames, self.last_core = [], None
        self.transitions = np.zeros(len(self.phi_quads), dtype=int)

    def record(self, x):
        phi, psi = dihedrals(x, self.phi_quads), dihedrals(x, self.psi_quads)
        self.frames.append(np.stack([phi, psi], axis=1))
        degrees = np.degrees(phi)
        core = np.full(len(phi), -1)
        for k, (low, high) in enumerate(CORES):
            core[(degrees >= low) & (degrees <= high)] = k
        if self.last_core is None:
            self.last_core = core.copy()
        changed = (core >= 0) & (self.last_core >= 0) & (core != self.last_core)
        self.transitions += changed
        self.last_core = np.where(core >= 0, core, self.last_core)

    def angles(self, n_frames):
        frames = np.array(self.frames)
        index = np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).astype(int)
        return frames[index]   # (frames, residues, 2)


def _positions(state):
    return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def run_move(target, budget, seed):
    engine = make_engine(target, "CPU", 1, seed=seed)
    engine.set_positions(target.positions)
    trace = Trace(target.topology)
    while engine.force_evaluations < budget:
        engine.sweep(1)
        trace.record(_positions(engine.get_state(getPositions=True)))
    return trace, engine.force_evaluations, "init " + " ".join(
        f"{a / max(p, 1):.2f}" for a, p in zip(engine.statistics["init_accepted"],
                                                 engine.statistics["init_proposed"]))


def run_langevin(target, budget, seed, record_every=10):
    context, integrator = langevin_context(target.system, target.positions, "CPU", seed + 1)
    trace = Trace(target.topology)
    for _ in range(budget // record_every):
        integrator.step(record_every)
        trace.record(_positions(context.getState(getPositions=True)))
    return trace, budget // record_every * record_every, "-"


def run_tempering(target, budget, seed):
    ladder = geometric_temperatures(target.temperature, 600.0, 8)
    pt = ParallelTempering(target.system, target.positions, ladder, steps_per_swap=50,
                           timestep=2.0, platform="CPU", seed=seed)
    trace = Trace(target.topology)
    while pt.iteration * pt.force_evaluations_per_iteration < budget:
        x, _ = pt.step()
        trace.record(np.asarray(x, dtype=np.float64))
    return (trace, pt.iteration * pt.force_evaluations_per_iteration,
            "exch " + " ".join(f"{a:.2f}" for a in pt.acceptance_rates))


def _sampling_runs(args, target):
    """{method: (angles (frames, residues, 2), transitions (residues,), evals, cpu s, accept)}.

    With ``--traces PATH``: read from PATH if it exists, else run and save there (so the KL
    columns can be added once a reference exists, without rerunning).
    """
    if args.traces and os.path.exists(args.traces):
        with open(args.traces, "rb") as handle:
            return pickle.load(handle)
    runs = {}
    for name, run in (("digs", run_move), ("langevin", run_langevin), ("pt", run_tempering)):
        (trace, evals, accept), cpu, _ = timed(lambda: run(target, args.budget, args.seed))
        runs[name] = (trace.angles(args.frames), trace.transitions, evals, cpu, accept)
        print(f"  ran {name}: {evals} evaluations, {cpu:.0f} CPU s", flush=True)
    if args.traces:
        with open(args.traces, "wb") as handle:
            pickle.dump(runs, handle)
    return runs


def sampling(args):
    target = systems.get(PEPTIDE)
    reference = None
    try:
        data = np.load(systems.shipped_path(REFERENCE))
        reference = np.stack([data["phi"], data["psi"]], axis=-1)   # (frames, residues, 2)
    except FileNotFoundError:
        print(f"(no {REFERENCE}: KL columns left out)")
    print(f"\n## sampling: {PEPTIDE}, {args.budget:.0e} force evaluations per method, seed {args.seed}")
    runs = _sampling_runs(args, target)
    print(f"{'method':10s} {'evals':>8s} {'cpu s':>7s}  per residue: trans/1e6 | trans/cpu-s"
          + (" | KL rama" if reference is not None else "") + "  (acceptance)")
    for name, (angles, transitions, evals, cpu, accept) in runs.items():
        cells = [f"{t / evals * 1e6:.0f}" for t in transitions]
        per_cpu = [f"{t / cpu:.3f}" for t in transitions]
        row = f"{name:10s} {evals:8d} {cpu:7.1f}  {' '.join(cells)} | {' '.join(per_cpu)}"
        if reference is not None:
            kls = [ramachandran_kl(angles[:, r], reference[:, r], bins=args.kl_bins)
                   for r in range(angles.shape[1])]
            row += " | " + " ".join(f"{k:.3f}" for k in kls)
        print(row + f"  ({accept})")
    if reference is not None:
        half = len(reference) // 2
        n = min(args.frames, half)
        a = reference[:half][np.linspace(0, half - 1, n).astype(int)]
        floor = [ramachandran_kl(a[:, r], reference[half:, r], bins=args.kl_bins)
                 for r in range(a.shape[1])]
        print(f"{'floor':10s} first half ({n} frames) vs second half ({len(reference) - half}) of "
              f"the reference: KL rama " + " ".join(f"{k:.3f}" for k in floor))
        for label, part in (("first", reference[:half]), ("second", reference[half:])):
            print(f"  p(phi > 0) per residue, {label} half: "
                  + " ".join(f"{np.mean(part[:, r, 0] > 0):.4f}" for r in range(part.shape[1])))


# ---------------------------------------------------------------------- protein
def protein(args):
    lysozyme = testsystems.LysozymeImplicit()
    topology, system, positions = lysozyme.topology, lysozyme.system, lysozyme.positions
    torsions = select_torsions(topology)
    engine = TorsionalDiGSEngine(system, torsions, torsion_levels(torsions), np.pi, 300.0,
                                 n_denoise_steps=1, platform="CPU", seed=args.seed)
    engine.set_positions(positions)
    engine.get_state(getEnergy=True)
    chosen = np.linspace(0, engine.n_levels - 1, args.protein_levels).astype(int)
    start = engine.force_evaluations
    _, cpu_sweep, wall_sweep = timed(lambda: [engine.run_level(int(k)) for k in chosen])
    n_evals = engine.force_evaluations - start
    energy = engine.get_state(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    context, integrator = langevin_context(system, positions, "CPU")
    integrator.step(5)
    _, cpu_md, wall_md = timed(lambda: (integrator.step(10), context.getState(getEnergy=True)))
    cpu_md, wall_md = cpu_md * 10, wall_md * 10   # per 100 steps
    stats = engine.statistics
    print(f"\n## protein: T4 lysozyme L99A, OBC implicit, {system.getNumParticles()} atoms, "
          f"{len(torsions)} backbone torsions (prolines' phi skipped)")
    names = ", ".join(torsions[engine.levels[k][0]].name for k in chosen)
    print(f"{len(chosen)} of {engine.n_levels} levels ({names}): {n_evals} force evaluations, "
          f"energy after {energy:.1f} kJ/mol (finite: {np.isfinite(energy)}), pivots accepted "
          f"{stats['init_accepted'].sum()}/{stats['init_proposed'].sum()}, denoising acceptance "
          f"{stats['denoise_accepted'].sum() / stats['denoise_proposed'].sum():.2f}")
    per_level = cpu_sweep / len(chosen)
    print(f"cost of a level: {per_level:.2f} CPU s = {per_level / (cpu_md / 100):.1f} Langevin "
          f"steps (wall {wall_sweep / len(chosen) / (wall_md / 100):.1f}); per force evaluation "
          f"{cpu_sweep / n_evals / (cpu_md / 100):.2f}x a Langevin step; a sweep is "
          f"{engine.n_levels} levels")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["speed", "sampling", "protein"],
                        choices=["speed", "sampling", "protein"])
    parser.add_argument("--budget", type=int, default=200000,
                        help="force evaluations per method in the sampling part")
    parser.add_argument("--speed-evals", type=int, default=5000,
                        help="force evaluations timed per row of the speed part")
    parser.add_argument("--denoise-steps", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--protein-levels", type=int, default=6,
                        help="levels of the lysozyme sweep to run in the protein part")
    parser.add_argument("--traces", default=None,
                        help="pickle of the sampling traces: read if it exists, else written")
    parser.add_argument("--kl-bins", type=int, default=20,
                        help="bins per angle of the Ramachandran KL (the 3,000-frame reference "
                             "cannot fill the README's 60 x 60 grid)")
    parser.add_argument("--frames", type=int, default=5000, help="frames per trace for the KL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for part in args.parts:
        {"speed": speed, "sampling": sampling, "protein": protein}[part](args)


if __name__ == "__main__":
    main()

"""Alanine dipeptide at equal force-evaluation budgets: DiGS (torsional and internal-
coordinate kernels) vs MALA and HMC in internal and in Cartesian coordinates, OpenMM
Langevin dynamics and parallel tempering.

Target: ``alanine_dipeptide_implicit`` (OBC2, 300 K).  Energies and forces come from
OpenMM through the bridge (one worker; all chains of a sampler are one batch per bridge
call); Langevin and PT run OpenMM integrators on the Reference platform.  Every torch
method starts its chains from snapshots of one short Langevin run in the φ < 0 basin; PT
starts all replicas from the first snapshot.

Coordinates.  *Internal* rows sample z = (q − centre)/scale, q the 60 Z-matrix coordinates
(:class:`~openmm_dikl.internal.InternalTransform` fitted to the starting snapshots, rigid
frame fixed, dihedrals unwrapped), with density exp(−u(x(z)) + log|det ∂x/∂z|) — the
set-up of the DiGS paper for alanine dipeptide.  MALA/HMC there use
:class:`~openmm_dikl.energy.TransformedEnergy` on the same transform the
internal-coordinate DiGS sampler uses.  *Cartesian* rows sample positions in nm.

Tuning.  MALA and HMC (10 leapfrog steps) adapt one step size per chain toward
acceptance 0.574 / 0.65 during burn-in (Robbins–Monro on log h, frozen afterwards);
DiGS denoising steps adapt the same way (MALA, 0.574).  Burn-in evaluations count toward
the budget and burn-in states are not recorded.  PT: 4 replicas on a geometric ladder
300–600 K, exchanges after every few 1 fs Langevin steps (chosen so that the 300 K
replica yields at least ``--frames`` frames); its evaluations count every replica's
Langevin steps plus one energy per replica per exchange.

Columns.  evals: force evaluations (all chains / replicas).  trans/1e6: core-to-core φ
transitions per 10⁶ evaluations — a chain passing from φ ∈ [−170°, −30°] to
φ ∈ [30°, 130°] or back (the last core visited is remembered).  KL: KL(reference ‖
sampler) of the φ and ψ histograms (60 bins) and of the Ramachandran histogram (60 × 60)
as in :mod:`openmm_dikl.analysis.evaluation`: every trace (all chains, recorded after burn-in) is
thinned evenly to ``--frames`` frames, the pseudo-count is one sample per bin at that
size (1/frames), the reference is the first half of the shipped PT run
(``systems/ala2_implicit_reference.npz``), and the noise floor row compares its second
half, thinned the same way.  accept: mean MH acceptance (MALA/HMC), initialisation
acceptance per level (DiGS) or exchange acceptance (PT).

Measured (default: 32 chains, 3e5 evaluations per method, KL at 10⁴ frames, seed 0;
6.6 min CPU, 14 min wall on a shared machine)::

    method          coordinates        evals  trans/1e6  KL phi  KL psi  KL rama  accept
    digs_torsional  Cartesian + φ/ψ   300000      680.0   0.004   0.005    0.051  0.081
    digs_internal   internal          299936        6.7   0.003   0.006    0.043  0.000/0.004
    hmc_internal    internal          299872        3.3   0.005   0.016    0.075  0.646
    mala_internal   internal          300032        0.0   0.003   0.005    0.045  0.569
    hmc_cartesian   Cartesian         299872        0.0   0.036   0.419    0.199  0.626
    mala_cartesian  Cartesian         300032        0.0   0.059   0.501    0.312  0.587
    langevin        Cartesian (MD)    300000        0.0   0.021   0.075    0.094  -
    pt              Cartesian (MD)    299992      573.3   0.049   0.022    0.111  0.367
    noise floor     PT reference                          0.002   0.004    0.045

In internal coordinates DiGS and MALA both reach the noise floor and HMC does not
(1e5 evaluations, 5000 frames: KL rama DiGS 0.051, MALA 0.049, HMC 0.075 with 10,
0.057 with 5 and 0.058 with 3 leapfrog steps; floor 0.049).  The 300 K reference puts
only 0.16 % of its weight at φ > 0, so KL rama mostly measures α/β (ψ) mixing inside the
φ < 0 basin; φ-basin transitions are counted separately (2, 1 and 0 for internal DiGS,
HMC and MALA above — too few to rank them).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/digs_torch.py            # ~7 min CPU
    OMP_NUM_THREADS=1 python benchmarks/digs_torch.py --quick    # ~1.5 min CPU
    python benchmarks/digs_torch.py --methods digs_torsional,mala_internal --evals 100000
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit

from openmm_dikl import systems
from openmm_dikl.analysis import metrics
from openmm_dikl.energy import EnergyAndForce, TransformedEnergy
from openmm_dikl.geometry import dihedral, wrap_angle
from openmm_dikl.internal import InternalCoordinates, InternalTransform
from openmm_dikl.samplers import (HMC, MALA, DiGSSampler, GaussianKernel, ParallelTempering,
                                  TorsionalKernel, geometric_temperatures)

_ALA2 = systems.get("alanine_dipeptide_implicit")
ALANINE_PHI, ALANINE_PSI = tuple(_ALA2.torsions["phi"][0]), tuple(_ALA2.torsions["psi"][0])

CORE_A = (-170.0, -30.0)
CORE_B = (30.0, 130.0)


def phi_psi(x):
    """(φ, ψ) in degrees of positions (batch, 22, 3), numpy (batch, 2)."""
    out = [dihedral(*(x[:, i] for i in quad)) for quad in (ALANINE_PHI, ALANINE_PSI)]
    return torch.rad2deg(torch.stack(out, -1)).numpy()


class TransitionCounter:
    """Counts core-to-core φ transitions per chain and stores (φ, ψ) traces."""

    def __init__(self, n_chains):
        self.last = np.zeros(n_chains, dtype=int)
        self.transitions = 0
        self.trace = []

    def update(self, angles):
        phi = angles[:, 0]
        core = np.where((phi > CORE_A[0]) & (phi < CORE_A[1]), -1,
                        np.where((phi > CORE_B[0]) & (phi < CORE_B[1]), 1, 0))
        changed = (core != 0) & (self.last != 0) & (core != self.last)
        self.transitions += int(changed.sum())
        self.last = np.where(core != 0, core, self.last)
        self.trace.append(angles)


def langevin_starts(target, n_chains, seed, n_equil=20000, spacing=1000):
    """Snapshots (nm) of one 1 fs Langevin run at 300 K after ``n_equil`` steps."""
    integrator = openmm.LangevinMiddleIntegrator(target.temperature, 1 / unit.picosecond,
                                                 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(target.system, integrator,
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(target.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(target.temperature, seed + 1)
    integrator.step(n_equil)
    starts = []
    for _ in range(n_chains):
        integrator.step(spacing)
        starts.append(context.getState(getPositions=True).getPositions(asNumpy=True)
                      .value_in_unit(unit.nanometer))
    return torch.tensor(np.array(starts))


def run_langevin(target, budget, seed, **_):
    """OpenMM LangevinMiddleIntegrator, 1 fs, 1/ps, one chain; φ recorded every 10 steps."""
    integrator = openmm.LangevinMiddleIntegrator(target.temperature, 1 / unit.picosecond,
                                                 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 7)
    context = openmm.Context(target.system, integrator,
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(target.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(target.temperature, seed + 7)
    integrator.step(20000)  # equilibration, not counted
    counter = TransitionCounter(1)
    for _ in range(budget // 10):
        integrator.step(10)
        x = context.getState(getPositions=True).getPositions(asNumpy=True)
        counter.update(phi_psi(torch.tensor(np.asarray(x.value_in_unit(unit.nanometer)))[None]))
    return counter, (budget // 10) * 10, {}


def run_pt(target, budget, seed, starts, n_frames, n_replicas=4, t_max=600.0, **_):
    """Parallel tempering, ``n_replicas`` on 300–``t_max`` K; the 300 K replica is recorded.

    Evaluations per iteration: n_replicas · (steps_per_swap Langevin steps + 1 exchange
    energy); steps_per_swap is the largest value that still gives ``n_frames`` frames.
    """
    ladder = geometric_temperatures(target.temperature, t_max, n_replicas)
    steps = max(1, budget // (n_replicas * n_frames) - 1)
    per_iteration = n_replicas * (steps + 1)
    positions = unit.Quantity(starts[0].numpy(), unit.nanometer)
    pt = ParallelTempering(target.system, positions, ladder, steps_per_swap=steps,
                           platform="Reference", seed=seed)
    counter = TransitionCounter(1)
    n_iterations = budget // per_iteration
    for _ in range(n_iterations):
        x, _ = pt.step()
        counter.update(phi_psi(torch.tensor(x)[None]))
    return counter, n_iterations * per_iteration, {
        "accept": float(np.mean(pt.acceptance_rates)),
        "ladder": "/".join(f"{t:.0f}" for t in ladder) + f" K, {steps} steps per exchange"}


def internal_angles(ic, transform):
    """(φ, ψ) in degrees read off standardised internal coordinates z (batch, 60)."""
    index = torch.tensor([ic.coordinate_index(ALANINE_PHI), ic.coordinate_index(ALANINE_PSI)])

    def angles(z):
        q = transform.center[index] + z[:, index] * transform.scale[index]
        return torch.rad2deg(wrap_angle(q)).numpy()
    return angles


# Initial step sizes (adapted per chain during burn-in): MALA h in units of the state
# squared, HMC ε in units of the state; "internal" states are standardised (dimensionless).
INITIAL_STEP = {("mala", "cartesian"): 2e-6, ("hmc", "cartesian"): 2e-3,
                ("mala", "internal"): 0.1, ("hmc", "internal"): 0.35}
BURN_IN = {"mala": 300, "hmc": 100}  # steps per chain (counted in the budget)


def run_mcmc(kind, coordinates):
    def run(target, budget, seed, starts, energy, n_leapfrog=10, **_):
        n_chains = starts.shape[0]
        fn, x0, angles = energy, starts, phi_psi
        if coordinates == "internal":
            ic = InternalCoordinates.from_target(target)
            transform = InternalTransform.fit(ic, starts)
            fn = TransformedEnergy(energy, transform)
            x0, angles = fn.to_state(starts), internal_angles(ic, transform)
        generator = torch.Generator().manual_seed(seed)
        step = INITIAL_STEP[(kind, coordinates)]
        if kind == "mala":
            sampler, per_step = MALA(fn, step_size=step, generator=generator), 1
        else:
            sampler = HMC(fn, step_size=step, n_leapfrog=n_leapfrog, generator=generator)
            per_step = n_leapfrog
        counter = TransitionCounter(n_chains)
        burn = BURN_IN[kind]
        n_steps = max(budget // (n_chains * per_step), burn + 1)
        result = sampler.run(x0, n_steps, burn_in=burn, keep_samples=False,
                             callback=lambda i, x, u, st: counter.update(angles(x)) if i >= burn else None)
        h = result.statistics["step_size"]
        return counter, result.force_evaluations, {
            "accept": float(result.acceptance["acceptance"].mean()),
            "step": f"{float(h.median()):.3g} (chains {float(h.min()):.3g}-{float(h.max()):.3g})"}
    return run


def run_digs(make_kernel, n_denoise, transform=False):
    def run(target, budget, seed, starts, energy, **_):
        n_chains = starts.shape[0]
        options = {}
        if transform:
            ic = InternalCoordinates.from_target(target)
            options["transform"] = InternalTransform.fit(ic, starts)
            step = 1e-3  # standardised coordinates
        else:
            step = INITIAL_STEP[("mala", "cartesian")]
        sampler = DiGSSampler(energy, kernel=make_kernel(), n_denoise_steps=n_denoise,
                              step_size=step, generator=torch.Generator().manual_seed(seed),
                              **options)
        counter = TransitionCounter(n_chains)
        burn = 100
        per_sweep = 1 + float(np.mean(n_denoise))
        n_sweeps = max(int(budget // (n_chains * per_sweep)), burn + 1)
        result = sampler.run(starts, n_sweeps, burn_in=burn, keep_samples=False, progress=False,
                             callback=lambda s, x, u, st: counter.update(phi_psi(x)) if s >= burn else None)
        stats, rates = result.statistics, result.acceptance
        return counter, result.force_evaluations, {
            "accept": "/".join(f"{a:.3f}" for a in rates["init_acceptance"]),
            "denoise accept": float(np.nanmean(rates["denoise_acceptance"]))
            if np.any(n_denoise) else float("nan"),
            "levels": "; ".join(stats["levels"])}
    return run


def _torsional(*sigma_rows):
    return lambda: TorsionalKernel.from_topology(_ALA2.topology, [ALANINE_PHI, ALANINE_PSI],
                                                 list(sigma_rows))


# name -> (coordinates, runner).  DiGS rows: kernel levels (σ in rad for torsional
# kernels), denoising MALA steps per sweep.  "digs_internal" is the paper's set-up: VP
# noise α ∈ {0.1, 0.9} on the 60 standardised internal coordinates, 5 MALA steps.
# "digs_torsional" noises φ and ψ with σ = π (pivot moves) and takes one Cartesian MALA
# step per sweep.  "digs_cartesian" is x̃ = x + σε with σ = 0.005 nm on all atoms.
METHODS = {
    "digs_torsional": ("Cartesian + φ/ψ", run_digs(_torsional(math.pi), 1)),
    "digs_internal": ("internal", run_digs(lambda: GaussianKernel([0.1, 0.9]), 5, transform=True)),
    "hmc_internal": ("internal", run_mcmc("hmc", "internal")),
    "mala_internal": ("internal", run_mcmc("mala", "internal")),
    "hmc_cartesian": ("Cartesian", run_mcmc("hmc", "cartesian")),
    "mala_cartesian": ("Cartesian", run_mcmc("mala", "cartesian")),
    "digs_cartesian": ("Cartesian", run_digs(lambda: GaussianKernel([1.0], [0.005]), 5)),
    "langevin": ("Cartesian (MD)", run_langevin),
    "pt": ("Cartesian (MD)", run_pt),
    # further torsional-kernel variants
    "internal_weak": ("internal", run_digs(lambda: GaussianKernel([0.95, 0.99]), 5, transform=True)),
    "torsional": ("Cartesian + φ/ψ", run_digs(_torsional(math.pi, 0.3), 3)),
    "torsional_pi_d3": ("Cartesian + φ/ψ", run_digs(_torsional(math.pi), 3)),
    "torsional_1rad": ("Cartesian + φ/ψ", run_digs(_torsional(1.0), 1)),
    "torsional_split": ("Cartesian + φ/ψ",
                        run_digs(_torsional((math.pi, 0.3), (0.3, math.pi), (math.pi, math.pi)), 1)),
    "torsional_mix": ("Cartesian + φ/ψ", run_digs(_torsional(math.pi, math.pi, 0.3), [0, 0, 2])),
    "torsional_cheap": ("Cartesian + φ/ψ", run_digs(_torsional(math.pi, math.pi), [0, 1])),
}
DEFAULT_METHODS = ("digs_torsional,digs_internal,hmc_internal,mala_internal,hmc_cartesian,"
                   "mala_cartesian,langevin,pt")
QUICK_METHODS = "digs_torsional,digs_internal,hmc_internal,mala_internal,pt"


def core_b_fraction(angles):
    """Fraction of recorded frames with φ in the core [30°, 130°] (C7ax / αL)."""
    if not len(angles):
        return float("nan")
    return float(((angles[:, 0] > CORE_B[0]) & (angles[:, 0] < CORE_B[1])).mean())


def thin(angles, n):
    """``angles`` (frames, 2) thinned evenly to at most ``n`` frames."""
    if len(angles) <= n:
        return angles
    return angles[np.linspace(0, len(angles) - 1, n).astype(int)]


def kl_row(reference, angles, n_frames):
    """(KL φ, KL ψ, KL rama) of the reference's first half vs ``angles`` thinned to n_frames.

    Angles in degrees; :func:`openmm_dikl.analysis.metrics.dihedral_kl` / ``ramachandran_kl`` on 60
    (60 × 60) bins with a pseudo-count of one sample per bin (1/n_frames), as in
    :func:`openmm_dikl.analysis.evaluation.evaluate_array`.
    """
    half = np.radians(reference[: len(reference) // 2])
    sample = np.radians(thin(angles, n_frames))
    pseudo = 1.0 / n_frames
    return (metrics.dihedral_kl(sample[:, 0], half[:, 0], pseudo=pseudo),
            metrics.dihedral_kl(sample[:, 1], half[:, 1], pseudo=pseudo),
            metrics.ramachandran_kl(sample, half, pseudo=pseudo))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="alanine_dipeptide_implicit")
    parser.add_argument("--evals", type=int, default=300000, help="force evaluations per method")
    parser.add_argument("--chains", type=int, default=32)
    parser.add_argument("--frames", type=int, default=10000,
                        help="frames per method (evenly thinned) for the KL columns")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated, from {', '.join(METHODS)} (default {DEFAULT_METHODS})")
    parser.add_argument("--quick", action="store_true",
                        help=f"6e4 evaluations, 2000 frames, methods {QUICK_METHODS}")
    parser.add_argument("--leapfrog", type=int, default=10, help="leapfrog steps per HMC step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "..",
                                                            "systems", "ala2_implicit_reference.npz"))
    parser.add_argument("--save", default=None,
                        help="write the (φ, ψ) traces (degrees) of every method to this .npz")
    args = parser.parse_args(argv)
    if args.quick:
        args.evals, args.frames = min(args.evals, 60000), min(args.frames, 2000)
    methods = (args.methods or (QUICK_METHODS if args.quick else DEFAULT_METHODS)).split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    torch.set_num_threads(1)
    target = systems.get(args.system)
    reference = None
    if os.path.exists(args.reference) and "implicit" in args.system:
        data = np.load(args.reference)
        reference = np.rad2deg(np.stack([data["phi"], data["psi"]], -1)).reshape(-1, 2)
    starts = langevin_starts(target, args.chains, args.seed)
    print(f"# {target.name}: {args.chains} chains, budget {args.evals} force evaluations per "
          f"method, KL at {args.frames} frames, seed {args.seed}")
    header = (f"{'method':<16}{'coordinates':<18}{'evals':>9}{'trans/1e6':>10}{'KL phi':>8}"
              f"{'KL psi':>8}{'KL rama':>9}{'accept':>14}{'time s':>8}")
    print(header)
    print("-" * len(header))
    traces, notes, short_rows = {}, [], []
    with EnergyAndForce(target, n_workers=1) as energy:
        for name in methods:
            coordinates, runner = METHODS[name]
            start = time.time()
            counter, evals, details = runner(target, args.evals, args.seed, starts=starts,
                                             energy=energy, n_frames=args.frames,
                                             n_leapfrog=args.leapfrog)
            wall = time.time() - start
            angles = np.concatenate(counter.trace) if counter.trace else np.zeros((0, 2))
            traces[name] = np.stack(counter.trace, 1).astype(np.float32) if counter.trace else angles
            kl = (float("nan"),) * 3
            if reference is not None and len(angles):
                kl = kl_row(reference, angles, args.frames)
            accept = details.pop("accept", "-")
            accept = f"{accept:.3f}" if isinstance(accept, float) else accept
            short = "*" if len(angles) < args.frames else ""
            if short:
                short_rows.append(name)
            print(f"{name + short:<16}{coordinates:<18}{evals:>9d}"
                  f"{1e6 * counter.transitions / max(evals, 1):>10.1f}"
                  f"{kl[0]:>8.3f}{kl[1]:>8.3f}{kl[2]:>9.3f}{accept:>14}{wall:>8.1f}", flush=True)
            notes.append(f"#   {name}: {len(angles)} frames, {counter.transitions} transitions"
                         + "".join(f", {k} {v:.3f}" if isinstance(v, float) else f", {k} {v}"
                                   for k, v in details.items()))
    if reference is not None:
        half = len(reference) // 2
        floor = kl_row(reference, reference[half:], args.frames)
        print(f"{'noise floor':<16}{'PT reference':<18}{'':>9}{'':>10}"
              f"{floor[0]:>8.3f}{floor[1]:>8.3f}{floor[2]:>9.3f}")
        print(f"# reference: {len(reference)} PT frames, p(phi in [30, 130] deg) = "
              f"{core_b_fraction(reference):.4f}; floor = second half vs first half")
    print("\n".join(notes))
    if short_rows:
        print(f"# * {', '.join(short_rows)}: fewer frames than --frames, KL not comparable "
              "(larger budget needed)")
    if args.save:
        np.savez_compressed(args.save, **traces)


if __name__ == "__main__":
    main()

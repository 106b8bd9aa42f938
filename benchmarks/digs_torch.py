"""φ-basin transitions of alanine dipeptide: torsional / internal / Cartesian DiGS vs MALA,
HMC and OpenMM Langevin, at a fixed budget of force evaluations.

Energies and forces come from OpenMM through the bridge (Reference platform, one
worker; all chains of a sampler are one batch per bridge call).  Every method starts its
chains from snapshots of a short Langevin run in the φ < 0 basin.  A *transition* is a
chain passing from the core φ ∈ [−170°, −30°] to the core φ ∈ [30°, 130°] or back
(the last core visited is remembered, so wraps at ±180° inside β do not count).

Printed per method: force evaluations (all chains), core transitions, transitions per
1e6 evaluations, p(B) = fraction of frames in the core φ ∈ [30°, 130°], initialisation acceptance per DiGS level, wall time,
and — if ``systems/ala2_implicit_reference.npz`` (arrays ``phi``, ``psi`` in radians)
exists — KL divergences of histograms: KL(first half of the reference || sampler) of
the Ramachandran histogram on a 60 × 60 grid with a pseudocount of 1 per bin, and of the
ψ marginal (60 bins, pseudocount 0.5).  The pseudocount makes KL depend on sample size,
so every sampler's trace is thinned evenly to as many frames as the reference half, and
the header prints the noise floor KL(first half || second half of the reference).

Measured (implicit solvent, 300 K, 32 chains, 3e5 evaluations per method, seed 0;
reference p(B) = 0.0016 from 40000 PT frames, KL floor rama 0.040 / ψ 0.003):

=================  ========  ===========  ======  =========  ======  ==============
method             trans.    per 1e6      p(B)    KL rama    KL ψ    init accept.
=================  ========  ===========  ======  =========  ======  ==============
torsional_pi       204       680          0.0022  0.054      0.004   0.081
torsional_cheap    214       713          0.0019  0.071      0.006   0.079 / 0.081
torsional          40        133          0.0020  0.055      0.006   0.080 / 0.456
torsional_split    163       543          0.0027  0.049      0.004   0.17/0.21/0.08
internal (paper)   2         7            0.0022  0.044      0.003   0.000 / 0.004
mala, hmc          0         0            0       0.45/0.25  0.6     —
cartesian          0         0            0       0.447      0.720   0.000
langevin 1 fs      0         0            0       0.116      0.076   —
=================  ========  ===========  ======  =========  ======  ==============

(A second run, 64 chains, 1.2e6 evaluations, seed 1: torsional_pi 660 and
torsional_split 442 transitions per 1e6, p(B) 0.0023 / 0.0020.)

Usage::

    python benchmarks/digs_torch.py --system alanine_dipeptide_implicit --evals 300000
    python benchmarks/digs_torch.py --methods torsional,mala --evals 100000 --chains 32
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
from openmm_dikl import metrics
from openmm_dikl.digs import DiGSSampler, GaussianKernel, TorsionalKernel
from openmm_dikl.internal import ALANINE_PHI, ALANINE_PSI, InternalCoordinates, InternalTransform
from openmm_dikl.internal import dihedral
from openmm_dikl.torch_mcmc import HMC, MALA, energy_and_force

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


def run_mcmc(kind):
    def run(target, budget, seed, starts, energy, step_size, **_):
        n_chains = starts.shape[0]
        generator = torch.Generator().manual_seed(seed)
        if kind == "mala":
            sampler = MALA(energy, step_size=step_size, generator=generator)
            per_step = 1
        else:
            sampler = HMC(energy, step_size=math.sqrt(2 * step_size), n_leapfrog=10,
                          generator=generator)
            per_step = 10
        counter = TransitionCounter(n_chains)
        burn = 200
        n_steps = max(budget // (n_chains * per_step), burn + 1)
        result = sampler.run(starts, n_steps, burn_in=burn, keep_samples=False,
                             callback=lambda step, x, u: counter.update(phi_psi(x)) if step >= burn else None)
        return counter, result.force_evaluations, {"acceptance": float(result.acceptance.mean())}
    return run


def run_digs(make_kernel, n_denoise, transform=False):
    def run(target, budget, seed, starts, energy, step_size, **_):
        n_chains = starts.shape[0]
        options = {}
        if transform:
            ic = InternalCoordinates.alanine_dipeptide(target.topology)
            options["transform"] = InternalTransform.fit(ic, starts)
            step = 1e-3  # standardised coordinates
        else:
            step = step_size
        sampler = DiGSSampler(energy, kernel=make_kernel(), n_denoise_steps=n_denoise,
                              step_size=step, generator=torch.Generator().manual_seed(seed),
                              **options)
        counter = TransitionCounter(n_chains)
        burn = 100
        per_sweep = 1 + float(np.mean(n_denoise))
        n_sweeps = max(int(budget // (n_chains * per_sweep)), burn + 1)
        result = sampler.run(starts, n_sweeps, burn_in=burn, keep_samples=False, progress=False,
                             callback=lambda s, x, st: counter.update(phi_psi(x)) if s >= burn else None)
        stats = result.statistics
        return counter, stats["force_evaluations"], {
            "init": " ".join(f"{a:.3f}" for a in stats["init_acceptance"]),
            "denoise": float(np.nanmean(stats["denoise_acceptance"])) if np.any(n_denoise) else float("nan"),
            "levels": "; ".join(stats["levels"])}
    return run


def _torsional(*sigma_rows):
    return lambda: TorsionalKernel.alanine_dipeptide(list(sigma_rows))


# name -> runner.  DiGS rows: kernel levels (σ in rad for torsional kernels), denoising MALA
# steps per sweep.  "internal" is the paper's set-up: VP noise α ∈ {0.1, 0.9} on the 60
# internal coordinates standardised by the starting snapshots (InternalTransform.fit),
# dihedrals unwrapped.  "cartesian" is x̃ = x + σε with σ = 0.005 nm on all atoms.
METHODS = {
    "langevin": run_langevin,
    "mala": run_mcmc("mala"),
    "hmc": run_mcmc("hmc"),
    "cartesian": run_digs(lambda: GaussianKernel([1.0], [0.005]), 5),
    "internal": run_digs(lambda: GaussianKernel([0.1, 0.9]), 5, transform=True),
    "internal_weak": run_digs(lambda: GaussianKernel([0.95, 0.99]), 5, transform=True),
    "torsional": run_digs(_torsional(math.pi, 0.3), 3),
    "torsional_pi": run_digs(_torsional(math.pi), 1),
    "torsional_pi_d3": run_digs(_torsional(math.pi), 3),
    "torsional_1rad": run_digs(_torsional(1.0), 1),
    "torsional_split": run_digs(_torsional((math.pi, 0.3), (0.3, math.pi), (math.pi, math.pi)), 1),
    "torsional_mix": run_digs(_torsional(math.pi, math.pi, 0.3), [0, 0, 2]),
    "torsional_cheap": run_digs(_torsional(math.pi, math.pi), [0, 1]),
    "pivot_only": run_digs(_torsional(math.pi), 0),  # not ergodic alone (bonds never move)
}


def core_b_fraction(angles):
    """Fraction of recorded frames with φ in the core [30°, 130°] (C7ax / αL)."""
    if not len(angles):
        return float("nan")
    return float(((angles[:, 0] > CORE_B[0]) & (angles[:, 0] < CORE_B[1])).mean())


def matched_kl(reference, angles):
    """(KL rama, KL ψ) of the reference's first half vs ``angles`` thinned to its size.

    Angles in degrees; :func:`openmm_dikl.metrics.ramachandran_kl` / ``dihedral_kl`` on 60
    (60×60) bins with a pseudo-count of 1 (ψ: 0.5) per bin at the thinned size.
    """
    half = reference[: len(reference) // 2]
    if len(angles) > len(half):
        angles = angles[np.linspace(0, len(angles) - 1, len(half)).astype(int)]
    n = len(half)
    return (metrics.ramachandran_kl(np.radians(angles), np.radians(half), pseudo=1.0 / n),
            metrics.dihedral_kl(np.radians(angles[:, 1]), np.radians(half[:, 1]), pseudo=0.5 / n))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="alanine_dipeptide_implicit")
    parser.add_argument("--evals", type=int, default=300000, help="force evaluations per method")
    parser.add_argument("--chains", type=int, default=32)
    parser.add_argument("--methods", default="torsional_pi,torsional_cheap,torsional,"
                                             "torsional_split,internal,mala,hmc,cartesian,langevin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-size", type=float, default=2e-6, help="initial MALA step (nm²)")
    parser.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "..",
                                                            "systems", "ala2_implicit_reference.npz"))
    parser.add_argument("--save", default=None,
                        help="write the (φ, ψ) traces (degrees) of every method to this .npz")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    target = systems.get(args.system)
    reference = None
    if os.path.exists(args.reference) and "implicit" in args.system:
        data = np.load(args.reference)
        reference = np.rad2deg(np.stack([data["phi"], data["psi"]], -1)).reshape(-1, 2)
    starts = langevin_starts(target, args.chains, args.seed)
    print(f"# {target.name}: Reference platform, bridge n_workers=1, {args.chains} chains, "
          f"budget {args.evals} force evaluations per method, seed {args.seed}")
    if reference is not None:
        half = len(reference) // 2
        floor = matched_kl(reference, reference[half:])
        print(f"# reference: {len(reference)} frames, p(B) = {core_b_fraction(reference):.4f}; "
              f"KL noise floor (half vs half): rama {floor[0]:.4f}, psi {floor[1]:.4f}")
    else:
        print("# reference: none")
    header = (f"{'method':<16}{'evals':>10}{'trans':>7}{'per 1e6':>9}{'p(B)':>8}"
              f"{'KL(rama)':>10}{'KL(psi)':>9}{'time s':>8}  details")
    print(header)
    traces = {}
    with energy_and_force(target, n_workers=1) as energy:
        for name in args.methods.split(","):
            if name not in METHODS:
                sys.exit(f"unknown method {name}; choose from {', '.join(METHODS)}")
            start = time.time()
            counter, evals, details = METHODS[name](target, args.evals, args.seed, starts=starts,
                                                    energy=energy, step_size=args.step_size)
            wall = time.time() - start
            angles = np.concatenate(counter.trace) if counter.trace else np.zeros((0, 2))
            traces[name] = np.stack(counter.trace, 1).astype(np.float32) if counter.trace else angles
            kl_rama = kl_psi = float("nan")
            if reference is not None and len(angles):
                kl_rama, kl_psi = matched_kl(reference, angles)
            detail = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in details.items())
            print(f"{name:<16}{evals:>10d}{counter.transitions:>7d}"
                  f"{1e6 * counter.transitions / max(evals, 1):>9.1f}"
                  f"{core_b_fraction(angles):>8.4f}"
                  f"{kl_rama:>10.3f}{kl_psi:>9.3f}{wall:>8.1f}  {detail}", flush=True)
    if args.save:
        np.savez_compressed(args.save, **traces)


if __name__ == "__main__":
    main()

"""Benchmark DiffusiveGibbsIntegrator against LangevinMiddleIntegrator on alanine dipeptide.

Prints, for the vacuum alanine dipeptide (Amber, no constraints, 300 K) on one OpenMM
platform (default Reference):

1. force evaluations per second of LangevinMiddleIntegrator (1 fs; one evaluation per
   step) and of DiffusiveGibbsIntegrator (α = 0.9, 5 MALA steps, ε = 1e-6 nm²; exactly
   ``n_denoise_steps + 2`` evaluations per sweep), and their ratio
   ``ratio = (DiGS evaluations/s) / (Langevin evaluations/s)``;
2. the initialisation and denoising acceptance rates of Cartesian DiGS for a few α.

Timings exclude Context creation and a warm-up; each figure is the best of
``--repeats`` interleaved runs (the machine may be shared).

Usage::

    python benchmarks/digs_integrator.py [--platform Reference] [--sweeps 3000]
"""
import argparse
import time

import openmm
from openmm import unit

from openmm_dikl import systems
from openmm_dikl.samplers import DiffusiveGibbsIntegrator

TEMPERATURE = 300.0  # K


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="Reference", help="OpenMM platform name")
    parser.add_argument("--sweeps", type=int, default=3000,
                        help="DiGS sweeps per timing run (Langevin runs as many force "
                             "evaluations)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing runs")
    parser.add_argument("--acceptance-sweeps", type=int, default=2000,
                        help="sweeps per alpha for the acceptance table")
    parser.add_argument("--seed", type=int, default=1, help="random number seed")
    return parser.parse_args(argv)


def _context(target, integrator, platform, seed):
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(target.system, integrator, platform)
    context.setPositions(target.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    return context


def _time(integrator, n_steps):
    start = time.perf_counter()
    integrator.step(n_steps)
    return time.perf_counter() - start


def main(args):
    target = systems.get("alanine_dipeptide_vacuum")
    platform = openmm.Platform.getPlatformByName(args.platform)
    print(f"system: {target.name} ({target.n_particles} atoms), T = {TEMPERATURE} K, "
          f"platform: {platform.getName()}")

    digs = DiffusiveGibbsIntegrator(TEMPERATURE, alphas=[0.9], n_denoise_steps=5,
                                    step_size=1e-6 * unit.nanometer ** 2)
    langevin = openmm.LangevinMiddleIntegrator(TEMPERATURE * unit.kelvin, 1.0 / unit.picosecond,
                                               1.0 * unit.femtosecond)
    contexts = [_context(target, integrator, platform, args.seed)
                for integrator in (digs, langevin)]
    evaluations_per_sweep = digs.force_evaluations_per_step
    n_langevin = args.sweeps * evaluations_per_sweep
    digs.step(100)  # warm-up
    langevin.step(100)
    best_digs = best_langevin = float("inf")
    for _ in range(args.repeats):
        best_digs = min(best_digs, _time(digs, args.sweeps))
        best_langevin = min(best_langevin, _time(langevin, n_langevin))
    digs_rate = args.sweeps * evaluations_per_sweep / best_digs
    langevin_rate = n_langevin / best_langevin
    print(f"{'integrator':<34}{'us/step':>10}{'evals/step':>12}{'evals/s':>12}")
    print(f"{'LangevinMiddleIntegrator 1 fs':<34}{1e6 * best_langevin / n_langevin:>10.1f}"
          f"{1:>12}{langevin_rate:>12.0f}")
    print(f"{'DiGS a=0.9, 5 MALA, eps=1e-6 nm^2':<34}{1e6 * best_digs / args.sweeps:>10.1f}"
          f"{evaluations_per_sweep:>12}{digs_rate:>12.0f}")
    print(f"ratio (DiGS evals/s / Langevin evals/s) = {digs_rate / langevin_rate:.2f}")
    del contexts

    print("\nCartesian DiGS acceptance on alanine dipeptide (5 MALA steps, eps = 1e-6 nm^2)")
    print(f"{'alpha':>10}{'sigma (nm)':>12}{'init acc':>10}{'MALA acc':>10}")
    for alpha in (0.3, 0.6, 0.8, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999):
        integrator = DiffusiveGibbsIntegrator(TEMPERATURE, alphas=[alpha], n_denoise_steps=5,
                                              step_size=1e-6)
        context = _context(target, integrator, platform, args.seed)
        integrator.step(200)
        integrator.reset_statistics()
        integrator.step(args.acceptance_sweeps)
        rates = integrator.acceptance_rates
        sigma = integrator.sigmas.value_in_unit(unit.nanometer)[0]
        print(f"{alpha:>10}{sigma:>12.6f}{rates['initialisation'][0]:>10.4f}"
              f"{rates['denoising'][0]:>10.3f}")
        del context


def entry_point():
    main(parse_args())


if __name__ == "__main__":
    entry_point()

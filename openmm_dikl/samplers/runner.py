"""Run a sampler on a target and write a trajectory, a topology PDB and a CSV log.

This is the engine behind ``openmm-dikl sample``.  Runs are budgeted in force
evaluations so that methods with different per-step costs are compared fairly.  The
methods (:data:`METHODS`):

* OpenMM integrators: ``langevin`` (LangevinMiddleIntegrator, 1 fs, 1/ps) and
  ``digs-cartesian`` (:class:`~openmm_dikl.samplers.DiffusiveGibbsIntegrator`,
  isotropic Gaussian kernel);
* torch samplers (:class:`~openmm_dikl.samplers.Sampler`) on the target's energy — torch
  twin or OpenMM through the bridge: ``digs``, ``mala`` and ``hmc``;
* ``pt``: parallel tempering (:class:`~openmm_dikl.samplers.ParallelTempering`);
* ``digs-torsional``: torsional DiGS executed by OpenMM
  (:class:`~openmm_dikl.samplers.torsional.TorsionalDiGSEngine`) on the backbone φ/ψ of
  any peptide or protein, one torsion per level, constraints allowed.  ``digs`` means
  this method on targets whose defaults say ``{"engine": "openmm"}`` (user PDBs, the
  longer peptides), and the torch sampler otherwise.

Defaults come in three layers: the generic ones here, the system's own
(:attr:`TargetSystem.sampler_defaults`, e.g. the torsional DiGS kernel and 32 batched
chains for molecules), and the caller's options, each overriding the one before.

Frames.  ``n_frames`` is the total number of frames written: with ``chains`` chains
every report writes one frame per chain (frame ``i * chains + k`` is chain k at report
i), at ceil(n_frames / chains) evenly spaced reports, the last of which writes only the
first chains if ``chains`` does not divide ``n_frames``.  When the budget has fewer steps
than reports, the run says so in a warning and writes one report per step.
"""
import logging
import math

import numpy as np
import openmm
import torch
from openmm import unit
from tqdm.auto import tqdm

from ..bridge import platform_name
from ..energy import EnergyAndForce
from ..units import check_samplable
from .base import ChainResult
from .chains import run_chains_in_workers
from .digs import DiGSSampler
from .integrators import DiffusiveGibbsIntegrator
from .kernels import BlockGaussianKernel, TorsionalKernel
from .mcmc import HMC, MALA
from .output import TrajectoryWriter, check_writable
from .tempering import ParallelTempering, geometric_temperatures
from .torsional import TorsionalDiGSEngine, acceptance_rates, low_acceptance_message
from ..systems.torsions import select_torsions, torsion_levels

__all__ = ["INTEGRATOR_METHODS", "TORCH_METHODS", "METHODS", "run_sampler",
           "make_integrator", "make_torch_sampler", "method_options"]

logger = logging.getLogger(__name__)

#: Generic defaults of every method (a system's ``sampler_defaults`` override them).
GENERIC_DEFAULTS = {"digs": {"step_size": 1e-2},
                    "mala": {"step_size": 1e-2}, "hmc": {"step_size": 1e-2, "n_leapfrog": 10},
                    "langevin": {}, "digs-cartesian": {}, "pt": {"n_replicas": 8}}


def method_options(target, method, options):
    """Options of ``method`` on ``target``: generic, then the system's, then ``options``."""
    merged = dict(GENERIC_DEFAULTS.get(method, {}))
    merged.update(target.sampler_options(method))
    if "alphas" in options and "kernel" not in options:
        merged.pop("kernel", None)  # the caller's Gaussian levels replace the system's kernel
    merged.update(options)
    return merged


# ---------------------------------------------------------------------- OpenMM integrators
def _langevin(target, timestep=1.0, friction=1.0):
    """LangevinMiddleIntegrator: timestep in fs, friction in 1/ps; one force evaluation per step.

    On the 2-D targets the separable z coordinate is sampled too (z ~ N(0, 1) nm in
    reduced units); the logged energy includes its 0.5·z² term.
    """
    if not (np.isfinite(timestep) and timestep > 0 and np.isfinite(friction) and friction >= 0):
        raise ValueError(f"langevin needs timestep > 0 (fs) and friction >= 0 (1/ps), got "
                         f"timestep={timestep}, friction={friction}")
    integrator = openmm.LangevinMiddleIntegrator(target.temperature, friction / unit.picosecond,
                                                 timestep * unit.femtosecond)
    return integrator, 1, dict


def _digs_cartesian(target, **options):
    """DiffusiveGibbsIntegrator with the options of :class:`DiffusiveGibbsIntegrator`."""
    options.setdefault("alphas", [0.9])
    options.setdefault("planar", target.spatial_dim == 2)  # 2-D targets: z never moves
    integrator = DiffusiveGibbsIntegrator(target.temperature, **options)

    def statistics():  # the names of the torch DiGS sampler's statistics
        rates = integrator.acceptance_rates
        return {"init_acceptance": rates["initialisation"],
                "denoise_acceptance": rates["denoising"]}
    return integrator, integrator.force_evaluations_per_step, statistics


#: name -> factory(target, **options) -> (integrator, evals_per_step, statistics callable).
INTEGRATOR_METHODS = {"langevin": _langevin, "digs-cartesian": _digs_cartesian}


def make_integrator(method, target, **options):
    """Build the OpenMM integrator of ``method`` for ``target``.

    Returns
    -------
    integrator : openmm.Integrator
    force_evaluations_per_step : int
    statistics : callable
        Returns a dict of acceptance statistics (numpy arrays).
    """
    if method not in INTEGRATOR_METHODS:
        raise ValueError(f"unknown integrator method {method!r}; choose from "
                         f"{', '.join(INTEGRATOR_METHODS)}")
    return INTEGRATOR_METHODS[method](target, **options)


# ---------------------------------------------------------------------- torch samplers
def _torsional_kernel(target, sigmas):
    """TorsionalKernel on every backbone φ and ψ of the target, σ (radians) per level."""
    torsions = np.concatenate([target.torsions["phi"], target.torsions["psi"]])
    if not len(torsions):
        raise ValueError(f"{target.name}: the torsional DiGS kernel needs backbone phi/psi "
                         "torsions, and the topology has none; pass alphas=[...] for a "
                         "Gaussian kernel")
    return TorsionalKernel.from_topology(target.topology, torsions, sigmas)


def _particle_blocks(target, alpha):
    """BlockGaussianKernel noising one particle per level at scale ``alpha``."""
    return BlockGaussianKernel(alpha, [[k] for k in range(target.n_particles)])


#: Kernels that a system's defaults (or the caller) can name with
#: ``kernel={"name": <name>, **parameters}``.
KERNEL_BUILDERS = {"torsional": _torsional_kernel, "particle_blocks": _particle_blocks}


def _torch_digs(target, energy, seed, **options):
    """DiGS in torch; ``kernel`` may be a spec ``{"name": ..., **parameters}`` of
    :data:`KERNEL_BUILDERS`; without kernel and alphas, Gaussian levels α ∈ {0.5, 0.9}."""
    kernel = options.get("kernel")
    if isinstance(kernel, dict):
        spec = dict(kernel)
        name = spec.pop("name", None)
        if name not in KERNEL_BUILDERS:
            raise ValueError(f"unknown DiGS kernel {name!r}; choose from "
                             f"{', '.join(KERNEL_BUILDERS)}")
        options["kernel"] = KERNEL_BUILDERS[name](target, **spec)
    elif kernel is None and options.get("alphas") is None:
        options["alphas"] = [0.5, 0.9]
    return DiGSSampler(energy, seed=seed, **options)


def _torch_mala(target, energy, seed, **options):
    return MALA(energy, seed=seed, **options)


def _torch_hmc(target, energy, seed, step_size, **options):
    """HMC whose ``step_size`` is given as MALA's h (nm²): ε = sqrt(2h) nm."""
    return HMC(energy, step_size=math.sqrt(2 * step_size), seed=seed, **options)


#: name -> factory(target, energy, seed, **options) -> :class:`Sampler`.
TORCH_METHODS = {"digs": _torch_digs, "mala": _torch_mala, "hmc": _torch_hmc}

#: All method names accepted by :func:`run_sampler` (``pt``: parallel tempering).
METHODS = sorted(set(INTEGRATOR_METHODS) | set(TORCH_METHODS) | {"pt", "digs-torsional"})
#: Methods that sample constrained Systems (the others refuse them).
CONSTRAINT_METHODS = ("digs-torsional", "langevin", "pt")


def make_torch_sampler(method, target, energy, seed=0, **options):
    """The torch :class:`~openmm_dikl.samplers.Sampler` of ``method`` with merged defaults.

    ``options`` override the system's and the generic defaults
    (:func:`method_options`); ``chains`` is a run option and is dropped here.
    """
    if method not in TORCH_METHODS:
        raise ValueError(f"unknown torch method {method!r}; choose from "
                         f"{', '.join(TORCH_METHODS)}")
    options = method_options(target, method, options)
    options.pop("chains", None)
    return TORCH_METHODS[method](target, energy, int(seed), **options)


# ---------------------------------------------------------------------- runner
def run_sampler(target, method="langevin", force_evals=100000, out="samples.dcd", seed=0,
                n_frames=1000, platform=None, positions=None, progress=True, workers=None,
                **options):
    """Sample ``target`` and write DCD + PDB + CSV.

    Parameters
    ----------
    target : TargetSystem
        The system (constraints and virtual sites are refused).
    method : str
        One of :data:`METHODS`.
    force_evals : int
        Budget of force evaluations (all chains); the run takes as many steps (or
        sweeps) as fit.
    out : str
        Trajectory path ending in ``.dcd``; ``<stem>.pdb`` (topology, first frame) and
        ``<stem>.csv`` (log: energies in kJ/mol and kT, one column per statistic) are
        written beside it.
    seed : int
        Random seed.
    n_frames : int
        Total number of frames to write (see the module docstring for the rule).
    platform : str, optional
        OpenMM platform name (default: the target's).
    positions : openmm.unit.Quantity or array, optional
        Starting positions (nm), shape (n_particles, 3); torch methods also take one
        start per chain, shape (chains, n_particles, spatial_dim); default the target's.
    progress : bool
        Show a progress bar counting force evaluations.
    workers : int, optional
        Run the ``chains`` chains as independent runs in ``workers`` processes (see
        :func:`openmm_dikl.samplers.chains.run_chains_in_workers`).  None: torch
        methods run the chains as one batch in this process.
    **options
        Passed to the method's integrator or sampler factory; they override the system's
        defaults.  Run options: ``chains`` (torch methods: chains in one batch) and
        ``burn_in`` (steps before the first frame; torch methods adapt their step sizes
        then; default 10 % of the steps, at most 1,000, for torch methods and 0 otherwise).

    Returns
    -------
    ChainResult
        With ``paths`` and ``n_frames`` set (samples are in the files, not in memory).

    Raises
    ------
    ValueError
        On a bad budget, output path or method.
    SamplingError
        If the energy becomes NaN/inf (the message names the step; the frames written
        before it stay readable).
    """
    if not str(out).endswith(".dcd"):
        raise ValueError(f"output trajectory must end in .dcd, got {out!r}")
    if int(force_evals) < 1 or int(n_frames) < 1:
        raise ValueError("force_evals and n_frames must be positive")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    check_writable(out)
    defaults_of = method   # whose system defaults apply ("digs" keeps its own when routed)
    if method == "digs" and target.sampler_options("digs").get("engine") == "openmm":
        method = "digs-torsional"
    check_samplable(target.system, f"method {method!r} (constrained Systems are sampled by "
                                   f"{', '.join(CONSTRAINT_METHODS)})",
                    allow_constraints=method in CONSTRAINT_METHODS)
    if platform is not None:
        platform = platform_name(platform)
    if workers is not None:
        return run_chains_in_workers(run_sampler, target, method, int(force_evals), out,
                                     int(seed), int(n_frames), platform, positions, progress,
                                     workers, method_options(target, defaults_of, options))
    if method not in TORCH_METHODS and int(options.pop("chains", 1)) != 1:
        raise ValueError(f"chains > 1 in one process need a torch method "
                         f"({', '.join(TORCH_METHODS)}); give {method!r} workers=N too")
    start = target.positions if positions is None else _start_positions(target, positions)
    if isinstance(start, np.ndarray) and method not in TORCH_METHODS:
        raise ValueError(f"one starting configuration per chain needs a torch method "
                         f"({', '.join(TORCH_METHODS)}), not {method!r}")
    runner = (_run_integrator if method in INTEGRATOR_METHODS else
              _run_tempering if method == "pt" else
              _run_torsional if method == "digs-torsional" else _run_torch)
    return runner(target, method, int(force_evals), out, int(seed), int(n_frames),
                  platform or target.platform, start, progress,
                  method_options(target, defaults_of, options))


def _start_positions(target, positions):
    """One start (Quantity (n, 3), nm) or one per chain (array (chains, n, 3), nm), validated."""
    if not unit.is_quantity(positions) and np.ndim(positions) == 3:
        return np.stack([target.as_start_positions(p, f"positions[{k}]").value_in_unit(
            unit.nanometer) for k, p in enumerate(positions)])
    return target.as_start_positions(positions)


def frame_schedule(force_evals, per_step, n_frames, n_chains, what, burn_in=0):
    """Steps that fit the budget, burn-in, steps between reports and the number of reports.

    Reports are evenly spaced over the steps after burn-in: report i (0-based) comes after
    step ``burn_in + (i + 1) * interval``; the remaining steps of the budget run after
    the last report.

    Parameters
    ----------
    force_evals : float
        Budget left for the steps (all chains).
    per_step : float
        Evaluations per step, all chains.
    n_frames : int
        Frames asked for in total (one per chain and report).
    n_chains : int
    what : str
        Name of one step, for messages.
    burn_in : int or None
        Steps before the first report (not written); None: 10 % of the steps, at most
        1,000 (the torch samplers adapt their step sizes then).

    Returns
    -------
    n_steps, burn_in, interval, n_reports : int
    """
    n_steps = int(force_evals // per_step)
    if n_steps < 1:
        raise ValueError(f"a budget of {force_evals:g} force evaluations is less than one "
                         f"{what} ({per_step:g} evaluations)")
    burn_in = min(1000, n_steps // 10) if burn_in is None else int(burn_in)
    if not 0 <= burn_in < n_steps:
        raise ValueError(f"burn_in must be in [0, {n_steps}) steps for this budget, got "
                         f"{burn_in}")
    n_reports = -(-n_frames // n_chains)  # the last report may write fewer chains
    if n_reports > n_steps - burn_in:
        n_reports = n_steps - burn_in
        logger.warning("writing %d frames, not the %d asked for: the budget allows only %d "
                       "%s(s) after %d of burn-in, and a report writes one frame per chain "
                       "(%d chain(s))", n_reports * n_chains, n_frames, n_reports, what,
                       burn_in, n_chains)
    return n_steps, burn_in, (n_steps - burn_in) // n_reports, n_reports


def _run_integrator(target, method, force_evals, out, seed, n_frames, platform, start,
                    progress, options):
    burn_in = options.pop("burn_in", 0)
    integrator, per_step, statistics = make_integrator(method, target, **options)
    n_steps, burn_in, interval, n_reports = frame_schedule(
        force_evals, per_step, n_frames, 1, f"step of {method}", burn_in=burn_in)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(target.system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(start)
    context.setVelocitiesToTemperature(target.temperature, seed + 1)
    writer = TrajectoryWriter(target, out, interval, method)
    try:
        writer.write_topology(context.getState(getPositions=True).getPositions())
        with tqdm(total=n_steps * per_step, desc=f"{method} on {target.name}", unit="evals",
                  disable=not progress) as bar:
            if burn_in:
                integrator.step(burn_in)
                bar.update(burn_in * per_step)
            for report in range(n_reports):
                integrator.step(interval)
                bar.update(interval * per_step)
                state = context.getState(getPositions=True, getEnergy=True)
                energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                step = burn_in + interval * (report + 1)
                writer.write(step, step * per_step,
                             state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                             energy / writer.kt, statistics())
            rest = n_steps - burn_in - interval * n_reports  # after the last frame
            if rest:
                integrator.step(rest)
                bar.update(rest * per_step)
    finally:
        writer.close()
    return ChainResult(n_steps=n_steps, force_evaluations=n_steps * per_step,
                       acceptance=statistics(), paths=writer.paths, n_frames=writer.frames)


def _run_torsional(target, method, force_evals, out, seed, n_frames, platform, start,
                   progress, options):
    """Torsional DiGS sweeps on OpenMM; the budget counts the engine's evaluations."""
    options = {k: v for k, v in options.items() if k not in ("engine", "chains", "step_size")}
    burn_in = options.pop("burn_in", 0)
    torsions = select_torsions(target.topology, options.pop("torsions", "backbone"))
    levels = torsion_levels(torsions, options.pop("grouping", "single"))
    engine = TorsionalDiGSEngine(target.system, torsions, levels,
                                 options.pop("sigmas", math.pi), target.temperature,
                                 platform=platform, seed=seed, **options)
    # the schedule assumes every pivot is rejected (the most evaluations a sweep can cost)
    per_sweep = engine.n_levels * (2 + engine.n_denoise_steps)
    n_steps, burn_in, interval, n_reports = frame_schedule(
        force_evals, per_sweep, n_frames, 1, "torsional DiGS sweep", burn_in=burn_in)
    engine.set_positions(start)
    writer = TrajectoryWriter(target, out, interval, method)

    def statistics():
        rates = acceptance_rates(engine.statistics)
        return {"init_acceptance": rates["initialisation"],
                "denoise_acceptance": rates["denoising"]}
    try:
        writer.write_topology(engine.get_state(getPositions=True).getPositions())
        with tqdm(total=force_evals, desc=f"{method} on {target.name}", unit="evals",
                  disable=not progress) as bar:
            engine.sweep(burn_in)
            for report in range(n_reports):
                engine.sweep(interval)
                state = engine.get_state(getPositions=True, getEnergy=True)
                bar.update(engine.force_evaluations - bar.n)
                energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                writer.write(burn_in + interval * (report + 1), engine.force_evaluations,
                             state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                             energy / writer.kt, statistics())
            engine.sweep(n_steps - burn_in - interval * n_reports)
            bar.update(engine.force_evaluations - bar.n)
    finally:
        writer.close()
    message = low_acceptance_message(engine.statistics, torsions, levels)
    if message:
        logger.warning(message)
    return ChainResult(n_steps=n_steps, force_evaluations=engine.force_evaluations,
                       acceptance=statistics(), paths=writer.paths, n_frames=writer.frames)


def _run_tempering(target, method, force_evals, out, seed, n_frames, platform, start, progress,
                   options):
    """Parallel tempering; frames and energies are those of the lowest temperature."""
    t0 = target.temperature.value_in_unit(unit.kelvin)
    burn_in = options.pop("burn_in", 0)
    ladder = geometric_temperatures(t0, options.pop("t_max", 3 * t0), options.pop("n_replicas"))
    sampler = ParallelTempering(target.system, start, ladder, platform=platform, seed=seed,
                                **options)
    per_step = sampler.force_evaluations_per_iteration
    n_steps, burn_in, interval, n_reports = frame_schedule(
        force_evals, per_step, n_frames, 1, "iteration of pt", burn_in=burn_in)
    writer = TrajectoryWriter(target, out, interval, method)
    try:
        writer.write_topology(start)
        with tqdm(total=n_steps * per_step, desc=f"pt on {target.name}", unit="evals",
                  disable=not progress) as bar:
            for step in range(1, n_steps + 1):
                x, energy = sampler.step()
                bar.update(per_step)
                after = step - burn_in
                if after > 0 and after % interval == 0 and after // interval <= n_reports:
                    writer.write(step, step * per_step, x, energy / writer.kt,
                                 {"exchange_acceptance": sampler.acceptance_rates})
    finally:
        writer.close()
    return ChainResult(n_steps=n_steps, force_evaluations=n_steps * per_step,
                       acceptance={"exchange_acceptance": sampler.acceptance_rates},
                       paths=writer.paths, n_frames=writer.frames)


def _chain_starts(target, start, n_chains):
    x0 = torch.as_tensor(np.asarray(start.value_in_unit(unit.nanometer) if unit.is_quantity(start)
                                    else start, dtype=np.float64))
    x0 = (x0[None] if x0.dim() == 2 else x0)[..., :target.spatial_dim]
    if x0.shape[0] == 1:
        return x0.repeat(n_chains, 1, 1)
    if x0.shape[0] != n_chains:
        raise ValueError(f"positions hold {x0.shape[0]} starting configurations for "
                         f"{n_chains} chains; give one, or one per chain")
    return x0


def _run_torch(target, method, force_evals, out, seed, n_frames, platform, start, progress,
               options):
    """Torch samplers; ``chains`` (option) independent chains run as one batch.

    Every report writes one frame per chain, in chain order, and the budget counts the
    evaluations of all chains (one per chain goes to the starting point).
    """
    n_chains = int(options.pop("chains", 1))
    if n_chains < 1:
        raise ValueError(f"chains must be >= 1, got {n_chains}")
    x0 = _chain_starts(target, start, n_chains)
    burn_in = options.pop("burn_in", None)
    with EnergyAndForce(target, platform=platform) as energy:
        sampler = TORCH_METHODS[method](target, energy, seed, **options)
        per_step = sampler.force_evaluations_per_step * n_chains
        n_steps, burn_in, interval, n_reports = frame_schedule(
            force_evals - n_chains, per_step, n_frames, n_chains,
            f"step of {method} (all chains)", burn_in=burn_in)
        writer = TrajectoryWriter(target, out, interval, method)
        try:
            writer.write_topology(target.to_openmm_positions(x0[0].numpy()))

            def report(step, x, u, stats):
                step += 1
                writer.check_finite(step, u)  # a blow-up is reported at its step
                after = step - burn_in  # frames come from the chains after burn-in only
                if after > 0 and after % interval == 0 and after // interval <= n_reports:
                    evaluations = n_chains + round(step * per_step)
                    for k in range(min(n_chains, n_frames - writer.frames)):
                        writer.write(step, evaluations, x[k].detach().numpy(), float(u[k]),
                                     stats, chain=k)
            result = sampler.run(x0, n_steps, burn_in=burn_in, progress=progress,
                                 keep_samples=False, callback=report)
        finally:
            writer.close()
    result.paths, result.n_frames = writer.paths, writer.frames
    return result

"""Run a sampler on a target and write a trajectory, a topology PDB and a CSV log.

This is the engine behind ``openmm-dikl sample``.  Runs are budgeted in force
evaluations so that methods with different per-step costs are compared fairly.  Two
kinds of method exist:

* OpenMM integrators (:data:`INTEGRATOR_METHODS`): ``langevin`` (LangevinMiddleIntegrator,
  1 fs, 1/ps) and ``digs-cartesian`` (:class:`~openmm_dikl.integrators.DiffusiveGibbsIntegrator`,
  isotropic Gaussian kernel).
* torch samplers on the target's energy — torch twin or OpenMM through the bridge —
  (:data:`TORCH_METHODS`): ``digs`` (for molecules, DiGS with a torsional kernel on the
  backbone φ/ψ; for particle systems, the Gaussian kernel), ``mala`` and ``hmc``.
* ``pt``: parallel tempering (:class:`~openmm_dikl.tempering.ParallelTempering`).
"""
import concurrent.futures
import csv
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import tempfile

import numpy as np
import openmm
import torch
from openmm import app, unit
from tqdm.auto import tqdm

from .systems.user import check_samplable

__all__ = ["INTEGRATOR_METHODS", "TORCH_METHODS", "METHODS", "DIGS_DEFAULTS", "SamplingError",
           "SamplingResult", "run_sampler", "make_integrator", "chain_seed"]

logger = logging.getLogger(__name__)


class SamplingError(RuntimeError):
    """A sampler met a non-finite energy (a blow-up)."""


class SamplingResult:
    """Summary of a finished run.

    Attributes
    ----------
    n_steps : int
        Steps (integrator steps or sweeps) taken.
    force_evaluations : int
        Force (energy + gradient) evaluations used.
    n_frames : int
        Frames written.
    paths : dict
        ``{"trajectory", "topology", "log"}`` output paths.
    acceptance : dict
        Final acceptance statistics of the method (may be empty).
    """

    def __init__(self, n_steps, force_evaluations, n_frames, paths, acceptance):
        self.n_steps = n_steps
        self.force_evaluations = force_evaluations
        self.n_frames = n_frames
        self.paths = paths
        self.acceptance = acceptance

    def __repr__(self):
        return (f"SamplingResult(n_steps={self.n_steps}, force_evaluations={self.force_evaluations}, "
                f"n_frames={self.n_frames})")


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
    return integrator, 1, lambda: {}


def _digs_cartesian(target, **options):
    """DiffusiveGibbsIntegrator with the options of :class:`~openmm_dikl.integrators.DiffusiveGibbsIntegrator`."""
    from .integrators import DiffusiveGibbsIntegrator
    options.setdefault("alphas", [0.9])
    options.setdefault("planar", target.spatial_dim == 2)  # 2-D targets: z never moves
    integrator = DiffusiveGibbsIntegrator(target.temperature, **options)
    return integrator, integrator.force_evaluations_per_step, integrator.acceptance_rates


#: name -> factory(target, **options) -> (integrator, evals_per_step, statistics callable).
INTEGRATOR_METHODS = {"langevin": _langevin, "digs-cartesian": _digs_cartesian}


def make_integrator(method, target, **options):
    """Build the OpenMM integrator of ``method`` for ``target``.

    Returns
    -------
    integrator : openmm.Integrator
    force_evaluations_per_step : int
    statistics : callable
        Returns a dict of acceptance statistics.
    """
    if method not in INTEGRATOR_METHODS:
        raise ValueError(f"unknown integrator method {method!r}; choose from "
                         f"{', '.join(INTEGRATOR_METHODS)}")
    return INTEGRATOR_METHODS[method](target, **options)


# ---------------------------------------------------------------------- torch samplers
def _is_dipeptide(target):
    if target.spatial_dim != 3:
        return False
    try:
        import mdtraj
        top = mdtraj.Topology.from_openmm(target.topology)
        return len(mdtraj.compute_phi(mdtraj.Trajectory(np.zeros((1, top.n_atoms, 3)), top))[0]) > 0
    except Exception:  # not a molecule mdtraj understands
        return False


def _torch_digs(target, energy, seed, step_size=None, **options):
    """DiGS in torch: torsional kernel on φ/ψ for peptides, Gaussian kernel otherwise.

    Molecular default (``benchmarks/digs_torch.py``): σ = π on φ and ψ (a nearly uniform
    wrapped normal) with 1 MALA step of 1e-6 nm² per sweep in Cartesian space.  Particle
    systems: :data:`DIGS_DEFAULTS`.
    """
    from .digs import DiGSSampler, TorsionalKernel
    if _is_dipeptide(target):
        import mdtraj
        top = mdtraj.Topology.from_openmm(target.topology)
        xyz = np.zeros((1, top.n_atoms, 3))
        quads = np.concatenate([mdtraj.compute_phi(mdtraj.Trajectory(xyz, top))[0],
                                mdtraj.compute_psi(mdtraj.Trajectory(xyz, top))[0]])
        kernel = TorsionalKernel.from_topology(target.topology, quads,
                                               options.pop("sigmas", [math.pi]))
        options.setdefault("n_denoise_steps", 1)
        return DiGSSampler(energy, kernel=kernel, step_size=step_size or 1e-6, seed=seed,
                           **options)
    for key, value in DIGS_DEFAULTS.get(target.name, {"alphas": [0.5, 0.9]}).items():
        options.setdefault(key, value)
    if options.pop("blocks", None) == "particles":  # one particle per level (BlockGaussianKernel)
        from .digs import BlockGaussianKernel
        (alpha,) = options.pop("alphas")
        options["kernel"] = BlockGaussianKernel(alpha, [[k] for k in range(target.n_particles)])
    step_size = step_size or options.pop("step_size", None) or 1e-2
    return DiGSSampler(energy, step_size=step_size, seed=seed, **options)


#: Per-system defaults of torch DiGS on particle systems (``benchmarks/digs_*.py``, tests):
#: MoG-40 one level α = 0.1 (the paper's setting); MW-32, 16 independent double wells, a
#: blocked kernel noising one particle per level at α = 0.5 (a full 32-D Gaussian
#: initialisation is never accepted).  Others: α ∈ {0.5, 0.9}.
DIGS_DEFAULTS = {"mog40": {"alphas": [0.1]},
                 "mw32": {"alphas": [0.5], "blocks": "particles", "step_size": 0.05,
                          "n_denoise_steps": 1}}


def _torch_mala(target, energy, seed, step_size=None, **options):
    from .torch_mcmc import MALA
    return MALA(energy, step_size=step_size or (1e-6 if target.spatial_dim == 3 and
                                                 target.n_particles > 20 else 1e-2),
                generator=torch.Generator().manual_seed(seed), **options)


def _torch_hmc(target, energy, seed, step_size=None, n_leapfrog=10, **options):
    from .torch_mcmc import HMC
    h = step_size or (1e-6 if target.spatial_dim == 3 and target.n_particles > 20 else 1e-2)
    return HMC(energy, step_size=math.sqrt(2 * h), n_leapfrog=n_leapfrog,
               generator=torch.Generator().manual_seed(seed), **options)


#: name -> factory(target, energy, seed, **options) -> sampler with ``run(x0, n, callback=)``.
TORCH_METHODS = {"digs": _torch_digs, "mala": _torch_mala, "hmc": _torch_hmc}

#: All method names accepted by :func:`run_sampler` (``pt``: parallel tempering).
METHODS = sorted(set(INTEGRATOR_METHODS) | set(TORCH_METHODS) | {"pt"})


def _evals_per_step(method, sampler):
    if method == "digs":
        levels = sampler.kernel.n_levels
        per_level = [1 + k * (sampler.n_leapfrog if sampler.denoiser == "hmc" else 1)
                     for k in sampler.n_denoise_steps]
        return sum(per_level) / levels
    return getattr(sampler, "n_leapfrog", 1)


# ---------------------------------------------------------------------- output
def _check_writable(path):
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"output folder {folder} is not writable")


class _Writer:
    """DCD frames + PDB topology + CSV log, flushed after every frame."""

    def __init__(self, target, out, interval, method):
        stem = os.path.splitext(out)[0]
        self.paths = {"trajectory": out, "topology": stem + ".pdb", "log": stem + ".csv"}
        self.target, self.method, self.frames = target, method, 0
        self.kt = target.kT.value_in_unit(unit.kilojoule_per_mole)
        self._dcd_handle = open(out, "wb")
        self._dcd = app.DCDFile(self._dcd_handle, target.topology, 0.001 * unit.picosecond,
                                interval=interval)
        self._log_handle = open(self.paths["log"], "w", newline="")
        self._log = csv.writer(self._log_handle)
        self._log.writerow(["step", "chain", "force_evaluations", "potential_energy_kJ_per_mol",
                            "reduced_energy_kT", "acceptance"])

    def write_topology(self, positions):
        with open(self.paths["topology"], "w") as handle:
            app.PDBFile.writeFile(self.target.topology, positions, handle)

    def write(self, step, evaluations, positions_nm, reduced_energy, stats, chain=0):
        if not np.isfinite(reduced_energy):
            raise SamplingError(
                f"{self.method} on {self.target.name}: energy became {reduced_energy} at step "
                f"{step}; the {self.frames} frames before it are in {self.paths['trajectory']}")
        xyz = np.asarray(positions_nm, dtype=np.float64)
        if xyz.shape[-1] == 2:
            xyz = np.concatenate([xyz, np.zeros(xyz.shape[:-1] + (1,))], axis=-1)
        self._dcd.writeModel(xyz * unit.nanometer)
        self._dcd_handle.flush()
        self.frames += 1
        self._log.writerow([step, chain, int(evaluations), f"{reduced_energy * self.kt:.6f}",
                            f"{reduced_energy:.6f}", _format_stats(stats)])
        self._log_handle.flush()

    def close(self):
        self._dcd_handle.close()
        self._log_handle.close()


def _format_stats(stats):
    if not stats:
        return ""
    return ";".join(f"{key}={value}" for key, value in _flatten(stats))


def _flatten(stats, prefix=""):
    for key, value in stats.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, torch.Tensor) or np.ndim(value):
            yield f"{prefix}{key}", "|".join(f"{float(v):.4f}" for v in np.ravel(np.asarray(value)))
        else:
            yield f"{prefix}{key}", f"{float(value):.4f}"


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
        Budget of force evaluations; the run takes as many steps (or sweeps) as fit.
    out : str
        Trajectory path ending in ``.dcd``; ``<stem>.pdb`` (topology, first frame) and
        ``<stem>.csv`` (log: energies in kJ/mol and kT, acceptance) are written beside it.
    seed : int
        Random seed.
    n_frames : int
        Number of frames to write (evenly spaced over the run).
    platform : str, optional
        OpenMM platform name (default: the target's).
    positions : openmm.unit.Quantity or array, optional
        Starting positions (nm), shape (n_particles, 3); torch methods also take one
        start per chain, shape (chains, n_particles, spatial_dim); default the target's.
    workers : int, optional
        Run the ``chains`` (option, default 1) chains as independent runs in ``workers``
        processes (any method; each process has its own OpenMM Context or torch
        sampler).  Chain k is exactly ``run_sampler(target, method, force_evals // chains,
        seed=chain_seed(seed, k), n_frames=n_frames, positions=<its start>, ...)``; the
        outputs are merged as the batched ``chains`` output is (frame ``i * chains + k``
        is chain k at report i; CSV ``force_evaluations`` counts all chains).  None: the
        torch methods run the chains as one batch in this process.
    **options
        Passed to the method's integrator or sampler factory (and ``chains``).

    Returns
    -------
    SamplingResult

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
    _check_writable(out)
    check_samplable(target.system, f"method {method!r}")
    if platform is not None:
        from .bridge import _platform_name
        platform = _platform_name(platform)
    if workers is not None:
        return _run_chains_in_workers(target, method, int(force_evals), out, int(seed),
                                      int(n_frames), platform, positions, progress, workers,
                                      options)
    start = target.positions if positions is None else _start_positions(target, positions)
    if isinstance(start, np.ndarray) and method not in TORCH_METHODS:
        raise ValueError(f"one starting configuration per chain needs a torch method "
                         f"({', '.join(TORCH_METHODS)}), not {method!r}")
    runner = (_run_integrator if method in INTEGRATOR_METHODS else
              _run_tempering if method == "pt" else _run_torch)
    return runner(target, method, int(force_evals), out, int(seed), int(n_frames),
                  platform or target.platform, start, progress, options)


def _start_positions(target, positions):
    """One start (Quantity (n, 3), nm) or one per chain (array (chains, n, 3), nm), validated."""
    if not unit.is_quantity(positions) and np.ndim(positions) == 3:
        return np.stack([target.as_start_positions(p, f"positions[{k}]").value_in_unit(unit.nanometer)
                         for k, p in enumerate(positions)])
    return target.as_start_positions(positions)


def _schedule(force_evals, per_step, n_frames, what):
    """Steps that fit a budget of force evaluations, and the steps between frames."""
    n_steps = int(force_evals // per_step)
    if n_steps < 1:
        raise ValueError(f"a budget of {force_evals} force evaluations is less than one "
                         f"{what} ({per_step:g} evaluations)")
    return n_steps, max(1, n_steps // n_frames)


def _run_integrator(target, method, force_evals, out, seed, n_frames, platform, start,
                    progress, options):
    integrator, per_step, statistics = make_integrator(method, target, **options)
    n_steps, interval = _schedule(force_evals, per_step, n_frames, f"step of {method}")
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(target.system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(start)
    context.setVelocitiesToTemperature(target.temperature, seed + 1)
    writer = _Writer(target, out, interval, method)
    kt = writer.kt
    try:
        writer.write_topology(context.getState(getPositions=True).getPositions())
        bar = tqdm(total=n_steps, desc=f"{method} on {target.name}", unit="step", disable=not progress)
        step = 0
        while step < n_steps:
            block = min(interval, n_steps - step)
            integrator.step(block)
            step += block
            bar.update(block)
            state = context.getState(getPositions=True, getEnergy=True)
            energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kt
            writer.write(step, step * per_step, state.getPositions(asNumpy=True).value_in_unit(
                unit.nanometer), energy, statistics())
        bar.close()
    finally:
        writer.close()
    return SamplingResult(n_steps, n_steps * per_step, writer.frames, writer.paths, statistics())


def _run_tempering(target, method, force_evals, out, seed, n_frames, platform, start, progress,
                   options):
    """Parallel tempering; frames and energies are those of the lowest temperature."""
    from .tempering import ParallelTempering, geometric_temperatures
    t0 = target.temperature.value_in_unit(unit.kelvin)
    ladder = geometric_temperatures(t0, options.pop("t_max", 800.0 if target.spatial_dim == 3
                                                   and target.n_particles > 20 else 3 * t0),
                                    options.pop("n_replicas", 8))
    sampler = ParallelTempering(target.system, start, ladder, platform=platform, seed=seed,
                                **options)
    per_step = sampler.force_evaluations_per_iteration
    n_steps, interval = _schedule(force_evals, per_step, n_frames, "iteration of pt")
    writer = _Writer(target, out, interval, method)
    try:
        writer.write_topology(start)
        for step in tqdm(range(1, n_steps + 1), desc=f"pt on {target.name}", disable=not progress):
            x, energy = sampler.step()
            if step % interval == 0:
                writer.write(step, step * per_step, x, energy / writer.kt,
                             {"exchange": sampler.acceptance_rates})
    finally:
        writer.close()
    return SamplingResult(n_steps, n_steps * per_step, writer.frames, writer.paths,
                          {"exchange_acceptance": sampler.acceptance_rates})


def _run_torch(target, method, force_evals, out, seed, n_frames, platform, start, progress,
               options):
    """Torch samplers; ``chains`` (option, default 1) independent chains run as one batch.

    With several chains every report writes one frame per chain, in chain order (frame
    ``i * chains + k`` is chain k at report i; ``traj[k::chains]`` selects a chain), and the
    budget counts the evaluations of all chains.
    """
    from .torch_mcmc import EnergyAndForce
    n_chains = int(options.pop("chains", 1))
    if n_chains < 1:
        raise ValueError(f"chains must be >= 1, got {n_chains}")
    x0 = torch.as_tensor(np.asarray(start.value_in_unit(unit.nanometer) if unit.is_quantity(start)
                                    else start, dtype=np.float64))
    x0 = (x0[None] if x0.dim() == 2 else x0)[..., :target.spatial_dim]
    if x0.shape[0] == 1:
        x0 = x0.repeat(n_chains, 1, 1)
    elif x0.shape[0] != n_chains:
        raise ValueError(f"positions hold {x0.shape[0]} starting configurations for "
                         f"{n_chains} chains; give one, or one per chain")
    with EnergyAndForce(target, platform=platform) as energy:
        sampler = TORCH_METHODS[method](target, energy, seed, **options)
        per_step = _evals_per_step(method, sampler) * n_chains
        # one evaluation per chain goes to the starting point
        n_steps, interval = _schedule(force_evals - n_chains, per_step, n_frames,
                                      f"step of {method} on {n_chains} chain(s)")
        writer = _Writer(target, out, interval, method)
        try:
            writer.write_topology(target.to_openmm_positions(x0[0].numpy()))

            n_levels = getattr(getattr(sampler, "kernel", None), "n_levels", 1)
            accepted, tried = np.zeros(n_levels), np.zeros(n_levels)

            def callback(step, x, info):
                # MCMC samplers pass the energies, DiGS a dict with the level
                step += 1
                if isinstance(info, dict):  # running initialisation acceptance per level
                    accepted[info["level"]] += float(info["init_accepted"].double().mean())
                    tried[info["level"]] += 1
                if step % interval == 0 or step == n_steps:
                    u = info if isinstance(info, torch.Tensor) else energy(x.detach())[0]
                    stats = ({"init_acceptance": accepted / np.maximum(tried, 1)}
                             if isinstance(info, dict) else {})
                    for k in range(n_chains):
                        writer.write(step, round(step * per_step), x[k].detach().numpy(),
                                     float(u[k]), stats, chain=k)
            result = sampler.run(x0, n_steps, burn_in=min(1000, n_steps // 10), progress=progress,
                                 keep_samples=False, callback=callback)
        finally:
            writer.close()
    if hasattr(result, "statistics"):
        stats = dict(result.statistics)
        used = int(stats.pop("force_evaluations"))
    else:
        stats, used = {"acceptance": result.acceptance}, int(result.force_evaluations)
    return SamplingResult(n_steps, used, writer.frames, writer.paths, stats)


# ---------------------------------------------------------------------- chains in processes
def chain_seed(seed, chain):
    """Seed of chain ``chain`` of a multi-process run with ``seed`` (``seed`` for chain 0).

    The other chains get a well-mixed value in [0, 2^31 − 2) so that the chains of runs
    with neighbouring seeds do not coincide.
    """
    if int(chain) < 0:
        raise ValueError(f"chain must be >= 0, got {chain}")
    if chain == 0:
        return int(seed)
    return (int(seed) + 0x9E3779B97F4A7C15 * int(chain)) % (2**31 - 2)


def _target_spec(target):
    """How a worker process rebuilds ``target``: its bundled name, or the pickled object."""
    from . import systems
    if target.name in systems.names():
        return ("bundled", target.name)
    try:
        return ("pickled", pickle.dumps(target))
    except Exception as err:  # pickle raises several types
        raise ValueError(f"target {target.name!r} cannot be sent to worker processes "
                         f"({err}); run it with workers=None") from err


def _chain_worker(spec, method, force_evals, out, seed, n_frames, platform, positions, threads,
                  options):
    """Run one chain in a worker process; returns its SamplingResult fields."""
    torch.set_num_threads(threads)
    if spec[0] == "bundled":
        from . import systems
        target = systems.get(spec[1])
    else:
        target = pickle.loads(spec[1])
    result = run_sampler(target, method=method, force_evals=force_evals, out=out, seed=seed,
                         n_frames=n_frames, platform=platform, positions=positions,
                         progress=False, **options)
    return result.n_steps, result.force_evaluations, result.n_frames, result.acceptance


def _run_chains_in_workers(target, method, force_evals, out, seed, n_frames, platform,
                           positions, progress, workers, options):
    n_chains = int(options.pop("chains", 1))
    if n_chains < 1:
        raise ValueError(f"chains must be >= 1, got {n_chains}")
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    workers = min(int(workers), n_chains)
    if force_evals // n_chains < 1:
        raise ValueError(f"a budget of {force_evals} force evaluations is less than one per "
                         f"chain ({n_chains} chains)")
    starts = [positions] * n_chains
    if positions is not None and not unit.is_quantity(positions) and np.ndim(positions) == 3:
        if len(positions) != n_chains:
            raise ValueError(f"positions hold {len(positions)} starting configurations for "
                             f"{n_chains} chains; give one, or one per chain")
        starts = [np.asarray(p, dtype=np.float64) for p in positions]
    spec = _target_spec(target)
    threads = max(1, (os.cpu_count() or 1) // workers)
    folder = tempfile.mkdtemp(prefix=".chains-", dir=os.path.dirname(os.path.abspath(out)))
    chain_outs = [os.path.join(folder, f"chain{k}.dcd") for k in range(n_chains)]
    try:
        context = multiprocessing.get_context("spawn")  # never fork a process holding a Context
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_chain_worker, spec, method, force_evals // n_chains,
                                   chain_outs[k], chain_seed(seed, k), n_frames, platform,
                                   starts[k], threads, dict(options))
                       for k in range(n_chains)]
            done = tqdm(concurrent.futures.as_completed(futures), total=n_chains,
                        desc=f"{method} on {target.name}: {n_chains} chains in {workers} "
                             f"processes", unit="chain", disable=not progress)
            try:
                for future in done:
                    future.result()  # re-raise the first failure
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            results = [future.result() for future in futures]
        paths = _merge_chains(target, chain_outs, out)
    except SamplingError as err:
        # keep the chain files: the failed chain's frames stay readable where it says
        raise SamplingError(f"{err} (chain files kept in {folder})") from err
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    n_frames_total = sum(r[2] for r in results)
    acceptance = {"chains": [r[3] for r in results]}
    return SamplingResult(results[0][0], sum(r[1] for r in results), n_frames_total, paths,
                          acceptance)


def _merge_chains(target, chain_outs, out):
    """Interleave the chains' DCD frames and CSV rows into ``out`` (and its PDB, CSV)."""
    from mdtraj.formats import DCDTrajectoryFile
    stem = os.path.splitext(out)[0]
    paths = {"trajectory": out, "topology": stem + ".pdb", "log": stem + ".csv"}
    n_chains = len(chain_outs)
    frames, rows = [], []
    for path in chain_outs:
        with DCDTrajectoryFile(path) as handle:
            frames.append(handle.read()[0])  # (n_frames, n_atoms, 3) float32, Å
        with open(os.path.splitext(path)[0] + ".csv", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows.append(list(reader))
    n_reports = len(rows[0])
    if any(len(r) != n_reports or len(f) != n_reports for r, f in zip(rows, frames)):
        raise RuntimeError("the chains wrote different numbers of frames")
    shutil.copyfile(os.path.splitext(chain_outs[0])[0] + ".pdb", paths["topology"])
    interval = max(1, int(rows[0][0][0]))  # steps between reports (first report's step)
    column = {name: i for i, name in enumerate(header)}
    with open(out, "wb") as dcd_handle, open(paths["log"], "w", newline="") as log_handle:
        dcd = app.DCDFile(dcd_handle, target.topology, 0.001 * unit.picosecond,
                          interval=interval)
        log = csv.writer(log_handle)
        log.writerow(header)
        for i in range(n_reports):
            total = sum(int(rows[k][i][column["force_evaluations"]]) for k in range(n_chains))
            for k in range(n_chains):
                # float32 Å -> nm and back by DCDFile is exact
                dcd.writeModel(frames[k][i].astype(np.float64) / 10.0 * unit.nanometer)
                row = list(rows[k][i])
                row[column["chain"]] = str(k)
                row[column["force_evaluations"]] = str(total)
                log.writerow(row)
    return paths

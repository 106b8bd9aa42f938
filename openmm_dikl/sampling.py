"""Run an OpenMM sampler on a target and write a trajectory, a topology PDB and a CSV log.

This is the engine behind ``openmm-dikl sample``.  Every method is an OpenMM integrator
built by a factory in :data:`METHODS`; runs are budgeted in force evaluations so that
methods with different per-step costs are compared fairly.
"""
import csv
import logging
import os

import numpy as np
import openmm
from openmm import app, unit
from tqdm.auto import tqdm

from .systems.user import check_samplable

__all__ = ["METHODS", "SamplingError", "SamplingResult", "run_sampler", "make_integrator"]

logger = logging.getLogger(__name__)


class SamplingError(RuntimeError):
    """A sampler met a non-finite energy (a blow-up)."""


class SamplingResult:
    """Summary of a finished run.

    Attributes
    ----------
    n_steps : int
        Integrator steps taken.
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


def _langevin(target, timestep=1.0, friction=1.0):
    """LangevinMiddleIntegrator: timestep in fs, friction in 1/ps; one force evaluation per step."""
    integrator = openmm.LangevinMiddleIntegrator(target.temperature, friction / unit.picosecond,
                                                 timestep * unit.femtosecond)
    return integrator, 1, lambda: {}


def _digs(target, **options):
    """DiffusiveGibbsIntegrator with the options of :class:`~openmm_dikl.integrators.DiffusiveGibbsIntegrator`."""
    from .integrators import DiffusiveGibbsIntegrator
    integrator = DiffusiveGibbsIntegrator(target.temperature, **options)
    return integrator, integrator.force_evaluations_per_step, integrator.acceptance_rates


#: Registered methods: name -> factory(target, **options) -> (integrator, evals_per_step, stats).
METHODS = {"langevin": _langevin, "digs": _digs}


def make_integrator(method, target, **options):
    """Build the integrator of ``method`` for ``target``.

    Returns
    -------
    integrator : openmm.Integrator
    force_evaluations_per_step : int
    statistics : callable
        Returns a dict of acceptance statistics.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method](target, **options)


def _check_writable(path):
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"output folder {folder} is not writable")


def run_sampler(target, method="langevin", force_evals=100000, out="samples.dcd", seed=0,
                n_frames=1000, platform=None, positions=None, progress=True, **options):
    """Sample ``target`` with an OpenMM integrator and write DCD + PDB + CSV.

    Parameters
    ----------
    target : TargetSystem
        The system (its OpenMM System is run; constraints and virtual sites are refused).
    method : str
        A key of :data:`METHODS`.
    force_evals : int
        Budget of force evaluations; the run takes ``force_evals // evals_per_step`` steps.
    out : str
        Trajectory path ending in ``.dcd``; ``<stem>.pdb`` (topology, first frame, nm
        written as Å by the PDB format) and ``<stem>.csv`` (log) are written beside it.
    seed : int
        Random seed for the integrator (and velocities).
    n_frames : int
        Number of frames to write (evenly spaced over the run).
    platform : str, optional
        OpenMM platform name (default: the target's).
    positions : openmm.unit.Quantity, optional
        Starting positions (nm); default the target's.
    **options
        Passed to the method's integrator factory.

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
    _check_writable(out)
    check_samplable(target.system, f"method {method!r}")
    integrator, per_step, statistics = make_integrator(method, target, **options)
    n_steps = int(force_evals) // per_step
    if n_steps < 1:
        raise ValueError(f"a budget of {force_evals} force evaluations is less than one step "
                         f"of {method} ({per_step} evaluations)")
    interval = max(1, n_steps // int(n_frames))
    integrator.setRandomNumberSeed(int(seed) + 1)
    context = openmm.Context(target.system, integrator,
                             openmm.Platform.getPlatformByName(platform or target.platform))
    context.setPositions(target.positions if positions is None else positions)
    context.setVelocitiesToTemperature(target.temperature, int(seed) + 1)
    stem = os.path.splitext(out)[0]
    paths = {"trajectory": out, "topology": stem + ".pdb", "log": stem + ".csv"}
    kt = target.kT.value_in_unit(unit.kilojoule_per_mole)
    with open(paths["topology"], "w") as handle:
        app.PDBFile.writeFile(target.topology, context.getState(getPositions=True).getPositions(), handle)
    frames = 0
    with open(out, "wb") as dcd_handle, open(paths["log"], "w", newline="") as log_handle:
        dcd = app.DCDFile(dcd_handle, target.topology, 0.001 * unit.picosecond, interval=interval)
        log = csv.writer(log_handle)
        log.writerow(["step", "force_evaluations", "potential_energy_kJ_per_mol",
                      "reduced_energy_kT", "acceptance"])
        bar = tqdm(total=n_steps, desc=f"{method} on {target.name}", unit="step",
                   disable=not progress)
        step = 0
        while step < n_steps:
            block = min(interval, n_steps - step)
            integrator.step(block)
            step += block
            bar.update(block)
            state = context.getState(getPositions=True, getEnergy=True)
            energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            if not np.isfinite(energy):
                bar.close()
                raise SamplingError(
                    f"{method} on {target.name}: energy became {energy} at step {step}; "
                    f"{frames} frames before it are in {out}")
            dcd.writeModel(state.getPositions())
            dcd_handle.flush()
            frames += 1
            log.writerow([step, step * per_step, f"{energy:.6f}", f"{energy / kt:.6f}",
                          _format_stats(statistics())])
            log_handle.flush()
        bar.close()
    return SamplingResult(n_steps, n_steps * per_step, frames, paths, statistics())


def _format_stats(stats):
    if not stats:
        return ""
    return ";".join(f"{key}={value}" for key, value in _flatten(stats))


def _flatten(stats, prefix=""):
    for key, value in stats.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        elif np.ndim(value):
            yield f"{prefix}{key}", "|".join(f"{v:.4f}" for v in np.ravel(value))
        else:
            yield f"{prefix}{key}", f"{float(value):.4f}"

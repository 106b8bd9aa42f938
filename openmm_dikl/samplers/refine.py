"""Polish one-shot generator samples with a few exact MCMC or DiGS steps on the true target.

A DiKL generator is fast but approximate.  :func:`refine_samples` runs every generated
configuration as the start of its own chain of an MCMC kernel that leaves the *target*
distribution invariant (MALA, HMC or DiGS, the samplers of ``openmm-dikl sample``), so
the samples move toward the target with each step while keeping the generator's mode
coverage.  This is the "generator + exact correction" combination the DiKL paper names as
future work; ``openmm-dikl generate --refine STEPS`` runs it.

Step sizes adapt per chain during the first half of the steps (toward the usual optimal
acceptance) and stay fixed afterwards, so the second half is a time-homogeneous,
target-invariant kernel.
"""
import numpy as np
import torch

from ..energy import EnergyAndForce
from ..units import check_positions
from .runner import make_torch_sampler

__all__ = ["refine_samples", "REFINE_METHODS"]

#: Kernels available for refinement (see :data:`openmm_dikl.samplers.runner.TORCH_METHODS`).
REFINE_METHODS = ("mala", "hmc", "digs")


def refine_samples(target, x, n_steps, method="mala", seed=0, platform=None, progress=False,
                   **options):
    """Run ``n_steps`` of an exact MCMC kernel on the target from each sample.

    Parameters
    ----------
    target : TargetSystem
        The true target; its torch twin is used when it has one, the OpenMM System
        through :class:`~openmm_dikl.bridge.OpenMMBridge` otherwise.
    x : torch.Tensor or numpy.ndarray, shape=(n, n_particles, spatial_dim)
        Starting configurations in nm (for example generator samples).
    n_steps : int
        MCMC steps (DiGS: sweeps) per sample, >= 1.
    method : {"mala", "hmc", "digs"}
        The kernel, with the system's defaults of ``openmm-dikl sample``.
    seed : int
        Random seed.
    platform : str, optional
        OpenMM platform when the bridge is used.
    progress : bool
        Show a progress bar (force evaluations).
    **options
        Passed to the sampler factory (e.g. ``step_size`` in nm², ``n_leapfrog``).

    Returns
    -------
    ChainResult
        ``final_positions`` (n, n_particles, spatial_dim) nm are the refined samples,
        ``final_reduced_energies`` their u (kT), ``initial_reduced_energies`` those of
        the inputs; ``force_evaluations`` counts everything, the inputs' energies
        included.

    Raises
    ------
    ValueError
        On a bad method, step count, shape or non-finite input.
    """
    if method not in REFINE_METHODS:
        raise ValueError(f"unknown refinement method {method!r}; choose from "
                         f"{', '.join(REFINE_METHODS)}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    x0 = torch.as_tensor(check_positions(np.asarray(x, dtype=np.float64), target.n_particles,
                                         target.spatial_dim))
    with EnergyAndForce(target, platform=platform) as energy:
        sampler = make_torch_sampler(method, target, energy, int(seed), **options)
        return sampler.run(x0, int(n_steps), burn_in=int(n_steps) // 2, progress=progress,
                           keep_samples=False)

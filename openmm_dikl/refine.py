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

__all__ = ["RefinementResult", "refine_samples", "REFINE_METHODS"]

#: Kernels available for refinement (see :data:`openmm_dikl.sampling.TORCH_METHODS`).
REFINE_METHODS = ("mala", "hmc", "digs")


class RefinementResult:
    """Outcome of :func:`refine_samples`.

    Attributes
    ----------
    samples : torch.Tensor, shape=(n, n_particles, spatial_dim)
        Refined configurations (nm), float64.
    reduced_energies : torch.Tensor, shape=(n,)
        Reduced energies u = E/kT of the refined configurations (dimensionless).
    initial_reduced_energies : torch.Tensor, shape=(n,)
        Reduced energies of the generator samples (dimensionless; inf where the
        generator produced a configuration of non-finite energy).
    force_evaluations : int
        Energy + force evaluations used in total (all chains).
    acceptance : float
        Mean acceptance probability over chains after adaptation (MALA/HMC) or the
        sampler's statistics (DiGS).
    """

    def __init__(self, samples, reduced_energies, initial_reduced_energies, force_evaluations,
                 acceptance):
        self.samples = samples
        self.reduced_energies = reduced_energies
        self.initial_reduced_energies = initial_reduced_energies
        self.force_evaluations = force_evaluations
        self.acceptance = acceptance

    def __repr__(self):
        return (f"RefinementResult(n={self.samples.shape[0]}, "
                f"force_evaluations={self.force_evaluations}, acceptance={self.acceptance:.3f})")


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
        The kernel, with the defaults of ``openmm-dikl sample``.
    seed : int
        Random seed.
    platform : str, optional
        OpenMM platform when the bridge is used.
    progress : bool
        Show a progress bar.
    **options
        Passed to the sampler factory (e.g. ``step_size`` in nm², ``n_leapfrog``).

    Returns
    -------
    RefinementResult

    Raises
    ------
    ValueError
        On a bad method, step count, shape or non-finite input.
    """
    from .sampling import TORCH_METHODS
    from .torch_mcmc import EnergyAndForce
    from .units import check_positions
    if method not in REFINE_METHODS:
        raise ValueError(f"unknown refinement method {method!r}; choose from "
                         f"{', '.join(REFINE_METHODS)}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    x0 = torch.as_tensor(check_positions(np.asarray(x, dtype=np.float64), target.n_particles,
                                         target.spatial_dim))
    with EnergyAndForce(target, platform=platform) as energy:
        u0 = energy(x0)[0]
        sampler = TORCH_METHODS[method](target, energy, int(seed), **options)
        burn_in = int(n_steps) // 2
        result = sampler.run(x0, int(n_steps), burn_in=burn_in, progress=progress,
                             keep_samples=False)
        used = x0.shape[0]  # the energies of the starting samples
        if hasattr(result, "statistics"):  # DiGS: final states only, energies evaluated here
            x_final = result.final
            u_final = energy(x_final)[0]
            stats = result.statistics
            used += int(stats["force_evaluations"]) + x0.shape[0]
            acceptance = float(np.nanmean(np.concatenate(
                [np.atleast_1d(np.asarray(stats["init_acceptance"], dtype=float)),
                 np.atleast_1d(np.asarray(stats["denoise_acceptance"], dtype=float))])))
        else:
            x_final, u_final = result.final[0], result.final[1]
            used += int(result.force_evaluations)
            acceptance = float(result.acceptance.mean())
    return RefinementResult(x_final.detach(), u_final.detach(), u0.detach(), used, acceptance)

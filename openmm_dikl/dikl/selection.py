"""Checkpoint selection without validation data (``run.select_checkpoint``).

The DiKL reference code (github.com/jiajunhe98/DiKL, ``train_utils.save_plot_and_check``)
keeps the generator of the best evaluation of a run, judged by a score that needs only
the target's energy, no reference samples (lower is better):

* ``"mala_energy_tvd"`` (its DW-4 rule): the samples are moved by a few MALA steps on
  the target (:func:`openmm_dikl.samplers.refine_samples`); the total variation distance
  between the energy histograms before and after
  (:func:`openmm_dikl.analysis.metrics.energy_tvd`, 200 bins spanning the refined
  energies, energies outside counted) is small when the samples are already close to
  the target, where MALA leaves them in place in distribution;
* ``"mean_energy"`` (its LJ-13 rule): the mean reduced energy of the samples with
  u < cutoff (300 kT; samples above it, e.g. overlapping particles, are left out).
* ``"digs_ramachandran_kl"`` (this package's rule for molecules): the same idea as
  ``"mala_energy_tvd"`` with the kernel that changes backbone basins, which MALA cannot:
  the samples are moved by ``select_mala_steps`` sweeps of the system's DiGS kernel
  (torsional for alanine dipeptide), and the score is the KL divergence of the
  Ramachandran histogram after from the one before (12 × 12 bins of 30°, coarse enough
  that a few thousand samples resolve the basins; summed over residues).
  A generator that misses or over-weights a basin is moved, and scores high.

:func:`update_selection` scores the trainer's sampling generator (its weight average,
if kept) and records the best result in ``trainer.selection_best``, which trainer
checkpoints carry, so a resumed run keeps its best so far; the training loop
(:mod:`openmm_dikl.dikl.loop`) writes the best generator to ``best_sampler.pt``.
Selecting draws its randomness from generators seeded by the run's seed and iteration,
never from the training RNG, so it does not change the training trajectory.
Positions in nm, energies in kT.
"""
import math

import torch

from ..analysis.evaluation import backbone_angles
from ..analysis.metrics import energy_tvd
from ..analysis.torsion_metrics import ramachandran_kl
from ..samplers.refine import refine_samples
from ..systems import TargetSystem
from .config import SELECTION_RULES

__all__ = ["selection_score", "update_selection", "check_selection"]

#: Bins per angle of the ``"digs_ramachandran_kl"`` histogram (30° wide).
RAMACHANDRAN_SELECTION_BINS = 12


def selection_score(rule, target, samples, energy_and_force=None, mala_steps=50,
                    energy_cutoff=300.0, seed=0):
    """Score of generator samples by a selection rule (lower is better).

    Parameters
    ----------
    rule : {"mala_energy_tvd", "mean_energy", "digs_ramachandran_kl"}
        See the module docstring.
    target : TargetSystem
        The target (``"mala_energy_tvd"`` needs a
        :class:`~openmm_dikl.systems.TargetSystem`: MALA runs on its forces with its
        default step size).
    samples : torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Generator samples in nm.
    energy_and_force : callable, optional
        x (B, n, d) nm -> (u (B,), −∇u); the energies of ``"mean_energy"`` (default
        ``target.reduced_energy``).
    mala_steps : int
        MALA steps of ``"mala_energy_tvd"``, DiGS sweeps of ``"digs_ramachandran_kl"``.
    energy_cutoff : float
        Cutoff (kT) of ``"mean_energy"``.
    seed : int
        Seed of the MALA steps.

    Returns
    -------
    float
        The energy TVD in [0, 1], or the mean reduced energy (kT); +inf if no sample
        qualifies (no finite refined energy, or none below the cutoff).

    Raises
    ------
    ValueError
        On an unknown rule.
    """
    samples = torch.as_tensor(samples, dtype=torch.float64)
    if rule == "mala_energy_tvd":
        chains = refine_samples(target, samples, int(mala_steps), method="mala", seed=int(seed))
        before, after = chains.initial_reduced_energies, chains.final_reduced_energies
        after = after[torch.isfinite(after)]
        return float(energy_tvd(before, after)) if len(after) else math.inf
    if rule == "mean_energy":
        if energy_and_force is None:
            u = target.reduced_energy(samples)
        else:
            u = energy_and_force(samples)[0]
        u = torch.as_tensor(u, dtype=torch.float64).detach()
        below = u[u < energy_cutoff]
        return float(below.mean()) if len(below) else math.inf
    if rule == "digs_ramachandran_kl":
        # (n, residues, 2); refuses a target without φ/ψ before any sweep is spent
        before = backbone_angles(target, samples).reshape(len(samples), -1, 2)
        chains = refine_samples(target, samples, int(mala_steps), method="digs", seed=int(seed))
        return _ramachandran_change(target, before, chains.final_positions)
    raise ValueError(f"unknown selection rule {rule!r}; choose from {SELECTION_RULES}")


def _ramachandran_change(target, before, after):
    """Σ over residues of KL(after ‖ before) of the (φ, ψ) histograms (nats).

    ``before`` are (n, m, 2) angles of :func:`backbone_angles` by residue, ``after``
    positions (n, n_atoms, 3) nm."""
    after = backbone_angles(target, after).reshape(before.shape)
    bins = RAMACHANDRAN_SELECTION_BINS
    return float(sum(ramachandran_kl(before[:, k], after[:, k], bins=bins)
                     for k in range(before.shape[1])))


def check_selection(trainer):
    """Refuse a selection rule the trainer's target cannot run (before training starts).

    Raises
    ------
    ValueError
        ``"mala_energy_tvd"`` or ``"digs_ramachandran_kl"`` on a target that is no
        TargetSystem (MALA and DiGS need its sampler defaults and forces).
    """
    rule = trainer.config.run.select_checkpoint
    if rule in ("mala_energy_tvd", "digs_ramachandran_kl") and not isinstance(
            trainer.target, TargetSystem):
        raise ValueError(f"DiKLConfig run.select_checkpoint={rule!r} needs a TargetSystem "
                         f"target (MCMC on its forces), got {type(trainer.target).__name__}")


def update_selection(trainer, samples):
    """Score ``samples`` of the trainer's sampling generator and keep the best result.

    Parameters
    ----------
    trainer : DiKLTrainer
        Its ``config.run`` names the rule; ``trainer.selection_best`` is updated.
    samples : torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Samples of ``trainer.sampling_generator`` at the current iteration (nm), e.g.
        :meth:`DiKLTrainer.evaluation_samples`.

    Returns
    -------
    score : float
        The score of this iteration (lower is better).
    improved : bool
        Whether it is the best so far (the first score always is; so is the first one
        after a resumed run changed the rule, whose earlier best is then discarded).
    """
    run = trainer.config.run
    score = selection_score(run.select_checkpoint, trainer.target, samples,
                            trainer.energy_and_force, mala_steps=run.select_mala_steps,
                            energy_cutoff=run.select_energy_cutoff,
                            seed=trainer.config.seed * 1_000_003 + trainer.iteration)
    best = trainer.selection_best
    if best is not None and best.get("rule") != run.select_checkpoint:
        best = None
    improved = best is None or score < best["score"]
    if improved:
        trainer.selection_best = {"rule": run.select_checkpoint, "score": score,
                                  "iteration": trainer.iteration}
    return score, improved

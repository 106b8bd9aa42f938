"""Reverse diffusive KL (DiKL, He et al., AISTATS 2025): configuration and trainer.

A one-shot generator x = f_θ(z) is trained to minimise Σ_t w(t) KL[p_θ * k_t || p * k_t].
Its gradient needs two scores of the noised distributions at x_t = α_t f_θ(z) + σ_t ε:
the model score (a network trained by denoising score matching on generator samples) and
the target score ∇ log p_t(x_t), estimated by the mixed score identity from samples of
the posterior p(x | x_t) ∝ exp(−u(x)) N(x_t | α x, σ² I).  The target enters only
through its reduced energy u and reduced force −∇u (torch twin or live OpenMM forces).

Units: positions in nm, reduced energies u = U/kT (dimensionless), reduced forces in 1/nm.

Files written by :meth:`DiKLTrainer.train` in ``out_dir``: ``checkpoint.pt`` (the latest
full training state, replaced atomically), ``log.csv`` (one row per iteration),
``eval.csv`` (one row per evaluation, if an ``eval_fn`` is given) and ``sampler.pt``
(generator only, see :func:`save_sampler`).  The posterior sampler lives in
:mod:`openmm_dikl.dikl.posterior`, checkpoint files and :func:`load_sampler` in
:mod:`openmm_dikl.dikl.checkpoints` (both re-exported here).
"""
import copy
import csv
import dataclasses
import logging
import math
import os
import time
from typing import Optional, Tuple

import numpy as np
import torch
from openmm import unit
from tqdm.auto import tqdm

from . import distributed as _dist
from .checkpoints import (BUNDLED_SAMPLERS, CHECKPOINT_FORMAT, CheckpointError,  # noqa: F401
                          NeuralSampler, _atomic_save, _check_target, _load_file, _load_state,
                          load_sampler, save_sampler)
from .diffusion import (WEIGHTINGS, VPSchedule, dikl_surrogate_loss, dsm_loss, level_weights,
                        mixed_score_identity, model_score, perturb)
from .. import systems
from ..geometry import remove_mean
from ..nn import build_model
from .posterior import PosteriorSample, PosteriorSampler  # noqa: F401
from ..energy import EnergyAndForce

__all__ = ["CheckpointError", "EnergyAndForce", "target_energy_and_force", "PosteriorSample",
           "PosteriorSampler", "DiKLConfig", "DiKLTrainer", "NeuralSampler", "save_sampler",
           "load_sampler", "BUNDLED_SAMPLERS"]

logger = logging.getLogger(__name__)

#: Config fields that define what a trained score network computes: a run started from
#: another run's networks (:meth:`DiKLTrainer.load_weights`) must keep them.
_SCORE_MEANING_FIELDS = ("n_levels", "beta_min", "beta_max", "parameterization",
                         "coordinate_scale")
#: Config fields that may change between a checkpoint and a resumed run.
_RESUMABLE_FIELDS = {"n_iterations", "checkpoint_every", "eval_every", "eval_samples",
                     "use_bridge"}
_LOG_COLUMNS = ["iteration", "dsm_loss", "score_gap", "acceptance", "step_size_min",
                "step_size_max", "ess_fraction", "energy_evaluations", "n_dropped",
                "skipped_steps", "wall_time_s"]


# ---------------------------------------------------------------------------- energies
def target_energy_and_force(target, use_bridge=False):
    """``(u, −∇u)`` callable for ``target``: torch autograd on the twin, or live OpenMM forces.

    See :class:`openmm_dikl.energy.EnergyAndForce`; call ``.close()`` when done with a
    bridge-backed one.
    """
    return EnergyAndForce(target, use_bridge=use_bridge)


# ---------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class DiKLConfig:
    """Settings of a DiKL run (defaults: the paper's DW-4 settings).

    Attributes
    ----------
    n_levels, beta_min, beta_max : int, float, float
        :class:`~openmm_dikl.dikl.diffusion.VPSchedule` (T = 30, β 1e-6 → 0.05).
    batch_size : int
        Generator samples per generator step (1024).
    score_batch_size : int or None
        Samples per score (DSM) step; None = ``batch_size``.
    score_samples_per_iter : int or None
        None: every DSM step draws fresh generator samples.  N: N generator samples are
        drawn once per iteration and every DSM step of that iteration takes a random
        ``score_batch_size`` of them (fresh noise and levels each step).  A large
        generator's forward pass, not the score network, then stops dominating the cost.
    lr_generator, lr_score : float
        Adam learning rates (5e-4, 1e-4).
    score_steps_per_iter : int
        DSM steps on fresh generator samples per iteration (100).
    n_importance, n_ais_steps, n_mala_steps, n_posterior : int
        Posterior sampler settings (20, 10, 50, 1), see :class:`PosteriorSampler`.
    mala_init_step : float
        Initial MALA step size (nm²) at unit posterior width; level t starts at
        ``mala_init_step · min(1, σ_t² / α_t²)``.  Step sizes are kept per level and
        adapted across iterations (they are part of the checkpoint).
    acceptance_range, step_adapt_factor : (float, float), float
        MALA step adaptation ([0.5, 0.6], ×/÷ 1.1 per step).
    weighting : {"sigma2", "uniform", "inv_alpha"}
        Level weight w(t) of the DSM loss (and of the DiKL gradient unless
        ``generator_weighting`` is set); see :func:`~openmm_dikl.dikl.diffusion.level_weights`.
    generator_weighting : {"sigma2", "uniform", "inv_alpha"} or None
        Level weight w(t) of the DiKL generator gradient; None = ``weighting``.  The DiKL
        code uses "uniform" for DW-4 / LJ-13 (every level counts equally in Σ_t KL_t) and
        "inv_alpha" for MoG-40 / MW-32.
    parameterization : {"noise", "score"}
        What the score network outputs (see :mod:`openmm_dikl.dikl.diffusion`).
    centre : bool or None
        Run the diffusion in the zero-centre-of-mass subspace; None = automatic (yes when
        n_particles > 1 and the forces sum to zero, i.e. u is translation invariant).
    grad_clip : float or None
        Clip the global gradient norm of both networks.
    lr_decay : float or None
        If set, both learning rates follow a cosine from their initial value down to
        ``lr_decay`` times it at iteration ``n_iterations`` (and stay there); None keeps
        them constant.  A resumed run with a different ``n_iterations`` stretches the
        cosine from that point on.
    ema_decay : float or None
        If set (in (0, 1)), an exponential moving average of the generator weights,
        ema ← d·ema + (1 − d)·θ after every generator step, is kept and used for
        evaluation and for the saved sampler (it averages out the last steps' noise).
    n_iterations, checkpoint_every, eval_every, eval_samples : int
        Default length of :meth:`DiKLTrainer.train`, checkpoint and evaluation periods
        (0 = never) and the number of samples handed to ``eval_fn``.
    seed : int
        Seed of the trainer's torch.Generator (all randomness of a run).
    use_bridge : bool
        Use OpenMM forces through the bridge even when a torch twin exists.
    coordinate_scale : float
        Length c (nm) that the diffusion works in units of (1.0): the score network, the
        VP kernel and the posterior see y = x / c, so the noise in nm is c·σ_t (the
        iDEM / DiKL data normalisation, e.g. c = 50 for their MoG-40 code).  With c = 1 the
        noise never exceeds 1 nm.
    score_clip : float or None
        If set, each particle's vector of the score difference s_model − s_target in the
        generator gradient is clipped to this norm (1/y-units).  A generator sample with
        overlapping particles (Lennard-Jones: forces ~1e8) would otherwise outweigh the
        whole batch; iDEM clips its target scores for the same reason.  The logged
        ``score_gap`` is the unclipped one.
    """

    n_levels: int = 30
    beta_min: float = 1e-6
    beta_max: float = 0.05
    batch_size: int = 1024
    score_batch_size: Optional[int] = None
    score_samples_per_iter: Optional[int] = None
    lr_generator: float = 5e-4
    lr_score: float = 1e-4
    score_steps_per_iter: int = 100
    n_importance: int = 20
    n_ais_steps: int = 10
    n_mala_steps: int = 50
    n_posterior: int = 1
    mala_init_step: float = 1e-2
    acceptance_range: Tuple[float, float] = (0.5, 0.6)
    step_adapt_factor: float = 1.1
    weighting: str = "sigma2"
    generator_weighting: Optional[str] = None
    parameterization: str = "noise"
    centre: Optional[bool] = None
    grad_clip: Optional[float] = None
    lr_decay: Optional[float] = None
    ema_decay: Optional[float] = None
    n_iterations: int = 2000
    checkpoint_every: int = 100
    eval_every: int = 0
    eval_samples: int = 2000
    seed: int = 0
    use_bridge: bool = False
    coordinate_scale: float = 1.0
    score_clip: Optional[float] = None

    def __post_init__(self):
        self.acceptance_range = tuple(float(a) for a in self.acceptance_range)
        VPSchedule(self.n_levels, self.beta_min, self.beta_max)  # validates the schedule
        positive = ["batch_size", "n_importance", "n_posterior"]
        non_negative = ["score_steps_per_iter", "n_ais_steps", "n_mala_steps", "n_iterations",
                        "checkpoint_every", "eval_every", "eval_samples"]
        for name in positive + non_negative:
            value = getattr(self, name)
            low = 1 if name in positive else 0
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"DiKLConfig.{name} must be an integer >= {low}, got {value!r}")
        for name in ("score_batch_size", "score_samples_per_iter"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value
                                      or value < 1):
                raise ValueError(f"DiKLConfig.{name} must be None or an integer >= 1, got "
                                 f"{value!r}")
        for name in ("lr_generator", "lr_score", "mala_init_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DiKLConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("grad_clip", "score_clip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0
                                          and math.isfinite(value)):
                raise ValueError(f"DiKLConfig.{name} must be positive or None, got {value!r}")
        if not (isinstance(self.coordinate_scale, (int, float))
                and math.isfinite(self.coordinate_scale) and self.coordinate_scale > 0):
            raise ValueError(f"DiKLConfig.coordinate_scale must be a positive length in nm, "
                             f"got {self.coordinate_scale!r}")
        if self.lr_decay is not None and not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"DiKLConfig.lr_decay must be in (0, 1] or None, got {self.lr_decay}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"DiKLConfig.ema_decay must be in (0, 1) or None, got "
                             f"{self.ema_decay}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"DiKLConfig.weighting must be one of {WEIGHTINGS}, got "
                             f"{self.weighting!r}")
        if self.generator_weighting is not None and self.generator_weighting not in WEIGHTINGS:
            raise ValueError(f"DiKLConfig.generator_weighting must be None or one of "
                             f"{WEIGHTINGS}, got {self.generator_weighting!r}")
        if self.parameterization not in ("noise", "score"):
            raise ValueError(f"DiKLConfig.parameterization must be 'noise' or 'score', got "
                             f"{self.parameterization!r}")

    def to_dict(self):
        """Plain dict of the settings (stored in checkpoints)."""
        return dataclasses.asdict(self)


class _ScaledEnergy:
    """(u, −∇u) of the target in y = x / c: u_y(y) = u(c·y), −∇_y u_y = c·(−∇u)(c·y)."""

    def __init__(self, energy_and_force, scale):
        self.energy_and_force = energy_and_force
        self.scale = float(scale)

    def __call__(self, y):
        u, f = self.energy_and_force(y * self.scale)
        return u, f * self.scale


def _clip_per_particle(v, max_norm):
    """v (B, n, d) with every particle's d-vector clipped to norm ``max_norm``."""
    norm = v.norm(dim=-1, keepdim=True)
    return v * torch.clamp(max_norm / norm.clamp(min=1e-300), max=1.0)


def _is_translation_invariant(target, energy_and_force):
    """True if the forces of ``target`` sum to zero at two perturbed configurations."""
    n, d = target.n_particles, target.spatial_dim
    if n < 2:
        return False
    gen = torch.Generator().manual_seed(12345)
    start = torch.zeros(n, d, dtype=torch.float64)
    positions = getattr(target, "positions", None)
    if positions is not None:
        start = torch.as_tensor(np.asarray(positions.value_in_unit(unit.nanometer)
                                           if unit.is_quantity(positions) else positions),
                                dtype=torch.float64)[:, :d]
    x = start + 0.1 * torch.randn((2, n, d), generator=gen, dtype=torch.float64)
    _, f = energy_and_force(x)
    total = f.sum(-2).abs().sum(-1)
    return bool((total <= 1e-8 * (f.abs().sum((-2, -1)) + 1.0)).all())


def _rank_seed(seed, rank):
    """Seed of the torch.Generator of process ``rank``: ``seed`` itself on rank 0."""
    if rank == 0:
        return int(seed)
    return (int(seed) + 0x9E3779B97F4A7C15 * int(rank)) % (2**63)


def _share(n, rank, world):
    """This process's part of ``n`` items split as evenly as possible over ``world``."""
    return n // world + (1 if rank < n % world else 0)


class _SampleModule(torch.nn.Module):
    """Wraps a generator so that ``forward(n, generator)`` is ``generator.sample``.

    DistributedDataParallel synchronises gradients only of what runs through ``forward``.
    """

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, n, generator=None):
        return self.generator.sample(n, generator=generator)


class DiKLTrainer:
    """Trains a one-shot generator on a Boltzmann target by reverse diffusive KL.

    Parameters
    ----------
    target : TargetSystem or target-like object
        Needs ``name``, ``n_particles``, ``spatial_dim`` and ``reduced_energy`` (x in nm
        -> u); ``has_torch_twin``/``bridge()`` choose the force source (see
        :func:`target_energy_and_force`).
    generator : torch.nn.Module
        ``generator.sample(n, generator=torch.Generator) -> (n, n_particles, spatial_dim)``
        in nm, differentiable w.r.t. its parameters.
    score_model : torch.nn.Module
        ``score_model(x_t, t) -> (B, n, d)`` with t float (B,) in (0, 1]; the output is
        the noise prediction ε̂ (or the score, see ``config.parameterization``).
    config : DiKLConfig, optional
    eval_fn : callable, optional
        ``eval_fn(target, samples) -> dict[str, float]`` run every ``config.eval_every``
        iterations on ``config.eval_samples`` generator samples (nm, float64), e.g.
        ``openmm_dikl.analysis.metrics.evaluate_samples``.  It draws from its own seeded
        torch.Generator, so evaluating does not change the training trajectory.
    energy_and_force : callable, optional
        Overrides the force source (x (B, n, d) nm -> (u, −∇u), float64).
    distributed : bool or None
        Data-parallel training over the default ``torch.distributed`` process group (see
        :mod:`openmm_dikl.dikl.distributed`).  None: yes if a group with more than one process
        is initialised; False: never; True: a group must be initialised.

    Notes
    -----
    One iteration (:meth:`step`): ``score_steps_per_iter`` DSM steps on fresh generator
    samples, then one generator step with the surrogate of
    :func:`~openmm_dikl.dikl.diffusion.dikl_surrogate_loss`: draw x = f_θ(z) and levels t
    uniformly, x_t = α_t x + σ_t ε, the target score at x_t by the mixed score identity
    from :class:`PosteriorSampler` samples (target forces enter only there), the model score
    from the score network.  All randomness comes from one torch.Generator seeded with
    ``config.seed`` and saved in checkpoints, so a resumed run reproduces an uninterrupted
    one exactly (CPU, same thread count).

    Data-parallel training (N processes, e.g. under torchrun): both networks are wrapped in
    :class:`torch.nn.parallel.DistributedDataParallel` (gradients are averaged over the
    processes during ``backward``; rank 0's initial weights are broadcast).  Every batch
    of the config (``batch_size``, ``score_batch_size``, ``score_samples_per_iter``) is
    the global batch: process r draws its share (``n // N``, plus one for the first
    ``n % N`` ranks) from its own torch.Generator seeded with ``seed`` on rank 0 and a
    rank-dependent mix of ``seed`` otherwise, runs the posterior sampler on its share,
    and weights its loss by share/(n/N), so the averaged gradient is that of the mean
    over the global batch.  The per-level MALA step sizes are adapted on each share and
    then averaged (geometrically, weighted by the samples per level) over the processes;
    the log row holds global averages and sums.  Only rank 0 writes files; checkpoints
    hold unwrapped state dicts plus every rank's generator state, so a run can be resumed
    with any number of processes (ranks not in the checkpoint get a fresh seed from
    ``seed``, rank and iteration; the same N resumes exactly).
    """

    def __init__(self, target, generator, score_model, config=None, eval_fn=None,
                 energy_and_force=None, distributed=None):
        self.config = config if config is not None else DiKLConfig()
        if not isinstance(self.config, DiKLConfig):
            raise TypeError(f"config must be a DiKLConfig, got {type(self.config).__name__}")
        cfg = self.config
        for what, model in (("generator", generator), ("score_model", score_model)):
            shape = (getattr(model, "n_particles", None), getattr(model, "spatial_dim", None))
            if shape != (None, None) and shape != (target.n_particles, target.spatial_dim):
                raise ValueError(f"{what} is built for {shape[0]} particles in {shape[1]}-D but "
                                 f"target {target.name!r} has {target.n_particles} in "
                                 f"{target.spatial_dim}-D")
        self.target = target
        self.generator = generator
        self.score_model = score_model
        self.eval_fn = eval_fn
        self.schedule = VPSchedule(cfg.n_levels, cfg.beta_min, cfg.beta_max)
        self._owns_forces = energy_and_force is None
        self.energy_and_force = (target_energy_and_force(target, cfg.use_bridge)
                                 if energy_and_force is None else energy_and_force)
        self.centre = (_is_translation_invariant(target, self.energy_and_force)
                       if cfg.centre is None else bool(cfg.centre))
        self.scale = float(cfg.coordinate_scale)
        self.posterior = PosteriorSampler(
            (self.energy_and_force if self.scale == 1.0
             else _ScaledEnergy(self.energy_and_force, self.scale)),
            n_importance=cfg.n_importance, n_ais_steps=cfg.n_ais_steps,
            n_mala_steps=cfg.n_mala_steps, n_posterior=cfg.n_posterior,
            acceptance_range=cfg.acceptance_range, adapt_factor=cfg.step_adapt_factor,
            centre=self.centre)
        if distributed and not _dist.is_initialized():
            raise ValueError("distributed=True needs an initialised torch.distributed process "
                             "group (see openmm_dikl.dikl.distributed.init_from_env)")
        #: Processes training together and the rank of this one (1 and 0 when alone).
        self.world_size = _dist.world_size() if distributed is not False else 1
        self.rank = _dist.rank() if self.world_size > 1 else 0
        # The networks that run with gradients: DDP wrappers under a process group.
        self._generator_train = self._score_train = None
        if self.world_size > 1:
            smallest = min(v for v in (cfg.batch_size, cfg.score_batch_size,
                                       cfg.score_samples_per_iter) if v is not None)
            if smallest < self.world_size:
                raise ValueError(f"every DiKL batch needs at least one sample per process: "
                                 f"{smallest} samples cannot be split over "
                                 f"{self.world_size} processes")
            import inspect
            from torch.nn.parallel import DistributedDataParallel
            # the buffers (constant features) are synchronised once here, not every forward
            no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                       inspect.signature(DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})
            self._generator_train = DistributedDataParallel(_SampleModule(generator), **no_sync)
            self._score_train = DistributedDataParallel(score_model, **no_sync)
        self.rng = torch.Generator().manual_seed(_rank_seed(cfg.seed, self.rank))
        self.opt_generator = torch.optim.Adam(generator.parameters(), lr=cfg.lr_generator)
        self.opt_score = torch.optim.Adam(score_model.parameters(), lr=cfg.lr_score)
        #: Moving average of the generator weights (None without ``config.ema_decay``).
        self.generator_ema = None
        if cfg.ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator)
            self.generator_ema.requires_grad_(False)
        ratio2 = (self.schedule.sigmas / self.schedule.alphas) ** 2
        #: MALA step size (nm²) of each noise level, adapted across iterations.
        self.step_sizes = cfg.mala_init_step * ratio2.clamp(max=1.0)
        self.iteration = 0
        self.wall_time = 0.0
        #: Optimiser steps skipped because of non-finite gradients (both networks).
        self.skipped_steps = 0
        #: Trainer checkpoint the networks were started from (:meth:`load_weights`), or None.
        self.init_from = None
        logger.info("DiKL on %s: centre=%s, force source=%s", target.name, self.centre,
                    "OpenMM bridge" if getattr(self.energy_and_force, "uses_bridge", False)
                    else "torch")

    @classmethod
    def from_recipe(cls, recipe, target=None, **kwargs):
        """The trainer a recipe describes (see :mod:`openmm_dikl.dikl.recipes`).

        Parameters
        ----------
        recipe : dict
            ``{"system", "generator", "score_model", "dikl"}``: model configs of
            :func:`openmm_dikl.nn.build_model` and :class:`DiKLConfig` fields.
        target : TargetSystem, optional
            Default ``openmm_dikl.systems.get(recipe["system"])``.
        **kwargs
            Passed to the constructor (``eval_fn``, ``distributed``, ...).
        """
        if target is None:
            target = systems.get(recipe["system"])
        return cls(target, build_model(recipe["generator"]), build_model(recipe["score_model"]),
                   DiKLConfig(**recipe["dikl"]), **kwargs)

    # ------------------------------------------------------------------ one iteration
    @property
    def sampling_generator(self):
        """The network to draw samples from: the weight average if kept, else the generator."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def learning_rate_factor(self, iteration=None):
        """Factor (0, 1] applied to both learning rates at ``iteration`` (default: the next)."""
        cfg = self.config
        if cfg.lr_decay is None:
            return 1.0
        it = self.iteration if iteration is None else int(iteration)
        progress = min(it / max(cfg.n_iterations, 1), 1.0)
        return cfg.lr_decay + (1.0 - cfg.lr_decay) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _set_learning_rates(self):
        factor = self.learning_rate_factor()
        for optimizer, lr in ((self.opt_generator, self.config.lr_generator),
                              (self.opt_score, self.config.lr_score)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor

    @torch.no_grad()
    def _update_ema(self):
        if self.generator_ema is None:
            return
        decay = self.config.ema_decay
        for avg, param in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.mul_(decay).add_(param.detach(), alpha=1.0 - decay)
        for avg, buf in zip(self.generator_ema.buffers(), self.generator.buffers()):
            avg.copy_(buf)

    def _local(self, n):
        """This process's share of a global batch of n (n itself for a single process)."""
        return n if self.world_size == 1 else _share(n, self.rank, self.world_size)

    def _loss_scale(self, n_local, n_global):
        """Weight of a local mean loss so that averaging over processes gives the global mean."""
        return n_local * self.world_size / n_global

    def _draw(self, n, train=False):
        """n generator samples in units of ``coordinate_scale`` (y = x / c; nm when c = 1),
        centred if the run is in the centred subspace.

        ``train``: through the DDP wrapper when distributed (gradients are synchronised).
        """
        if train and self._generator_train is not None:
            x = self._generator_train(n, generator=self.rng)
        else:
            x = self.generator.sample(n, generator=self.rng)
        expected = (n, self.target.n_particles, self.target.spatial_dim)
        if tuple(x.shape) != expected:
            raise ValueError(f"generator.sample({n}) returned shape {tuple(x.shape)}, "
                             f"expected {expected}")
        if self.scale != 1.0:
            x = x / self.scale
        return remove_mean(x) if self.centre else x

    def _update(self, module, optimizer):
        """Clip and apply the gradients of ``module``; skip the step if any is not finite.

        Returns True if the parameters were updated.  A single non-finite gradient (e.g.
        from an overflowing sample) would otherwise turn every parameter into NaN.
        """
        params = [p for p in module.parameters() if p.grad is not None]
        limit = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else torch.zeros(())
        if not torch.isfinite(norm):
            optimizer.zero_grad()
            self.skipped_steps += 1
            log = logger.warning if self.skipped_steps in (1, 10, 100, 1000) else logger.debug
            log("iteration %d: non-finite %s gradient, step skipped (%d so far)",
                self.iteration + 1, type(module).__name__, self.skipped_steps)
            return False
        optimizer.step()
        return True

    def score_step(self, pool=None):
        """One DSM step of the score network; returns the loss (of this process's share).

        Parameters
        ----------
        pool : torch.Tensor, shape=(N, n, d), optional
            See :meth:`score_loss`.
        """
        loss = self.score_loss(pool)
        self.opt_score.zero_grad()
        loss.backward()
        self._update(self.score_model, self.opt_score)
        return float(loss.detach())

    def score_loss(self, pool=None):
        """DSM loss of one score batch (backward gives the score-network gradient).

        Parameters
        ----------
        pool : torch.Tensor, shape=(N, n, d), optional
            Detached generator samples (nm) to draw the batch from (a random subset of
            ``score_batch_size``, or all of them if N is not larger); default: fresh
            generator samples.

        Returns
        -------
        torch.Tensor
            Scalar loss (dimensionless).  Distributed: of this process's share, weighted so
            that the gradient averaged over the processes is that of the global batch (call
            ``backward`` on every process).
        """
        cfg = self.config
        n_global = cfg.score_batch_size or cfg.batch_size
        n = self._local(n_global)
        if pool is None:
            with torch.no_grad():
                x0 = self._draw(n)
        elif len(pool) > n:
            x0 = pool[torch.randperm(len(pool), generator=self.rng)[:n]]
        else:
            x0 = pool
            n = len(pool)
            n_global = (self.config.score_samples_per_iter if self.world_size > 1 and
                        self.config.score_samples_per_iter else n * self.world_size)
        t_index = self.schedule.sample_levels(n, self.rng)
        model = self.score_model if self._score_train is None else self._score_train
        loss = dsm_loss(model, x0, self.schedule, t_index, self.rng, self.centre, cfg.weighting,
                        cfg.parameterization)
        if self.world_size > 1:
            loss = loss * self._loss_scale(n, n_global)
        return loss

    def generator_loss(self):
        """DiKL surrogate loss of one generator batch (backward gives the DiKL gradient).

        Returns
        -------
        loss : torch.Tensor
            Scalar surrogate, differentiable w.r.t. the generator parameters (distributed:
            of this process's share, weighted so that the gradient averaged over the
            processes is that of the global batch; call ``backward`` on every process).
        stats : dict
            ``score_gap`` = mean w(t)·|s_model − s_target|² (a Fisher-type estimate of the
            weighted diffusive divergence), posterior ``acceptance``, ``ess_fraction``,
            ``n_dropped`` (over the global batch).
        """
        cfg = self.config
        n = self._local(cfg.batch_size)
        x = self._draw(n, train=True)
        if not x.requires_grad:
            raise RuntimeError("generator.sample must keep autograd (do not wrap it in "
                               "torch.no_grad) so DiKL can differentiate x_t")
        t_index = self.schedule.sample_levels(n, self.rng)
        x_t, _ = perturb(x, self.schedule, t_index, self.rng, self.centre)
        alpha, sigma = self.schedule.alpha(t_index), self.schedule.sigma(t_index)
        post = self.posterior.sample(x_t.detach(), alpha, sigma, self.step_sizes, self.rng,
                                     groups=t_index)
        self.step_sizes = (post.step_size if self.world_size == 1 else
                           self._average_step_sizes(post.step_size, t_index))
        x_t64 = x_t.detach().to(torch.float64)
        s_target = mixed_score_identity(x_t64, post.samples, post.forces, alpha, sigma,
                                        post.weights)
        with torch.no_grad():
            s_model = model_score(self.score_model, x_t.detach(), t_index, self.schedule,
                                  cfg.parameterization).to(torch.float64)
        weights = level_weights(self.schedule, t_index,
                                cfg.generator_weighting or cfg.weighting)
        # Samples whose scores overflow (far outliers of a young generator) carry no usable
        # gradient: drop them instead of letting one inf poison the whole batch.
        finite = (torch.isfinite(s_model).flatten(1).all(1)
                  & torch.isfinite(s_target).flatten(1).all(1))
        if not finite.all():
            keep = finite[:, None, None]
            s_model = torch.where(keep, s_model, torch.zeros_like(s_model))
            s_target = torch.where(keep, s_target, torch.zeros_like(s_target))
        # the gradient uses the clipped score difference, the logged gap the unclipped one
        loss_target = (s_target if cfg.score_clip is None else
                       s_model - _clip_per_particle(s_model - s_target, cfg.score_clip))
        loss = dikl_surrogate_loss(x_t, s_model, loss_target, weights)
        gaps = (weights * (s_model - s_target).pow(2).flatten(1).sum(1))[finite]
        if self.world_size > 1:
            loss = loss * self._loss_scale(n, cfg.batch_size)
            sums = torch.stack([gaps.sum(), finite.sum(), post.acceptance.sum(),
                                post.ess_fraction.sum(), torch.tensor(n)]).to(torch.float64)
            sums = _dist.all_reduce_mean(sums) * self.world_size
            stats = {"score_gap": float(sums[0] / sums[1]),
                     "acceptance": float(sums[2] / sums[4]),
                     "ess_fraction": float(sums[3] / sums[4]),
                     "n_dropped": int(round(float(sums[4] - sums[1])))}
            return loss, stats
        stats = {"score_gap": float(gaps.mean()), "acceptance": float(post.acceptance.mean()),
                 "ess_fraction": float(post.ess_fraction.mean()),
                 "n_dropped": int((~finite).sum())}
        return loss, stats

    def _average_step_sizes(self, step_size, groups):
        """Geometric mean over processes of adapted per-level step sizes (nm²).

        Each process's log step size of a level counts with its number of samples at that
        level; levels no process sampled keep their previous value.
        """
        counts = torch.bincount(groups, minlength=len(step_size)).to(torch.float64)
        sums = torch.stack([counts * torch.log(step_size), counts])
        sums = _dist.all_reduce_mean(sums)
        mean_log = sums[0] / sums[1].clamp(min=1e-300)
        return torch.where(sums[1] > 0, torch.exp(mean_log), self.step_sizes)

    def step(self):
        """One DiKL iteration (score steps, then a generator step); returns its log row."""
        start = time.perf_counter()
        evaluations = self.posterior.n_evaluations
        self._set_learning_rates()
        pool = None
        if self.config.score_samples_per_iter is not None and self.config.score_steps_per_iter:
            with torch.no_grad():
                pool = self._draw(self._local(self.config.score_samples_per_iter))
        dsm = [self.score_step(pool) for _ in range(self.config.score_steps_per_iter)]
        loss, stats = self.generator_loss()
        self.opt_generator.zero_grad()
        loss.backward()
        if self._update(self.generator, self.opt_generator):
            self._update_ema()
        dsm_mean = float(np.mean(dsm)) if dsm else math.nan
        evaluations = self.posterior.n_evaluations - evaluations
        if self.world_size > 1:  # global mean DSM loss, total evaluations
            sums = _dist.all_reduce_mean(torch.tensor([dsm_mean, evaluations]))
            dsm_mean, evaluations = float(sums[0]), int(round(float(sums[1]) * self.world_size))
        self.iteration += 1
        self.wall_time += time.perf_counter() - start
        row = {"iteration": self.iteration,
               "dsm_loss": dsm_mean,
               "score_gap": stats["score_gap"], "acceptance": stats["acceptance"],
               "step_size_min": float(self.step_sizes.min()),
               "step_size_max": float(self.step_sizes.max()),
               "ess_fraction": stats["ess_fraction"],
               "energy_evaluations": evaluations,
               "n_dropped": stats["n_dropped"], "skipped_steps": self.skipped_steps,
               "wall_time_s": self.wall_time}
        return row

    def evaluate(self):
        """``eval_fn`` on ``eval_samples`` generator samples (its own seeded RNG).

        Returns the scalar entries of its result as a dict of floats (lists are dropped).
        """
        if self.eval_fn is None:
            return {}
        gen = torch.Generator().manual_seed(int(self.config.seed) * 1_000_003 + self.iteration)
        with torch.no_grad():
            x = self.sampling_generator.sample(self.config.eval_samples, generator=gen)
            x = (remove_mean(x) if self.centre else x).to(torch.float64)
        metrics = self.eval_fn(self.target, x)
        return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """Everything needed to continue the run bit for bit (a plain dict).

        Distributed: collective (call it on every process); ``rng_states`` holds every
        rank's generator state, ``rng_state`` rank 0's.
        """
        rng_states = [self.rng.get_state()]
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            torch.distributed.all_gather_object(rng_states, self.rng.get_state())
        return {"format": CHECKPOINT_FORMAT, "kind": "trainer",
                "target_name": self.target.name, "n_particles": self.target.n_particles,
                "spatial_dim": self.target.spatial_dim, "iteration": self.iteration,
                "wall_time": self.wall_time, "skipped_steps": self.skipped_steps,
                "config": self.config.to_dict(),
                "centre": self.centre,
                "generator_config": getattr(self.generator, "config", None),
                "score_config": getattr(self.score_model, "config", None),
                "generator_state": self.generator.state_dict(),
                "generator_ema_state": (None if self.generator_ema is None
                                        else self.generator_ema.state_dict()),
                "score_state": self.score_model.state_dict(),
                "opt_generator_state": self.opt_generator.state_dict(),
                "opt_score_state": self.opt_score.state_dict(),
                "rng_state": rng_states[0], "rng_states": rng_states,
                "world_size": self.world_size, "step_sizes": self.step_sizes.clone(),
                "init_from": self.init_from}

    def save_checkpoint(self, path):
        """Write the training state to ``path`` atomically (temp file, fsync, os.replace).

        Distributed: collective (call it on every process); only rank 0 writes.
        """
        state = self.state_dict()
        if self.rank == 0:
            _atomic_save(state, path)

    def load_checkpoint(self, path):
        """Restore the training state from ``path``.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        CheckpointError
            If it is truncated/corrupt, not a trainer checkpoint, for another system, or
            written with different training settings or architectures.
        """
        obj = _load_file(path, kinds=("trainer",))
        _check_target(obj, path, self.target.name, self.target.n_particles,
                      self.target.spatial_dim)
        changed = self._config_differences(
            obj, sorted(k for k in self.config.to_dict() if k not in _RESUMABLE_FIELDS))
        if changed:
            raise CheckpointError(f"checkpoint file {path!r} was written with different "
                                  "settings: " + ", ".join(changed))
        self._load_networks(obj, path)
        _load_state(self.opt_generator, obj["opt_generator_state"], "generator optimiser", path)
        _load_state(self.opt_score, obj["opt_score_state"], "score optimiser", path)
        states = obj.get("rng_states") or [obj["rng_state"]]
        if self.rank < len(states):
            self.rng.set_state(states[self.rank])
        else:  # more processes than the run that wrote the checkpoint
            self.rng.manual_seed(_rank_seed(self.config.seed * 1_000_003 + int(obj["iteration"]),
                                            self.rank))
        self.step_sizes = obj["step_sizes"].to(torch.float64).clone()
        self.iteration = int(obj["iteration"])
        self.wall_time = float(obj["wall_time"])
        self.skipped_steps = int(obj.get("skipped_steps", 0))
        self.centre = bool(obj["centre"])
        self.posterior.centre = self.centre
        self.init_from = obj.get("init_from")

    def load_weights(self, path):
        """Start from the networks of another run (fine-tuning with new settings).

        Loads the generator, its weight average and the score network of a trainer
        checkpoint; the optimisers, learning-rate schedule, iteration count, random state
        and MALA step sizes stay as they are (fresh), so the training settings may differ
        from the run that wrote ``path`` — except the system, the architectures and the
        settings that define what the score network computes (:data:`_SCORE_MEANING_FIELDS`:
        noise schedule, parameterisation, coordinate scale) and centring.  The path is kept
        in :attr:`init_from` and in this trainer's checkpoints.

        Parameters
        ----------
        path : str or os.PathLike
            A trainer checkpoint (``OUT/checkpoint.pt`` of ``openmm-dikl train``).

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        CheckpointError
            If it is corrupt, not a trainer checkpoint (a ``sampler.pt`` holds no score
            network), for another system, holds networks of other architectures, or its
            score network was trained for another noise schedule, parameterisation,
            coordinate scale or centring.  Nothing is loaded then.
        """
        obj = _load_file(path, kinds=("trainer",))
        _check_target(obj, path, self.target.name, self.target.n_particles,
                      self.target.spatial_dim)
        changed = self._config_differences(obj, _SCORE_MEANING_FIELDS)
        if bool(obj["centre"]) != self.centre:
            changed.append(f"centre={bool(obj['centre'])} (now {self.centre})")
        if changed:
            raise CheckpointError(f"checkpoint file {path!r} holds a score network for other "
                                  "settings: " + ", ".join(changed))
        self._load_networks(obj, path, require_average=False)
        self.init_from = str(path)

    def _config_differences(self, obj, fields):
        """``"field=theirs (now mine)"`` for each of ``fields`` where a loaded checkpoint's
        training settings differ from this trainer's."""
        mine, theirs = self.config.to_dict(), dict(obj["config"])
        theirs["acceptance_range"] = tuple(theirs["acceptance_range"])
        theirs.setdefault("coordinate_scale", 1.0)  # fields added after format 1 was fixed
        theirs.setdefault("score_clip", None)
        return [f"{k}={theirs.get(k)!r} (now {mine[k]!r})" for k in fields
                if mine[k] != theirs.get(k)]

    def _load_networks(self, obj, path, require_average=True):
        """Generator, weight average and score network from a loaded trainer checkpoint.

        Without ``require_average`` a checkpoint of a run that kept no weight average
        starts the average at the generator's weights.
        """
        for what, model in (("generator", self.generator), ("score", self.score_model)):
            config = getattr(model, "config", None)
            if config is not None and obj[f"{what}_config"] not in (None, config):
                raise CheckpointError(f"checkpoint file {path!r} holds a {what} built with "
                                      f"{obj[f'{what}_config']}, not {config}")
        ema_state = obj.get("generator_ema_state")
        if ema_state is None and not require_average:
            ema_state = obj["generator_state"]
        if self.generator_ema is not None and ema_state is None:
            raise CheckpointError(f"checkpoint file {path!r} has no generator average")
        loads = [(self.generator, obj["generator_state"], "generator"),
                 (self.generator_ema, ema_state, "generator average"),
                 (self.score_model, obj["score_state"], "score network")]
        loads = [load for load in loads if load[0] is not None]
        before = [copy.deepcopy(module.state_dict()) for module, _, _ in loads]
        try:
            for module, state, what in loads:
                _load_state(module, state, what, path)
        except CheckpointError:  # all or nothing
            for (module, _, _), state in zip(loads, before):
                module.load_state_dict(state)
            raise

    # ------------------------------------------------------------------ training loop
    def train(self, n_iterations=None, out_dir=None, resume=False, progress=True,
              init_from=None):
        """Train until ``n_iterations`` iterations in total have been done.

        Parameters
        ----------
        n_iterations : int, optional
            Total iteration count to reach (default ``config.n_iterations``); a resumed run
            continues from the checkpoint's iteration up to this number.
        out_dir : str or os.PathLike, optional
            Folder for ``checkpoint.pt``, ``log.csv``, ``eval.csv`` and ``sampler.pt``
            (created if missing).  Without it nothing is written.
        resume : bool
            Continue from ``out_dir/checkpoint.pt``; log rows after the checkpoint's
            iteration (from an interrupted run) are dropped.
        progress : bool
            Show a tqdm progress bar (rank 0 only when distributed).
        init_from : str or os.PathLike, optional
            Trainer checkpoint whose networks a fresh run starts from (see
            :meth:`load_weights`).  Ignored when resuming: the run's own checkpoint
            already holds the networks.

        Returns
        -------
        list of dict
            The log rows of the iterations run by this call (global averages when
            distributed; evaluation metrics on rank 0 only).

        Notes
        -----
        Distributed: call it on every process with the same arguments; only rank 0 writes
        files and runs ``eval_fn``, and every process returns after the files are written.

        Raises
        ------
        FileNotFoundError
            ``resume=True`` without an existing ``out_dir/checkpoint.pt``, or a missing
            ``init_from`` file.
        CheckpointError
            The checkpoint (or ``init_from``) is corrupt or does not belong to this target /
            these settings.
        """
        total = self.config.n_iterations if n_iterations is None else int(n_iterations)
        main = self.rank == 0
        if resume and out_dir is None:
            raise ValueError("resume=True needs out_dir (where checkpoint.pt lives)")
        if init_from is not None and not resume:  # before anything is written
            self.load_weights(init_from)
            logger.info("networks from %s", init_from)
        paths = None
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            paths = {name: os.path.join(out_dir, f"{name}.{ext}") for name, ext in
                     (("checkpoint", "pt"), ("log", "csv"), ("eval", "csv"),
                      ("sampler", "pt"))}
            if resume:
                self.load_checkpoint(paths["checkpoint"])
                logger.info("resumed %s at iteration %d", paths["checkpoint"], self.iteration)
            if main:
                for key in ("log", "eval"):
                    _truncate_csv(paths[key], self.iteration if resume else 0)
        cfg = self.config
        rows = []
        bar = tqdm(total=total, initial=min(self.iteration, total), disable=not (progress and main),
                   desc=f"DiKL {self.target.name}")
        try:
            while self.iteration < total:
                row = self.step()
                rows.append(row)
                if paths and main:
                    _append_csv(paths["log"], _LOG_COLUMNS, row)
                if (cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.eval_fn
                        and main):
                    metrics = self.evaluate()
                    if paths:
                        _append_csv(paths["eval"], ["iteration"] + sorted(metrics),
                                    {"iteration": self.iteration, **metrics})
                    row.update(metrics)
                if paths and cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                    self.save_checkpoint(paths["checkpoint"])
                bar.update(1)
                bar.set_postfix(gap=f"{row['score_gap']:.3g}", acc=f"{row['acceptance']:.2f}")
        finally:
            bar.close()
        if paths:
            self.save_checkpoint(paths["checkpoint"])
            if main and getattr(self.generator, "config", None) is not None:
                save_sampler(paths["sampler"], self.target.name, self.sampling_generator,
                             {"iteration": self.iteration, "config": cfg.to_dict()},
                             centre=self.centre)
        if self.world_size > 1:
            torch.distributed.barrier()  # the files exist when any process returns
        return rows

    def close(self):
        """Release the force source (closes an OpenMM bridge the trainer opened)."""
        if self._owns_forces and hasattr(self.energy_and_force, "close"):
            self.energy_and_force.close()


def _truncate_csv(path, last_iteration):
    """Keep the header and the rows with iteration <= last_iteration (0: remove the file)."""
    if not os.path.exists(path):
        return
    if last_iteration <= 0:
        os.remove(path)
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        kept = [r for r in reader if int(float(r["iteration"])) <= last_iteration]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def _append_csv(path, columns, row):
    """Append ``row`` to a CSV file, writing the header first if the file is new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)

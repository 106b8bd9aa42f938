"""Reverse diffusive KL (DiKL; He et al., AISTATS 2025): the training algorithm.

A one-shot generator x = f_θ(z) is trained to minimise Σ_t w(t) KL[p_θ * k_t || p * k_t].
Its gradient needs two scores of the noised distributions at x_t = α_t f_θ(z) + σ_t ε:
the model score (a network trained by denoising score matching on generator samples) and
the target score ∇ log p_t(x_t), estimated by the mixed score identity from samples of
the posterior p(x | x_t) ∝ exp(−u(x)) N(x_t | α x, σ² I).  The target enters only
through its reduced energy u and reduced force −∇u (torch twin or live OpenMM forces,
:class:`~openmm_dikl.energy.EnergyAndForce`).

Units: positions in nm, reduced energies u = U/kT (dimensionless), reduced forces in 1/nm.
The settings are a :class:`~openmm_dikl.dikl.config.DiKLConfig`; the loop of
:meth:`DiKLTrainer.train` and its files are in :mod:`openmm_dikl.dikl.loop`.
"""
import logging
import math
import time

import numpy as np
import torch

from .. import systems
from ..energy import EnergyAndForce, as_energy
from ..geometry import remove_mean
from ..nn import build_model
from ..seeding import derived_seed
from . import distributed as _dist
from .checkpoints import (load_networks, load_starting_networks, read_trainer_checkpoint,
                          trainer_state, write_checkpoint)
from .config import DiKLConfig
from .loop import RunFolder, run_iterations
from .diffusion import (VPSchedule, clip_per_particle, dikl_surrogate_loss, dsm_loss,
                        level_weights, mixed_score_identity, model_score, perturb)
from .optimisation import (guarded_step, learning_rate_factor, set_learning_rate,
                           update_weight_average, weight_average)
from .posterior import PosteriorSampler
from .selection import check_selection
from .spaces import check_model_shapes, diffusion_space

__all__ = ["DiKLTrainer"]

logger = logging.getLogger(__name__)


class DiKLTrainer:
    """Trains a one-shot generator on a Boltzmann target by reverse diffusive KL.

    Parameters
    ----------
    target : TargetSystem or target-like object
        Needs ``name``, ``n_particles``, ``spatial_dim`` and, when
        ``config.schedule.centre`` is None, ``translation_invariant``.  A target-like
        object that is no :class:`~openmm_dikl.systems.TargetSystem` needs
        ``energy_and_force``.
    generator : torch.nn.Module
        ``generator.sample(n, generator=torch.Generator) -> (n, n_particles, spatial_dim)``
        in nm, differentiable w.r.t. its parameters.
    score_model : torch.nn.Module
        ``score_model(x_t, t) -> (B, n, d)`` with t float (B,) in (0, 1]; the output is
        the noise prediction ε̂ (or the score, see ``schedule.parameterization``).
    config : DiKLConfig, optional
        Default ``DiKLConfig()``.
    eval_fn : callable, optional
        ``eval_fn(target, samples) -> dict[str, float]`` run every ``run.eval_every``
        iterations on ``run.eval_samples`` generator samples (nm, float64), e.g.
        :func:`openmm_dikl.analysis.evaluation.evaluation_metrics`.  It draws from its own
        seeded torch.Generator, so evaluating does not change the training trajectory.
    energy_and_force : callable, optional
        The force source, x (B, n, d) nm -> (u (B,), −∇u (B, n, d) 1/nm), float64;
        default ``EnergyAndForce(target, use_bridge=config.run.use_bridge)`` (closed by
        :meth:`close`).
    distributed : bool or None
        Data-parallel training over the default ``torch.distributed`` process group (see
        :mod:`openmm_dikl.dikl.distributed`).  None: yes if a group with more than one
        process is initialised; False: never; True: a group must be initialised.

    Attributes
    ----------
    config : DiKLConfig
        The settings, with ``schedule.centre`` resolved (True/False); this is what
        checkpoints store.
    centre : bool
        Whether the diffusion runs in the zero-centre-of-mass subspace.
    iteration, wall_time, skipped_steps : int, float, int
        Iterations done, training time (s), optimiser steps skipped because of
        non-finite gradients (read-only).
    init_from : str or None
        Trainer or sampler checkpoint the networks were started from
        (:meth:`load_weights`).

    Notes
    -----
    One iteration (:meth:`step`): ``score_steps_per_iter`` DSM steps on generator
    samples (the first iteration of a run adds ``score_warmup_steps``), then one
    generator step with the surrogate of
    :func:`~openmm_dikl.dikl.diffusion.dikl_surrogate_loss`: draw x = f_θ(z) and levels t
    uniformly, x_t = α_t x + σ_t ε, the target score at x_t by the mixed score identity
    from :class:`~openmm_dikl.dikl.posterior.PosteriorSampler` samples (target forces
    enter only there), the model score from the score network.  All randomness comes
    from one torch.Generator seeded with ``config.seed`` and saved in checkpoints, so a
    resumed run reproduces an uninterrupted one exactly (CPU, same thread count).

    Data-parallel training over N processes (e.g. under torchrun) uses global batches
    split into per-process shares and reproduces the single-process step on the global
    batch; see :mod:`openmm_dikl.dikl.distributed`.
    """

    def __init__(self, target, generator, score_model, config=None, eval_fn=None,
                 energy_and_force=None, distributed=None):
        config = DiKLConfig() if config is None else config
        if not isinstance(config, DiKLConfig):
            raise TypeError(f"config must be a DiKLConfig (see DiKLConfig.from_dict), got "
                            f"{type(config).__name__}")
        self.target, self.generator, self.score_model = target, generator, score_model
        self.eval_fn = eval_fn
        if energy_and_force is None:
            self.energy_and_force = EnergyAndForce(target, use_bridge=config.run.use_bridge)
            self._owns_forces = True
        else:  # an Energy or a plain callable (x -> (u, -grad u)); the caller closes it
            self.energy_and_force, _ = as_energy(energy_and_force)
            self._owns_forces = False
        centre = config.schedule.centre
        if centre is None:
            centre = config.schedule.space == "cartesian" and bool(target.translation_invariant)
        self.config = cfg = config.replace(centre=bool(centre))
        #: Where the noise acts (:mod:`openmm_dikl.dikl.spaces`).
        self.space = diffusion_space(target, cfg.schedule, cfg.schedule.centre)
        check_model_shapes(target, generator, score_model, self.space)
        check_selection(self)
        self.schedule = VPSchedule(cfg.schedule.n_levels, cfg.schedule.beta_min,
                                   cfg.schedule.beta_max)
        post = cfg.posterior
        self.posterior = PosteriorSampler(
            self.space.energy(self.energy_and_force), n_importance=post.n_importance,
            n_ais_steps=post.n_ais_steps, n_mala_steps=post.n_mala_steps,
            n_posterior=post.n_posterior, acceptance_range=post.acceptance_range,
            adapt_factor=post.step_adapt_factor, centre=self.centre,
            average_last=post.average_last, jumps=self.space.jumps,
            jump_every=post.jump_every)
        self._init_distributed(distributed)
        self.rng = torch.Generator().manual_seed(derived_seed(cfg.seed, self.rank))
        opt = cfg.optimisation
        self.opt_generator = torch.optim.Adam(generator.parameters(), lr=opt.lr_generator)
        self.opt_score = torch.optim.Adam(score_model.parameters(), lr=opt.lr_score)
        #: Moving average of the generator weights (None without ``ema_decay``).
        self.generator_ema = None if opt.ema_decay is None else weight_average(generator)
        ratio2 = (self.schedule.sigmas / self.schedule.alphas) ** 2
        #: MALA step size (nm²) of each noise level, adapted across iterations.
        self.step_sizes = post.mala_init_step * ratio2.clamp(max=1.0)
        self._iteration, self._wall_time, self._skipped_steps = 0, 0.0, 0
        self.init_from = None
        #: Best ``run.select_checkpoint`` result so far, {"rule", "score", "iteration"}.
        self.selection_best = None
        logger.info("DiKL on %s: centre=%s, force source=%s", target.name, self.centre,
                    "OpenMM bridge" if self._owns_forces and self.energy_and_force.uses_bridge
                    else "torch" if self._owns_forces else "the caller's energy")

    def _init_distributed(self, distributed):
        """Rank, world size and the DDP wrappers of the networks (None when alone)."""
        if distributed and not _dist.is_initialized():
            raise ValueError("distributed=True needs an initialised torch.distributed process "
                             "group (see openmm_dikl.dikl.distributed.init_from_env)")
        #: Processes training together and the rank of this one (1 and 0 when alone).
        self.world_size = _dist.world_size() if distributed is not False else 1
        self.rank = _dist.rank() if self.world_size > 1 else 0
        self._generator_train = self._score_train = None
        if self.world_size > 1:
            opt = self.config.optimisation
            smallest = min(v for v in (opt.batch_size, opt.score_batch_size,
                                       opt.score_samples_per_iter) if v is not None)
            if smallest < self.world_size:
                raise ValueError(f"every DiKL batch needs at least one sample per process: "
                                 f"{smallest} samples cannot be split over "
                                 f"{self.world_size} processes")
            self._generator_train = _dist.data_parallel(_dist.SampleModule(self.generator))
            self._score_train = _dist.data_parallel(self.score_model)

    @classmethod
    def from_recipe(cls, recipe, target=None, **kwargs):
        """The trainer a recipe describes (see :mod:`openmm_dikl.dikl.recipes`).

        Parameters
        ----------
        recipe : dict
            ``{"system", "generator", "score_model", "dikl"}``: model configs of
            :func:`openmm_dikl.nn.build_model` and DiKL settings in either layout of
            :meth:`DiKLConfig.from_dict`.
        target : TargetSystem, optional
            Default ``openmm_dikl.systems.get(recipe["system"])``.
        **kwargs
            Passed to the constructor (``eval_fn``, ``distributed``, ...).
        """
        if target is None:
            target = systems.get(recipe["system"])
        return cls(target, build_model(recipe["generator"]), build_model(recipe["score_model"]),
                   DiKLConfig.from_dict(recipe["dikl"]), **kwargs)

    # ------------------------------------------------------------------ state
    @property
    def centre(self):
        """Whether the diffusion runs in the zero-centre-of-mass subspace."""
        return self.config.schedule.centre

    @property
    def iteration(self):
        """Iterations done (int)."""
        return self._iteration

    @property
    def wall_time(self):
        """Training time spent in :meth:`step` so far (s), over every resumed part."""
        return self._wall_time

    @property
    def skipped_steps(self):
        """Optimiser steps skipped because of non-finite gradients (both networks)."""
        return self._skipped_steps

    @property
    def sampling_generator(self):
        """The network to draw samples from: the weight average if kept, else the generator."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def learning_rate_factor(self, iteration=None):
        """Factor (0, 1] applied to both learning rates at ``iteration`` (default: the next)."""
        return learning_rate_factor(self._iteration if iteration is None else iteration,
                                    self.config.run.n_iterations,
                                    self.config.optimisation.lr_decay)

    def _set_learning_rates(self):
        factor = self.learning_rate_factor()
        set_learning_rate(self.opt_generator, self.config.optimisation.lr_generator * factor)
        set_learning_rate(self.opt_score, self.config.optimisation.lr_score * factor)

    def _update_ema(self):
        if self.generator_ema is not None:
            update_weight_average(self.generator_ema, self.generator,
                                  self.config.optimisation.ema_decay)

    def _update(self, module, optimizer):
        """Clip and apply the gradients of ``module``; skip the step if any is not finite.

        Returns True if the parameters were updated.
        """
        if guarded_step(module, optimizer, self.config.optimisation.grad_clip):
            return True
        self._skipped_steps += 1
        log = logger.warning if self._skipped_steps in (1, 10, 100, 1000) else logger.debug
        log("iteration %d: non-finite %s gradient, step skipped (%d so far)",
            self._iteration + 1, type(module).__name__, self._skipped_steps)
        return False

    # ------------------------------------------------------------------ batches
    def _local(self, n):
        """This process's share of a global batch of n (n itself for a single process)."""
        return n if self.world_size == 1 else _dist.share(n, self.rank, self.world_size)

    def _loss_scale(self, n_local, n_global):
        """Weight of a local mean loss so that averaging over processes gives the global mean."""
        return n_local * self.world_size / n_global

    def _draw(self, n, train=False):
        """n generator samples as the diffusion space's y (:meth:`CartesianSpace.encode`:
        x / c, centred if the run is; :meth:`InternalSpace.encode`: standardised z).

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
        return self.space.encode(x)

    # ------------------------------------------------------------------ score network
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
            Detached generator samples (units of ``coordinate_scale``) to draw the batch
            from (a random subset of ``score_batch_size``, or all of them if N is not
            larger); default: fresh generator samples.

        Returns
        -------
        torch.Tensor
            Scalar loss (dimensionless).  Distributed: of this process's share, weighted so
            that the gradient averaged over the processes is that of the global batch (call
            ``backward`` on every process).
        """
        opt = self.config.optimisation
        n_global = opt.score_batch_size or opt.batch_size
        n = self._local(n_global)
        if pool is None:
            with torch.no_grad():
                x0 = self._draw(n)
        elif len(pool) > n:
            x0 = pool[torch.randperm(len(pool), generator=self.rng)[:n]]
        else:
            x0, n = pool, len(pool)
            n_global = (opt.score_samples_per_iter if self.world_size > 1 and
                        opt.score_samples_per_iter else n * self.world_size)
        t_index = self.schedule.sample_levels(n, self.rng, opt.min_level)
        model = self.score_model if self._score_train is None else self._score_train
        loss = dsm_loss(model, x0, self.schedule, t_index, self.rng, self.centre,
                        opt.weighting, self.config.schedule.parameterization)
        if self.world_size > 1:
            loss = loss * self._loss_scale(n, n_global)
        return loss

    # ------------------------------------------------------------------ generator
    def _scores(self, x_t, t_index, x0):
        """Target score (mixed score identity on posterior samples) and model score at
        x_t (B, n, d) made from x0, both float64; adapts the per-level MALA step sizes."""
        alpha, sigma = self.schedule.alpha(t_index), self.schedule.sigma(t_index)
        post = self.posterior.sample(x_t, alpha, sigma, self.step_sizes, self.rng,
                                     groups=t_index, start=x0.detach()
                                     if self.config.posterior.warm_start else None)
        self.step_sizes = (post.step_size if self.world_size == 1 else
                           _dist.weighted_geometric_mean(
                               post.step_size, torch.bincount(t_index, minlength=len(
                                   post.step_size)), self.step_sizes))
        x_t64 = x_t.to(torch.float64)
        s_target = mixed_score_identity(x_t64, post.samples, post.forces, alpha, sigma,
                                        post.weights)
        with torch.no_grad():
            s_model = model_score(self.score_model, x_t, t_index, self.schedule,
                                  self.config.schedule.parameterization).to(torch.float64)
        return s_target, s_model, post

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
        opt = self.config.optimisation
        n = self._local(opt.batch_size)
        x = self._draw(n, train=True)
        if not x.requires_grad:
            raise RuntimeError("generator.sample must keep autograd (do not wrap it in "
                               "torch.no_grad) so DiKL can differentiate x_t")
        t_index = self.schedule.sample_levels(n, self.rng, opt.min_level)
        x_t, _ = perturb(x, self.schedule, t_index, self.rng, self.centre)
        s_target, s_model, post = self._scores(x_t.detach(), t_index, x)
        weights = level_weights(self.schedule, t_index, opt.generator_weighting or opt.weighting)
        # Samples whose scores overflow (far outliers of a young generator) carry no usable
        # gradient: drop them instead of letting one inf poison the whole batch.
        finite = (torch.isfinite(s_model).flatten(1).all(1)
                  & torch.isfinite(s_target).flatten(1).all(1))
        if not finite.all():
            keep = finite[:, None, None]
            s_model = torch.where(keep, s_model, torch.zeros_like(s_model))
            s_target = torch.where(keep, s_target, torch.zeros_like(s_target))
        # the gradient uses the clipped score difference, the logged gap the unclipped one
        loss_target = (s_target if opt.score_clip is None else
                       s_model - clip_per_particle(s_model - s_target, opt.score_clip))
        loss = dikl_surrogate_loss(x_t, s_model, loss_target, weights)
        gaps = (weights * (s_model - s_target).pow(2).flatten(1).sum(1))[finite]
        sums = torch.stack([gaps.sum(), finite.sum(), post.acceptance.sum(),
                            post.ess_fraction.sum(), torch.tensor(n)]).to(torch.float64)
        if self.world_size > 1:
            loss = loss * self._loss_scale(n, opt.batch_size)
            sums = _dist.all_reduce_mean(sums) * self.world_size
        stats = {"score_gap": float(sums[0] / sums[1]), "acceptance": float(sums[2] / sums[4]),
                 "ess_fraction": float(sums[3] / sums[4]),
                 "n_dropped": int(round(float(sums[4] - sums[1])))}
        return loss, stats

    # ------------------------------------------------------------------ one iteration
    def step(self):
        """One DiKL iteration (score steps, then a generator step); returns its log row
        (the columns of :data:`~openmm_dikl.dikl.training_log.LOG_COLUMNS`)."""
        start = time.perf_counter()
        evaluations = self.posterior.n_evaluations
        opt = self.config.optimisation
        self._set_learning_rates()
        pool = None
        if opt.score_samples_per_iter is not None and opt.score_steps_per_iter:
            with torch.no_grad():
                pool = self._draw(self._local(opt.score_samples_per_iter))
        n_score_steps = opt.score_steps_per_iter
        if self._iteration == 0:  # fit the score network to the starting generator first
            n_score_steps += opt.score_warmup_steps
        dsm = [self.score_step(pool) for _ in range(n_score_steps)]
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
        self._iteration += 1
        self._wall_time += time.perf_counter() - start
        trained = self.step_sizes[opt.min_level:]  # the levels drawn
        return {"iteration": self._iteration, "dsm_loss": dsm_mean,
                "score_gap": stats["score_gap"], "acceptance": stats["acceptance"],
                "step_size_min": float(trained.min()), "step_size_max": float(trained.max()),
                "ess_fraction": stats["ess_fraction"], "energy_evaluations": evaluations,
                "n_dropped": stats["n_dropped"], "skipped_steps": self._skipped_steps,
                "wall_time_s": self._wall_time}

    def evaluation_samples(self):
        """``run.eval_samples`` samples (nm, float64) of :attr:`sampling_generator`, drawn
        from a torch.Generator seeded by the seed and iteration, not the training RNG."""
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self._iteration)
        with torch.no_grad():
            x = self.sampling_generator.sample(self.config.run.eval_samples, generator=gen)
        return (remove_mean(x) if self.centre else x).to(torch.float64)

    def evaluate(self, samples=None):
        """``eval_fn`` on ``samples`` (default :meth:`evaluation_samples`).

        Returns the scalar entries of its result as a dict of floats (lists are dropped).
        """
        if self.eval_fn is None:
            return {}
        x = self.evaluation_samples() if samples is None else samples
        metrics = self.eval_fn(self.target, x)
        return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """Everything needed to continue the run bit for bit (a plain dict; see
        :func:`~openmm_dikl.dikl.checkpoints.trainer_state`).

        Distributed: collective (call it on every process); ``rng_states`` holds every
        rank's generator state, ``rng_state`` rank 0's.
        """
        return trainer_state(self, _dist.all_gather_objects(self.rng.get_state())
                             if self.world_size > 1 else [self.rng.get_state()])

    def save_checkpoint(self, path):
        """Write the training state to ``path`` atomically (temp file, fsync, os.replace).

        Distributed: collective (call it on every process); only rank 0 writes.
        """
        state = self.state_dict()
        if self.rank == 0:
            write_checkpoint(path, state)

    def load_checkpoint(self, path):
        """Restore the training state from ``path`` (to resume the run that wrote it).

        Every setting outside ``config.run`` must equal the checkpoint's
        (:meth:`DiKLConfig.resume_differences`), and the network architectures too.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        CheckpointError
            If it is truncated/corrupt, not a trainer checkpoint, for another system, or
            written with different training settings or architectures.  Nothing is
            loaded then.
        """
        obj = read_trainer_checkpoint(path, self.target, self.config, resume=True)
        load_networks(self, obj, path, optimisers=True)
        states = obj.get("rng_states") or [obj["rng_state"]]
        if self.rank < len(states):
            self.rng.set_state(states[self.rank])
        else:  # more processes than the run that wrote the checkpoint
            self.rng.manual_seed(derived_seed(self.config.seed * 1_000_003 +
                                              int(obj["iteration"]), self.rank))
        self.step_sizes = obj["step_sizes"].to(torch.float64).clone()
        self._iteration = int(obj["iteration"])
        self._wall_time = float(obj["wall_time"])
        self._skipped_steps = int(obj.get("skipped_steps", 0))
        self.init_from = obj.get("init_from")
        self.selection_best = obj.get("selection_best")

    def load_weights(self, path):
        """Start from the networks of another run (fine-tuning with new settings).

        From a trainer checkpoint: the generator, its weight average (a checkpoint
        without one starts the average at its generator) and the score network; the
        ``schedule`` section (what the score network computes) and the architectures
        must equal the checkpoint's (:meth:`DiKLConfig.fine_tune_differences`);
        posterior, optimisation and run settings and the seed may differ.  From a
        sampler checkpoint (``sampler.pt``, a shipped ``systems/checkpoints/*.pt``): the
        generator alone (and the average starts at it); the score network stays fresh,
        so set ``optimisation.score_warmup_steps`` (a warning is logged otherwise).
        Optimisers, learning-rate schedule, iteration count, random state and MALA step
        sizes stay fresh.  The path is kept in :attr:`init_from` and in checkpoints.

        Parameters
        ----------
        path : str or os.PathLike
            A trainer checkpoint (``OUT/checkpoint.pt`` of ``openmm-dikl train``) or a
            sampler checkpoint.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        CheckpointError
            If it is corrupt, not a DiKL checkpoint, for another system or holds networks
            of other architectures, centring or schedule section; nothing is loaded then.
        """
        if not load_starting_networks(self, path) \
                and not self.config.optimisation.score_warmup_steps:
            logger.warning("%s holds no score network: the score network starts "
                           "untrained (set optimisation.score_warmup_steps)", path)
        self.init_from = str(path)

    # ------------------------------------------------------------------ training loop
    def train(self, n_iterations=None, out_dir=None, resume=False, progress=True,
              init_from=None):
        """Train until ``n_iterations`` iterations in total have been done.

        Parameters
        ----------
        n_iterations : int, optional
            Total iteration count to reach (default ``config.run.n_iterations``); a
            resumed run continues from the checkpoint's iteration up to this number.
        out_dir : str or os.PathLike, optional
            Folder for ``checkpoint.pt``, ``log.csv``, ``eval.csv``, ``sampler.pt`` and
            ``best_sampler.pt`` (created if missing).  Without it nothing is written.
        resume : bool
            Continue from ``out_dir/checkpoint.pt``; log rows after the checkpoint's
            iteration (from an interrupted run) are dropped.
        progress : bool
            Show a tqdm progress bar (rank 0 only when distributed).
        init_from : str or os.PathLike, optional
            Trainer or sampler checkpoint whose networks a fresh run starts from (see
            :meth:`load_weights`).  Ignored when resuming: the run's own checkpoint
            already holds the networks.

        Returns
        -------
        list of dict
            The log rows of the iterations run by this call (global averages when
            distributed; evaluation metrics on rank 0 only).

        Raises
        ------
        FileNotFoundError
            ``resume=True`` without an existing ``out_dir/checkpoint.pt``, or a missing
            ``init_from`` file.
        CheckpointError
            The checkpoint (or ``init_from``) is corrupt or does not belong to this target /
            these settings.

        Notes
        -----
        Distributed: call it on every process with the same arguments; only rank 0 writes
        files and runs ``eval_fn``, and every process returns after the files are written.
        """
        total = self.config.run.n_iterations if n_iterations is None else int(n_iterations)
        if resume and out_dir is None:
            raise ValueError("resume=True needs out_dir (where checkpoint.pt lives)")
        if init_from is not None and not resume:  # before anything is written
            self.load_weights(init_from)
            logger.info("networks from %s", init_from)
        folder = None if out_dir is None else RunFolder(out_dir)
        if folder is not None and resume:
            self.load_checkpoint(folder.checkpoint)
            logger.info("resumed %s at iteration %d", folder.checkpoint, self._iteration)
        if folder is not None and self.rank == 0:
            folder.restart_logs(self._iteration if resume else 0)
        rows = run_iterations(self, total, folder, progress)
        if self.world_size > 1:
            _dist.barrier()  # the files exist when any process returns
        return rows

    def close(self):
        """Release the force source (closes an OpenMM bridge the trainer opened)."""
        if self._owns_forces:
            self.energy_and_force.close()

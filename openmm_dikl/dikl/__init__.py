"""Reverse diffusive KL (DiKL; He et al., AISTATS 2025): training one-shot generators.

* :mod:`~openmm_dikl.dikl.config` — :class:`DiKLConfig` and its sections;
* :mod:`~openmm_dikl.dikl.diffusion` — noise schedule, DSM loss, score identities;
* :mod:`~openmm_dikl.dikl.posterior` — the posterior sampler behind the target score;
* :mod:`~openmm_dikl.dikl.trainer` — :class:`DiKLTrainer` (the algorithm);
* :mod:`~openmm_dikl.dikl.optimisation` — learning-rate schedule, guarded steps,
  weight average;
* :mod:`~openmm_dikl.dikl.loop` — the training loop and its output folder;
* :mod:`~openmm_dikl.dikl.selection` — checkpoint selection without validation data;
* :mod:`~openmm_dikl.dikl.training_log` — ``log.csv`` / ``eval.csv``;
* :mod:`~openmm_dikl.dikl.checkpoints` — the checkpoint file format;
* :mod:`~openmm_dikl.dikl.sampler` — trained samplers, :func:`load_sampler`;
* :mod:`~openmm_dikl.dikl.recipes` — bundled recipes and ``openmm-dikl train``;
* :mod:`~openmm_dikl.dikl.distributed` — torch.distributed helpers (torchrun).
"""
from .checkpoints import CheckpointError, check_checkpoint
from .config import DiKLConfig
from .posterior import PosteriorSample, PosteriorSampler
from .sampler import BUNDLED_SAMPLERS, NeuralSampler, load_sampler, save_sampler
from .trainer import DiKLTrainer

__all__ = ["DiKLConfig", "DiKLTrainer", "PosteriorSampler", "PosteriorSample",
           "NeuralSampler", "CheckpointError", "load_sampler", "save_sampler",
           "BUNDLED_SAMPLERS", "check_checkpoint"]

"""Reverse diffusive KL (DiKL; He et al., AISTATS 2025): training one-shot generators.

* :mod:`~openmm_dikl.dikl.diffusion` — noise schedule, DSM loss, score identities;
* :mod:`~openmm_dikl.dikl.posterior` — the posterior sampler behind the target score;
* :mod:`~openmm_dikl.dikl.trainer` — :class:`DiKLConfig`, :class:`DiKLTrainer`;
* :mod:`~openmm_dikl.dikl.checkpoints` — checkpoint files, :func:`load_sampler`;
* :mod:`~openmm_dikl.dikl.recipes` — bundled recipes and ``openmm-dikl train``;
* :mod:`~openmm_dikl.dikl.distributed` — torch.distributed helpers (torchrun).
"""
from .checkpoints import (BUNDLED_SAMPLERS, CheckpointError, NeuralSampler, load_sampler,
                          save_sampler)
from .posterior import PosteriorSample, PosteriorSampler
from .trainer import DiKLConfig, DiKLTrainer

__all__ = ["DiKLConfig", "DiKLTrainer", "PosteriorSampler", "PosteriorSample",
           "NeuralSampler", "CheckpointError", "load_sampler", "save_sampler",
           "BUNDLED_SAMPLERS"]

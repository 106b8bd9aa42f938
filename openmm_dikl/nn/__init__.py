"""Neural networks of DiKL: E(n)-equivariant, fully connected and molecular networks.

Two roles share one interface, on configurations ``(batch, n_particles, spatial_dim)``
in nm:

* a **generator** maps latent noise z to a configuration, ``generator(z) -> x``;
  ``generator.sample(n, generator=None)`` draws z itself;
* a **score network** estimates ∇ log p_t of the noised distribution,
  ``score_model(x_t, t) -> (batch, n_particles, spatial_dim)`` in 1/nm, with ``t`` a
  float tensor ``(batch,)`` in [0, 1] (the normalised noise-level index).

Modules: :mod:`~openmm_dikl.nn.base` (shared blocks), :mod:`~openmm_dikl.nn.egnn`,
:mod:`~openmm_dikl.nn.mlp`, :mod:`~openmm_dikl.nn.molecular`,
:mod:`~openmm_dikl.nn.registry` (:func:`build_model` from checkpoint dictionaries).
"""
from .base import atom_type_features, sinusoidal_embedding
from .egnn import EGNN, EGNNGenerator, EGNNLayer, EGNNScore
from .mlp import MLPGenerator, MLPScore
from .molecular import (FrameMLPScore, InternalCoordinateGenerator, PairScore,
                        atom_identity_features, group_frame, quaternion_rotation)
from .registry import build_model, model_config

__all__ = ["EGNNLayer", "EGNN", "EGNNGenerator", "EGNNScore", "MLPGenerator", "MLPScore",
           "InternalCoordinateGenerator", "FrameMLPScore", "PairScore", "build_model",
           "model_config", "atom_type_features", "atom_identity_features",
           "sinusoidal_embedding", "quaternion_rotation", "group_frame"]

"""Rebuild networks from the architecture dictionaries that checkpoints store."""
from .base import Configurable
from .egnn import EGNNGenerator, EGNNScore
from .mlp import MLPGenerator, MLPScore
from .molecular import FrameMLPScore, InternalCoordinateGenerator, PairScore

__all__ = ["build_model", "model_config"]

_MODEL_CLASSES = {cls.__name__: cls for cls in (EGNNGenerator, EGNNScore, MLPGenerator, MLPScore,
                                                InternalCoordinateGenerator, FrameMLPScore,
                                                PairScore)}


def model_config(model):
    """The architecture dictionary of a network built by this module (a deep copy)."""
    if not isinstance(model, Configurable):
        raise ValueError(f"{type(model).__name__} is not an openmm_dikl.nn network")
    return model.config


def build_model(config):
    """Build a freshly initialised network from an architecture dictionary.

    Parameters
    ----------
    config : dict
        ``{"class": name, **constructor_arguments}`` as returned by ``model.config``;
        ``name`` is one of EGNNGenerator, EGNNScore, MLPGenerator, MLPScore,
        InternalCoordinateGenerator, FrameMLPScore, PairScore.

    Returns
    -------
    torch.nn.Module
        The network (float32 default dtype, CPU); load weights with ``load_state_dict``.

    Raises
    ------
    ValueError
        If the class is missing or unknown.
    """
    if not isinstance(config, dict) or "class" not in config:
        raise ValueError("config must be a dict with a 'class' entry (see model.config)")
    name = config["class"]
    if name not in _MODEL_CLASSES:
        raise ValueError(f"unknown model class {name!r}; known: {', '.join(_MODEL_CLASSES)}")
    return _MODEL_CLASSES[name].from_config(config)

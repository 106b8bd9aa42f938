"""Building blocks shared by the networks of :mod:`openmm_dikl.nn`.

Every network works on batched configurations in the dense layout
``(batch, n_particles, spatial_dim)`` with positions in nm.  :class:`Configurable` gives
a network a ``config`` dictionary that rebuilds its architecture
(:func:`openmm_dikl.nn.build_model`), which is how checkpoints store them.
"""
import copy

import numpy as np
import torch
from torch import nn

from ..geometry import remove_mean

__all__ = ["Configurable", "atom_type_features", "sinusoidal_embedding", "activation_class",
           "check_positive_int", "check_score_sizes", "mlp", "latent_sample"]


def activation_class(activation):
    """Resolve an activation given as an ``nn.Module`` class or the name of one in torch.nn."""
    if isinstance(activation, str):
        resolved = getattr(nn, activation, None)
        if not (isinstance(resolved, type) and issubclass(resolved, nn.Module)):
            raise ValueError(f"unknown activation {activation!r}: give an nn.Module class "
                             "or the name of one in torch.nn (e.g. 'SiLU')")
        return resolved
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation
    raise ValueError("activation must be an nn.Module class (e.g. nn.SiLU, not nn.SiLU()) "
                     f"or its name, got {activation!r}")


def check_positive_int(value, name, minimum=1):
    """``value`` as an int, or ValueError naming ``name`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_score_sizes(n_particles, spatial_dim, hidden, n_layers, time_embedding_dim,
                      min_particles=1):
    """Validated (n_particles, spatial_dim, time_embedding_dim) of a score network.

    Raises ValueError naming the argument for non-integers, values below their minimum
    (``min_particles`` particles, 1 for the others, 2 for the embedding) and an odd
    ``time_embedding_dim``.
    """
    n_particles = check_positive_int(n_particles, "n_particles", minimum=min_particles)
    spatial_dim = check_positive_int(spatial_dim, "spatial_dim")
    check_positive_int(hidden, "hidden")
    check_positive_int(n_layers, "n_layers")
    time_embedding_dim = check_positive_int(time_embedding_dim, "time_embedding_dim", 2)
    if time_embedding_dim % 2:
        raise ValueError(f"time_embedding_dim must be even, got {time_embedding_dim}")
    return n_particles, spatial_dim, time_embedding_dim


def mlp(sizes, activation, final_activation=False):
    """``Linear → act → … → Linear`` (optionally ending in an activation)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)


def atom_type_features(topology):
    """One-hot element features for EGNN node inputs.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        Topology whose atoms define the particles, in order.

    Returns
    -------
    numpy.ndarray, shape=(n_atoms, n_elements), dtype=float64
        Row i is the one-hot code of atom i's element, elements sorted by symbol.
        Pass it as ``node_features`` to the EGNN networks; permutation equivariance
        then holds only for permutations within one element.
    """
    symbols = [atom.element.symbol if atom.element is not None else "X"
               for atom in topology.atoms()]
    elements = sorted(set(symbols))
    features = np.zeros((len(symbols), len(elements)))
    features[np.arange(len(symbols)), [elements.index(s) for s in symbols]] = 1.0
    return features


def sinusoidal_embedding(t, dim, max_frequency=1000.0):
    """Sinusoidal embedding of a noise level in [0, 1].

    Parameters
    ----------
    t : torch.Tensor, shape=(batch,)
        Normalised noise level (dimensionless, in [0, 1]).
    dim : int
        Even embedding size.
    max_frequency : float
        Largest angular frequency; frequencies are geometric from 1 to ``max_frequency``.

    Returns
    -------
    torch.Tensor, shape=(batch, dim)
        ``[sin(ω_k t), cos(ω_k t)]`` for k = 0 … dim/2 − 1.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=t.dtype, device=t.device) / max(half - 1, 1)
    omega = max_frequency ** exponent
    angle = t[:, None] * omega
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class Configurable(nn.Module):
    """Mixin giving a network a ``config`` dictionary that rebuilds its architecture."""

    def _store_config(self, **kwargs):
        self._config = {"class": type(self).__name__, **kwargs}

    @property
    def config(self):
        """dict: class name and constructor arguments (JSON-compatible); see :func:`build_model`."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config):
        """Build a freshly initialised network of this class from ``config`` (see ``config``)."""
        config = dict(config)
        name = config.pop("class", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"config describes a {name}, not a {cls.__name__}")
        return cls(**config)

    def _check_input(self, x, name):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.n_particles, self.spatial_dim):
            raise ValueError(f"{name} must have shape (batch, {self.n_particles}, "
                             f"{self.spatial_dim}), got {tuple(x.shape)}")

    def _check_time(self, t, batch):
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"t must be a float tensor of shape ({batch},) in [0, 1], "
                             f"got shape {tuple(t.shape)}")
        return t


def latent_sample(module, n, n_particles, spatial_dim, std, centre, generator):
    """Gaussian latent noise (n, n_particles, spatial_dim) in the module's dtype and device."""
    n = check_positive_int(n, "n")
    reference = next(module.parameters())
    gen_device = generator.device if generator is not None else reference.device
    z = torch.randn((n, n_particles, spatial_dim), generator=generator,
                    dtype=reference.dtype, device=gen_device).to(reference.device)
    if centre:
        z = remove_mean(z)
    return std * z



"""Private input checks shared by the metric modules (numpy float64 out, ``ValueError`` in).

Positions come in as numpy, torch or an ``openmm.unit.Quantity`` and leave as float64
numpy arrays in nm; scalar series (energies, distances) and angles likewise.
"""
import numpy as np
import torch

from ..units import as_nm

__all__ = []


def samples(x, name, ndim=3):
    """Samples as float64 numpy, shape (batch, n, d) (or (batch, D) for ``ndim=2``), in nm.

    Raises
    ------
    ValueError
        Wrong number of dimensions, an empty array, NaN or inf.
    """
    array = as_nm(x, name)
    if ndim == 3 and array.ndim == 2:
        raise ValueError(f"{name} must have shape (n_samples, n_particles, spatial_dim), got "
                         f"{array.shape}; add the particle axis, e.g. x[:, None, :]")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains inf")
    return array


def as_float_array(u):
    """numpy float64 view of an array-like or a (detached, CPU) torch tensor."""
    if isinstance(u, torch.Tensor):
        u = u.detach().cpu().to(torch.float64).numpy()
    return np.asarray(u, dtype=np.float64)


def values(u, name, allow_inf=False):
    """A non-empty 1-D float64 array of scalar values (energies, distances, angles).

    Raises
    ------
    ValueError
        Not 1-D, empty, NaN, or inf unless ``allow_inf``.
    """
    array = as_float_array(u)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    if not allow_inf and not np.isfinite(array).all():
        raise ValueError(f"{name} contains inf")
    return array


def centred(x):
    """Configurations (batch, n, d) minus their (unweighted) centroids."""
    return x - x.mean(axis=1, keepdims=True)

"""Unit conventions and conversion helpers.

openmm_dikl uses OpenMM's units at every OpenMM-facing boundary (nm, ps, kJ/mol, K)
and dimensionless *reduced* energies u = U / kT inside the samplers.  Positions are
always in nm.  Public functions accept an :class:`openmm.unit.Quantity` or a bare
number in the documented default unit; the helpers here do that normalisation once.
"""
import numpy as np
import torch
from openmm import unit

__all__ = ["MOLAR_GAS_CONSTANT", "REDUCED_TEMPERATURE", "as_kelvin", "as_nm", "kt_kjmol",
           "check_positions"]

#: Molar gas constant R in kJ/(mol K).
MOLAR_GAS_CONSTANT = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)

#: Temperature (K) at which kT = 1 kJ/mol: the papers' dimensionless units mapped to OpenMM.
REDUCED_TEMPERATURE = 1.0 / MOLAR_GAS_CONSTANT


def as_kelvin(temperature):
    """Temperature as a float in K.

    Parameters
    ----------
    temperature : openmm.unit.Quantity or float
        Quantity compatible with kelvin, or a bare number in K.

    Returns
    -------
    float
        Temperature in K.

    Raises
    ------
    ValueError
        If the temperature is not finite and positive.
    """
    value = temperature.value_in_unit(unit.kelvin) if unit.is_quantity(temperature) else float(temperature)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be finite and positive, got {value} K")
    return value


def kt_kjmol(temperature):
    """Thermal energy kT in kJ/mol for a temperature (Quantity or float in K)."""
    return MOLAR_GAS_CONSTANT * as_kelvin(temperature)


def as_nm(value, name="value"):
    """A length (scalar or array) as float64 numpy in nm.

    Parameters
    ----------
    value : openmm.unit.Quantity, numpy.ndarray, torch.Tensor or float
        Quantity compatible with nanometer, or bare numbers in nm.
    name : str
        Name used in error messages.
    """
    if unit.is_quantity(value):
        value = value.value_in_unit(unit.nanometer)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric (nm), got {type(value).__name__}") from err


def check_positions(positions, n_particles, spatial_dim, name="positions", allow_single=True):
    """Validate a batch of positions and return it as float64 numpy of shape (batch, n, d).

    Parameters
    ----------
    positions : array-like, torch.Tensor or openmm.unit.Quantity, shape=(batch, n_particles, spatial_dim)
        Positions in nm.  A single configuration (n_particles, spatial_dim) is
        accepted when ``allow_single`` and returned with a batch axis of 1.
    n_particles, spatial_dim : int
        Expected particle count and spatial dimension.

    Raises
    ------
    ValueError
        On a wrong shape, an empty batch, or NaN/inf entries (naming the first bad sample).
    """
    x = as_nm(positions, name)
    if x.ndim == 2 and allow_single:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (n_particles, spatial_dim):
        raise ValueError(f"{name} must have shape (batch, {n_particles}, {spatial_dim}) in nm, "
                         f"got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    bad = ~np.isfinite(x).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf in sample {int(np.flatnonzero(bad)[0])} "
                         f"({int(bad.sum())} bad sample(s) in the batch)")
    return x

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
           "check_positions", "check_bond_lengths", "BOND_LENGTH_RANGE", "as_nm_tensor",
           "check_samplable"]

#: Plausible range (nm) of the median bond length of a molecule; outside it the positions
#: are almost surely in the wrong unit (Å passed as nm gives a median of 1-1.5).
BOND_LENGTH_RANGE = (0.05, 0.5)

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
        If the temperature is not a finite positive number.
    TypeError
        If it is a Quantity in a unit other than a temperature.
    """
    if unit.is_quantity(temperature):
        if not temperature.unit.is_compatible(unit.kelvin):
            raise TypeError(f"temperature must be compatible with kelvin, got a Quantity in "
                            f"{temperature.unit}")
        value = float(temperature.value_in_unit(unit.kelvin))
    else:
        try:
            value = float(temperature)
        except (TypeError, ValueError) as err:
            raise ValueError(f"temperature must be a number in K or a Quantity, got "
                             f"{type(temperature).__name__}") from err
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

    Raises
    ------
    TypeError
        A Quantity whose unit is not a length, or complex or boolean numbers.
    ValueError
        Values that are not numbers.
    """
    if unit.is_quantity(value):
        if not value.unit.is_compatible(unit.nanometer):
            raise TypeError(f"{name} must be a length (nm), got a Quantity in {value.unit}")
        value = value.value_in_unit(unit.nanometer)
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers in nm, got a {value.dtype} tensor")
        return value.detach().cpu().to(torch.float64).numpy()
    array = np.asarray(value) if not isinstance(value, (str, bytes)) else None
    if array is not None and (np.iscomplexobj(array) or array.dtype == bool):
        raise TypeError(f"{name} must be real numbers in nm, got dtype {array.dtype}")
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


def check_bond_lengths(xyz, bonds, name="positions"):
    """Refuse positions whose bond lengths show they are not in nm (e.g. Å passed as nm).

    Parameters
    ----------
    xyz : numpy.ndarray, shape=(batch, n_particles, 3)
        Positions, supposedly in nm.
    bonds : numpy.ndarray of int, shape=(n_bonds, 2)
        Bonded particle pairs (e.g. from the topology); nothing is checked without bonds.
    name : str
        Name used in error messages.

    Raises
    ------
    ValueError
        If the median bond length of a configuration lies outside
        :data:`BOND_LENGTH_RANGE` (0.05-0.5 nm; real bonds are 0.07-0.25 nm).
    """
    bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
    if len(bonds) == 0 or len(xyz) == 0:
        return
    low, high = BOND_LENGTH_RANGE
    # cheap pre-test (a valid batch costs ~10 µs): an out-of-range median needs at least
    # half of a configuration's bonds out of range
    delta = xyz.take(bonds[:, 0], axis=1) - xyz.take(bonds[:, 1], axis=1)
    squared = np.einsum("bij,bij->bi", delta, delta)
    if np.count_nonzero((squared < low * low) | (squared > high * high), axis=1).max() \
            < len(bonds) / 2.0:
        return
    lengths = np.linalg.norm(xyz[:, bonds[:, 0]] - xyz[:, bonds[:, 1]], axis=-1)
    median = np.median(lengths, axis=1)
    bad = np.flatnonzero((median < low) | (median > high))
    if len(bad):
        value = float(median[bad[0]])
        hint = ("about 10x too long: are the positions in angstrom? Pass nm, or a Quantity "
                "such as positions * unit.angstrom" if value > high else
                "far too short: are the positions in a unit larger than nm?")
        raise ValueError(f"{name}: median bond length {value:.3g} nm in sample {int(bad[0])} "
                         f"is outside the plausible {low}-{high} nm, {hint}")


def as_nm_tensor(x, name="x0"):
    """Tensor, array or Quantity (nm) as a float64 torch tensor.

    Raises TypeError / ValueError naming ``name`` for non-length Quantities, complex,
    boolean or non-numeric values (see :func:`as_nm`).
    """
    if not isinstance(x, torch.Tensor) or unit.is_quantity(x):
        x = np.ascontiguousarray(as_nm(x, name))
    elif x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers in nm, got a {x.dtype} tensor")
    return torch.as_tensor(x, dtype=torch.float64)


def check_samplable(system, what="openmm_dikl samplers", allow_constraints=False):
    """Raise ValueError if ``system`` has constraints, virtual sites or a barostat.

    DiGS and DiKL sample every Cartesian degree of freedom: a constraint would be
    ignored (a silently wrong distribution) and a virtual site is not a free coordinate.
    Periodic Systems are sampled in their default box, so a barostat (NPT) is refused
    rather than silently ignored.  ``allow_constraints=True`` skips the constraint check,
    for samplers that move on the constraint manifold (Langevin, parallel tempering, the
    OpenMM torsional DiGS move).
    """
    n_constraints = system.getNumConstraints()
    if n_constraints and not allow_constraints:
        raise ValueError(f"the System has {n_constraints} constraints, which {what} cannot "
                         "handle; build it with constraints=None (and rigidWater=False)")
    virtual = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    if virtual:
        raise ValueError(f"the System has {len(virtual)} virtual sites (first: particle "
                         f"{virtual[0]}), which {what} cannot handle")
    barostats = [type(f).__name__ for f in system.getForces() if "Barostat" in type(f).__name__]
    if barostats:
        raise ValueError(f"the System has a {barostats[0]}, but {what} sample at fixed volume "
                         "(periodic Systems are evaluated in their default box); remove the "
                         "barostat")

"""Target systems: each an ``openmm.System`` plus a torch reduced energy.

>>> from openmm_dikl import systems
>>> sorted(n for n in systems.names() if n.startswith("alanine"))[:2]
['alanine_dipeptide_ani', 'alanine_dipeptide_implicit']
>>> dw4 = systems.get("dw4")
>>> dw4.n_particles, dw4.spatial_dim
(4, 2)
"""
from functools import partial

from .alanine import ANIPotential, alanine_dipeptide
from .base import TargetSystem, shipped_path
from .particles import (double_well_4, lennard_jones, many_well_32, many_well_positive_weight,
                        mixture_of_gaussians_40)
from .peptides import ace_ala3_nme
from .user import from_openmm

__all__ = ["TargetSystem", "names", "get", "from_openmm", "shipped_path", "ANIPotential",
           "many_well_positive_weight"]

_REGISTRY = {
    "alanine_dipeptide_vacuum": partial(alanine_dipeptide, "vacuum"),
    "alanine_dipeptide_implicit": partial(alanine_dipeptide, "implicit"),
    "alanine_dipeptide_ani": partial(alanine_dipeptide, "ani"),
    "ace_ala3_nme_implicit": partial(ace_ala3_nme, "hbonds"),
    "ace_ala3_nme_implicit_unconstrained": partial(ace_ala3_nme, None),
    "dw4": double_well_4,
    "lj13": partial(lennard_jones, 13),
    "lj55": partial(lennard_jones, 55),
    "mw32": many_well_32,
    "mog40": mixture_of_gaussians_40,
}


def names():
    """Names of the bundled target systems (list of str)."""
    return list(_REGISTRY)


def get(name):
    """Build the bundled target system ``name``.

    Raises
    ------
    KeyError
        If ``name`` is not a bundled system (the message lists the valid names).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown system {name!r}; bundled systems are: {', '.join(names())}")
    return _REGISTRY[name]()

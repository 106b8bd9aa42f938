"""The registry of evaluation protocols and the result types they return.

A protocol is a function ``protocol(target, x, n_repeats, seed, floors) -> Evaluation``
registered under a name with :func:`register_protocol` (the pattern of mdtraj's format
registry); a :class:`~openmm_dikl.systems.TargetSystem` names its protocol in
``evaluation``, and :func:`get_protocol` looks it up.  The bundled protocols are
registered by :mod:`openmm_dikl.analysis.evaluation`.

An :class:`Evaluation` holds :class:`Metric` rows (value, spread over repeats, noise floor,
reference value), notes and a figure factory; it renders itself as a flat dict
(:meth:`Evaluation.as_dict`) and as a text table (:meth:`Evaluation.table`).
"""
import dataclasses
from typing import Callable, List, Optional

__all__ = ["Metric", "Evaluation", "PROTOCOLS", "DEFAULT_PROTOCOL", "register_protocol",
           "get_protocol"]

#: Registered protocols: name -> function(target, x, n_repeats, seed, floors) -> Evaluation.
PROTOCOLS = {}
#: Protocol of targets whose ``evaluation`` is None.
DEFAULT_PROTOCOL = "energies"


@dataclasses.dataclass
class Metric:
    """One row of an evaluation.

    Attributes
    ----------
    key : str
        Name in :meth:`Evaluation.as_dict` (e.g. ``"w2"``); the spread, floor and
        reference appear there as ``<key>_std``, ``<key>_floor``, ``reference_<key>``.
    label : str
        Table label with the unit (e.g. ``"W2 (nm)"``, ``"KL phi (nats)"``).
    value : float
        The samples' value.
    std : float, optional
        Sample standard deviation over the protocol's repeats.
    floor : float, optional
        Noise floor: the value exact samples score on the same protocol and size.
    reference : float, optional
        The same statistic of the reference (for statistics of the distribution, such as
        p(φ > 0) or a mean energy, where a floor has no meaning).
    """

    key: str
    label: str
    value: float
    std: Optional[float] = None
    floor: Optional[float] = None
    reference: Optional[float] = None


@dataclasses.dataclass
class Evaluation:
    """What a protocol reports for one sample set.

    Attributes
    ----------
    metrics : list of Metric
        The rows, in table order.
    notes : list of str
        Lines printed under the table (sample sizes, bins, where the reference comes from).
    figures : callable, optional
        ``figures(title) -> list of (suffix, matplotlib.figure.Figure)``; drawn only when
        plots are asked for (``<prefix><suffix>`` is written).
    """

    metrics: List[Metric]
    notes: List[str] = dataclasses.field(default_factory=list)
    figures: Optional[Callable] = None

    def as_dict(self):
        """The metrics as a flat dict of str -> float (see :attr:`Metric.key`)."""
        out = {}
        for m in self.metrics:
            out[m.key] = float(m.value)
            for name, extra in ((f"{m.key}_std", m.std), (f"{m.key}_floor", m.floor),
                                (f"reference_{m.key}", m.reference)):
                if extra is not None:
                    out[name] = float(extra)
        return out

    def table(self):
        """The metrics as a text table: value ± std, noise floor and reference columns."""
        lines = [f"{'metric':<28s} {'value':>11s} {'± std':>10s} {'noise floor':>12s} "
                 f"{'reference':>12s}"]
        for m in self.metrics:
            std = f"± {_number(m.std, 0)}" if m.std is not None else ""
            lines.append(f"{m.label:<28s} {_number(m.value, 11)} {std:>10s} "
                         f"{_number(m.floor, 12)} {_number(m.reference, 12)}".rstrip())
        return "\n".join(lines + [f"  {note}" for note in self.notes])


def _number(value, width):
    """``value`` right-aligned in ``width`` characters (blank for None)."""
    if value is None:
        return " " * width
    value = float(value)
    text = f"{value:.4g}" if value != 0 and not 1e-3 <= abs(value) < 1e4 else f"{value:.4f}"
    return f"{text:>{width}s}"


def register_protocol(name):
    """Decorator registering ``function(target, x, n_repeats, seed, floors)`` as ``name``.

    The function gets float64 samples ``x`` (n_samples, n_particles, spatial_dim) in nm
    (at least 2) and returns an :class:`Evaluation`; ``floors=False`` may skip the noise
    floors.  A system uses it by naming it in ``TargetSystem(evaluation=name)``.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """
    def decorator(function):
        if name in PROTOCOLS:
            raise ValueError(f"evaluation protocol {name!r} is already registered")
        PROTOCOLS[name] = function
        return function
    return decorator


def get_protocol(target):
    """The registered protocol function of ``target`` (``"energies"`` if it names none).

    Raises
    ------
    KeyError
        If the target names an unregistered protocol (the message lists the known ones).
    """
    name = target.evaluation or DEFAULT_PROTOCOL
    if name not in PROTOCOLS:
        raise KeyError(f"{target.name}: unknown evaluation protocol {name!r}; registered: "
                       f"{', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]

"""One energy protocol for every sampler and trainer: reduced energy and force, batched.

An :class:`Energy` is called on positions x of shape ``(batch, ...)`` (nm for molecular
targets) and returns ``(u, f)``: reduced energies u = U/kT, shape ``(batch,)``
(dimensionless), and reduced forces f = −∇u, the shape of x (1/nm), both float64 torch.
It counts the configurations it evaluates (``n_evaluations``) and is closed when done
(``close()`` or a ``with`` block), which releases an OpenMM bridge if it holds one.

* :class:`EnergyAndForce` — a :class:`~openmm_dikl.systems.TargetSystem`: autograd on
  its torch twin, or OpenMM forces through :class:`~openmm_dikl.bridge.OpenMMBridge`;
* :class:`FunctionEnergy` — any callable ``x -> (u, f)``;
* :class:`TransformedEnergy` — the density of a transformed variable y = T(x);
* :class:`ScaledEnergy` — the density of y = x / c.

:func:`as_energy` turns a target, an Energy or a plain callable into an Energy.

>>> import torch
>>> from openmm_dikl.energy import as_energy
>>> energy, owned = as_energy(lambda x: (0.5 * (x ** 2).sum(-1), -x))
>>> u, f = energy(torch.ones(3, 2, dtype=torch.float64))
>>> u.tolist(), energy.n_evaluations
([1.0, 1.0, 1.0], 3)
"""
import torch

from .systems import TargetSystem
from .units import as_nm_tensor

__all__ = ["Energy", "EnergyAndForce", "FunctionEnergy", "TransformedEnergy", "ScaledEnergy",
           "as_energy"]


class Energy:
    """Base class of the energy protocol: ``energy(x) -> (u (batch,), −∇u)`` in reduced units.

    Subclasses implement :meth:`_evaluate`; :meth:`__call__` converts x to float64 and
    counts the configurations in ``n_evaluations`` (one energy + force each).

    Attributes
    ----------
    target : TargetSystem or None
        The system whose energy this is, where there is one (:class:`EnergyAndForce`).
    """

    target = None

    def __init__(self):
        self._n_evaluations = 0

    @property
    def n_evaluations(self):
        """Configurations evaluated so far (int; one energy + force each)."""
        return self._n_evaluations

    def __call__(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        self._n_evaluations += int(x.shape[0])
        return self._evaluate(x)

    def _evaluate(self, x):
        raise NotImplementedError

    def close(self):
        """Release what the energy holds (an OpenMM bridge); idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False


class EnergyAndForce(Energy):
    """Reduced energy and force of a :class:`~openmm_dikl.systems.TargetSystem`, batched.

    Calling it with positions x of shape (batch, n_particles, spatial_dim) in nm returns
    ``(u, f)``: reduced energies u = U/kT, shape (batch,), and reduced forces f = −∇u in
    1/nm, same shape as x, both float64 torch.  Systems with a torch twin use autograd
    on ``target.reduced_energy``; the others use an
    :class:`~openmm_dikl.bridge.OpenMMBridge` (OpenMM computes the forces).

    Parameters
    ----------
    target : TargetSystem
        The target.
    n_workers : int
        Bridge worker processes (ignored for torch twins).
    platform : str, optional
        OpenMM platform for the bridge (default: the target's).
    use_bridge : bool
        Take energies and forces from OpenMM through the bridge even if a torch twin
        exists (DiKL's ``use_bridge``).  Targets without a twin always use the bridge.

    Attributes
    ----------
    n_evaluations : int
        Configurations evaluated so far (energy + force each).
    uses_bridge : bool
        True if energies come from OpenMM.

    Notes
    -----
    Close the object (or use it in a ``with`` block) to release the bridge.
    """

    def __init__(self, target, n_workers=1, platform=None, use_bridge=False):
        super().__init__()
        if not isinstance(target, TargetSystem):
            raise TypeError(f"target must be a TargetSystem, got {type(target).__name__}")
        self.target = target
        self.uses_bridge = bool(use_bridge or not target.has_torch_twin)
        self._bridge = target.bridge(n_workers=n_workers, platform=platform) \
            if self.uses_bridge else None

    def _evaluate(self, x):
        # samplers and trainers propose stretched configurations on purpose: the unit check
        # of the public entry points (positions in Å) is for user input, not for them
        if self._bridge is not None:
            return self._bridge.compute(x.detach(), check_length_scale=False)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self.target.reduced_energy(x, check_length_scale=False)
            (grad,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), -grad

    def close(self):
        """Release the bridge (no-op for torch twins)."""
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None


class FunctionEnergy(Energy):
    """A plain callable ``fn(x) -> (u (batch,), −∇u)`` (reduced units) as an :class:`Energy`."""

    def __init__(self, fn):
        super().__init__()
        if not callable(fn):
            raise ValueError("expected an energy_and_force callable x -> (u, -grad u) or a "
                             f"TargetSystem, got {type(fn).__name__}")
        self.fn = fn

    def _evaluate(self, x):
        return self.fn(x)


def as_energy(source, n_workers=1, platform=None):
    """An :class:`Energy` for ``source``, and whether the caller owns (must close) it.

    Parameters
    ----------
    source : Energy, TargetSystem or callable
        An Energy is returned as is (not owned); a target gets an :class:`EnergyAndForce`
        (owned: it may hold a bridge with ``n_workers`` workers on ``platform``); a
        callable ``x -> (u, −∇u)`` is wrapped in a :class:`FunctionEnergy`.

    Returns
    -------
    energy : Energy
    owned : bool

    Raises
    ------
    ValueError
        If ``source`` is none of these.
    """
    if isinstance(source, Energy):
        return source, False
    if isinstance(source, TargetSystem):
        return EnergyAndForce(source, n_workers=n_workers, platform=platform), True
    return FunctionEnergy(source), False


class TransformedEnergy(Energy):
    """Reduced energy and force of a transformed variable y, for sampling in y.

    With positions x = T⁻¹(y) (e.g. standardised internal coordinates,
    :class:`~openmm_dikl.internal.InternalTransform`) the density of y is
    p(y) ∝ exp(−u(x(y))) |det ∂x/∂y|, so the reduced energy to sample is

        u_y(y) = u(x(y)) − log|det ∂x/∂y|,

    and its force −∇_y u_y = Jᵀ f_x + ∇_y log|det ∂x/∂y| is formed by one backward pass
    through the inverse transform, with f_x = −∇_x u from the wrapped energy (OpenMM
    forces through the bridge, or autograd for torch twins).  Calling it on y of shape
    (batch, ...) returns ``(u_y (batch,), f_y (batch, ...))`` in float64.

    Parameters
    ----------
    energy : Energy, TargetSystem or callable
        The energy of positions (nm), see :func:`as_energy`.
    transform : object
        ``forward(x) -> (y, log_det)`` and ``inverse(y) -> (x, log_det)`` with
        log_det = log|det ∂x/∂y| (shape (batch,)); ``inverse`` must be differentiable
        in torch.
    n_workers : int
        Bridge workers when ``energy`` is a target without torch twin.

    Raises
    ------
    ValueError
        If ``transform`` lacks ``forward``/``inverse`` or ``energy`` is not callable.

    Examples
    --------
    Exponential target u(x) = x on x > 0, sampled in y = log x (u_y = eʸ − y):

    >>> import math, torch
    >>> class Log:
    ...     def forward(self, x):
    ...         return torch.log(x), torch.log(x).sum(-1)
    ...     def inverse(self, y):
    ...         return torch.exp(y), y.sum(-1)
    >>> energy = TransformedEnergy(lambda x: (x.sum(-1), -torch.ones_like(x)), Log())
    >>> u, f = energy(torch.full((1, 1), math.log(2.0), dtype=torch.float64))
    >>> round(float(u), 4), round(float(f), 4)  # 2 − log 2, −(2 − 1)
    (1.3069, -1.0)
    """

    def __init__(self, energy, transform, n_workers=1):
        super().__init__()
        if not (callable(getattr(transform, "forward", None))
                and callable(getattr(transform, "inverse", None))):
            raise ValueError("transform must have forward(x) -> (y, log_det) and "
                             "inverse(y) -> (x, log_det) methods")
        self.energy, self._owns = as_energy(energy, n_workers)
        self.transform = transform

    def _evaluate(self, y):
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            x, log_det = self.transform.inverse(y)
            u_x, f_x = self.energy(x.detach())
            # ∂/∂y of this surrogate is ∂u_x/∂y − ∂log_det/∂y = ∇_y u_y
            surrogate = -(x * f_x).sum() - log_det.sum()
            (grad,) = torch.autograd.grad(surrogate, y)
        return u_x - log_det.detach(), -grad

    def to_state(self, x):
        """Transformed variable y = T(x) (detached) of positions x (batch, ...) in nm."""
        return self.transform.forward(as_nm_tensor(x))[0].detach()

    def to_positions(self, y):
        """Positions x = T⁻¹(y) (detached, nm) of transformed states y (batch, ...)."""
        return self.transform.inverse(torch.as_tensor(y, dtype=torch.float64))[0].detach()

    def log_det(self, y):
        """log|det ∂x/∂y| (batch,) at transformed states y (no force evaluation)."""
        return self.transform.inverse(torch.as_tensor(y, dtype=torch.float64))[1].detach()

    def close(self):
        """Release a bridge opened from a TargetSystem (no-op otherwise)."""
        if self._owns:
            self.energy.close()


class ScaledEnergy(Energy):
    """The density of y = x / c: u_y(y) = u(c·y), −∇_y u_y = c·(−∇u)(c·y).

    Parameters
    ----------
    energy : Energy or callable
        Energy of x (reduced units, x in nm).
    scale : float
        c in nm (y is dimensionless).
    """

    def __init__(self, energy, scale):
        super().__init__()
        self.energy, self._owns = as_energy(energy)
        self.scale = float(scale)

    def _evaluate(self, y):
        u, f = self.energy(y * self.scale)
        return u, f * self.scale

    def close(self):
        """Release a bridge opened from a TargetSystem (no-op otherwise)."""
        if self._owns:
            self.energy.close()

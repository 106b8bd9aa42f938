"""Batched MCMC in torch: MALA and HMC on many independent chains.

Every sampler here works on a *reduced* energy u(x) = U(x)/kT through a callable

    energy_and_force(x) -> (u, f),  x (batch, ...) -> u (batch,), f = −∇u (batch, ...)

in float64 torch (positions in nm for molecular targets, so u is dimensionless and f is in
1/nm).  Chains are independent: each has its own Metropolis–Hastings accept/reject and,
optionally, its own step size, adapted during burn-in only (after burn-in the kernel is
fixed, so the chains are exact MCMC for p ∝ exp(−u)).  Randomness comes from an explicit
:class:`torch.Generator`.  Force evaluations are counted per configuration: a call on a
batch of B configurations counts B.

>>> import torch
>>> from openmm_dikl.torch_mcmc import MALA
>>> def gaussian(x):
...     return 0.5 * (x ** 2).sum(-1), -x
>>> sampler = MALA(gaussian, step_size=0.5, generator=torch.Generator().manual_seed(0))
>>> result = sampler.run(torch.zeros(100, 2), n_steps=200, burn_in=50)
>>> tuple(result.samples.shape)
(100, 150, 2)
>>> bool(abs(result.samples.var() - 1.0) < 0.1)
True
"""
import logging
import math

import numpy as np
import torch
from openmm import unit

__all__ = ["EnergyAndForce", "energy_and_force", "TransformedEnergy", "MCMCResult", "MALA",
           "HMC", "mala_step", "hmc_step", "adapt_step_size"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- energies
class EnergyAndForce:
    """Reduced energy and force of a :class:`~openmm_dikl.systems.TargetSystem`, batched.

    Calling it with positions x of shape (batch, n_particles, spatial_dim) in nm returns
    ``(u, f)``: reduced energies u = U/kT, shape (batch,), and reduced forces f = −∇u in
    1/nm, same shape as x, both float64 torch.  Systems with a torch twin use autograd
    on ``target.reduced_energy``; the others use an
    :class:`~openmm_dikl.bridge.OpenMMBridge` (OpenMM computes the forces).

    Parameters
    ----------
    target : TargetSystem or object with ``reduced_energy``
        The target (objects without ``has_torch_twin`` are treated as torch targets).
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
        self.target = target
        self.n_evaluations = 0
        self.uses_bridge = bool(use_bridge or not getattr(target, "has_torch_twin", True))
        self._bridge = target.bridge(n_workers=n_workers, platform=platform) \
            if self.uses_bridge else None

    def __call__(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        self.n_evaluations += int(x.shape[0])
        if self._bridge is not None:
            return self._bridge.compute(x.detach())
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self.target.reduced_energy(x)
            (grad,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), -grad

    def close(self):
        """Release the bridge (no-op for torch twins)."""
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False


def energy_and_force(target, n_workers=1, platform=None):
    """The batched ``energy_and_force`` callable of a target (see :class:`EnergyAndForce`).

    Parameters
    ----------
    target : TargetSystem
        Target system; torch twin → autograd, otherwise the OpenMM bridge.
    n_workers : int
        Bridge worker processes (only used without a torch twin).
    platform : str, optional
        OpenMM platform of the bridge.

    Returns
    -------
    EnergyAndForce
        Callable x (batch, n, d) nm -> (u (batch,), −∇u (batch, n, d) 1/nm).
    """
    return EnergyAndForce(target, n_workers=n_workers, platform=platform)


class TransformedEnergy:
    """Reduced energy and force of a transformed variable y, for sampling in y.

    With positions x = T⁻¹(y) (e.g. standardised internal coordinates,
    :class:`~openmm_dikl.internal.InternalTransform`) the density of y is
    p(y) ∝ exp(−u(x(y))) |det ∂x/∂y|, so the reduced energy to sample is

        u_y(y) = u(x(y)) − log|det ∂x/∂y|,

    and its force −∇_y u_y = Jᵀ f_x + ∇_y log|det ∂x/∂y| is formed by one backward pass
    through the inverse transform, with f_x = −∇_x u from the wrapped callable (OpenMM
    forces through the bridge, or autograd for torch twins).  Calling it on y of shape
    (batch, ...) returns ``(u_y (batch,), f_y (batch, ...))`` in float64, so it plugs into
    :class:`MALA`, :class:`HMC` or any other ``energy_and_force`` consumer.

    Parameters
    ----------
    energy_fn : callable or TargetSystem
        ``energy_and_force(x) -> (u (batch,), −∇u)`` on positions (nm), or a target (then
        :class:`EnergyAndForce` with ``n_workers``; close it with :meth:`close`).
    transform : object
        ``forward(x) -> (y, log_det)`` and ``inverse(y) -> (x, log_det)`` with
        log_det = log|det ∂x/∂y| (shape (batch,)); ``inverse`` must be differentiable
        in torch.
    n_workers : int
        Bridge workers when ``energy_fn`` is a target without torch twin.

    Attributes
    ----------
    n_evaluations : int
        Configurations evaluated so far (one energy + force of x each).

    Raises
    ------
    ValueError
        If ``transform`` lacks ``forward``/``inverse`` or ``energy_fn`` is not callable.

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

    def __init__(self, energy_fn, transform, n_workers=1):
        if not (callable(getattr(transform, "forward", None))
                and callable(getattr(transform, "inverse", None))):
            raise ValueError("transform must have forward(x) -> (y, log_det) and "
                             "inverse(y) -> (x, log_det) methods")
        self.energy_fn, self._owns = _as_energy_fn(energy_fn, n_workers)
        self.transform = transform
        self.n_evaluations = 0

    def __call__(self, y):
        y = torch.as_tensor(y, dtype=torch.float64)
        self.n_evaluations += int(y.shape[0])
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            x, log_det = self.transform.inverse(y)
            u_x, f_x = self.energy_fn(x.detach())
            # ∂/∂y of this surrogate is ∂u_x/∂y − ∂log_det/∂y = ∇_y u_y
            surrogate = -(x * f_x).sum() - log_det.sum()
            (grad,) = torch.autograd.grad(surrogate, y)
        return u_x - log_det.detach(), -grad

    def to_state(self, x):
        """Transformed variable y = T(x) (detached) of positions x (batch, ...) in nm."""
        return self.transform.forward(_as_tensor_nm(x))[0].detach()

    def to_positions(self, y):
        """Positions x = T⁻¹(y) (detached, nm) of transformed states y (batch, ...)."""
        return self.transform.inverse(torch.as_tensor(y, dtype=torch.float64))[0].detach()

    def close(self):
        """Release a bridge opened from a TargetSystem (no-op otherwise)."""
        if self._owns:
            self.energy_fn.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False


def _as_energy_fn(source, n_workers=1):
    """A callable and whether we own (and must close) it, from a callable or a target."""
    if hasattr(source, "reduced_energy") and hasattr(source, "has_torch_twin"):
        return EnergyAndForce(source, n_workers=n_workers), True
    if not callable(source):
        raise ValueError("expected an energy_and_force callable or a TargetSystem, got "
                         f"{type(source).__name__}")
    return source, False


# ---------------------------------------------------------------------- helpers
def _bsum(t):
    """Sum over all non-batch axes."""
    return t.reshape(t.shape[0], -1).sum(-1)


def _bcast(v, like):
    """A per-chain vector (batch,) shaped to broadcast against ``like`` (batch, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def _randn(shape, generator, like):
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _accept(log_ratio, generator):
    """Per-chain MH decision; NaN log ratios are rejections.  Returns (accepted, prob)."""
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    uniform = torch.rand(log_ratio.shape, generator=generator, dtype=log_ratio.dtype,
                         device=log_ratio.device)
    return uniform < prob, prob


def _select(mask, new, old):
    return torch.where(_bcast(mask, new), new, old)


def mala_step(x, u, f, energy_fn, step_size, generator=None):
    """One Metropolis-adjusted Langevin step per chain.

    Proposal x' = x + h f(x) + sqrt(2h) ξ with f = −∇u, accepted with the usual
    MH ratio exp(−u(x') + u(x) − [q(x|x') − q(x'|x)]).

    Parameters
    ----------
    x : torch.Tensor, shape=(batch, ...)
        Current states (e.g. nm).
    u : torch.Tensor, shape=(batch,)
        Reduced energies at x.
    f : torch.Tensor, shape=(batch, ...)
        Reduced forces −∇u at x (inverse units of x).
    energy_fn : callable
        x -> (u, f), batched.
    step_size : torch.Tensor, shape=(batch,), or float
        Step h per chain (units of x squared).
    generator : torch.Generator, optional

    Returns
    -------
    x, u, f : torch.Tensor
        Updated states, energies and forces.
    accepted : torch.Tensor, shape=(batch,), dtype=bool
    prob : torch.Tensor, shape=(batch,)
        Acceptance probabilities min(1, ratio).
    """
    h = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).expand(x.shape[0])
    hb = _bcast(h, x)
    noise = _randn(x.shape, generator, x)
    x_new = x + hb * f + torch.sqrt(2 * hb) * noise
    u_new, f_new = energy_fn(x_new)
    # log q(x | x') − log q(x' | x) with q(y|z) = N(y; z + h f(z), 2h)
    forward = _bsum((x_new - x - hb * f) ** 2)
    backward = _bsum((x - x_new - hb * f_new) ** 2)
    log_ratio = -(u_new - u) - (backward - forward) / (4 * h)
    accepted, prob = _accept(log_ratio, generator)
    return (_select(accepted, x_new, x), torch.where(accepted, u_new, u),
            _select(accepted, f_new, f), accepted, prob)


def hmc_step(x, u, f, energy_fn, step_size, n_leapfrog=10, generator=None):
    """One Hamiltonian Monte Carlo step per chain (unit mass, leapfrog, MH on H).

    Parameters
    ----------
    x, u, f : torch.Tensor
        Current states (batch, ...), reduced energies (batch,), reduced forces −∇u.
    energy_fn : callable
        x -> (u, f), batched.
    step_size : torch.Tensor, shape=(batch,), or float
        Leapfrog step ε per chain (units of x).
    n_leapfrog : int
        Leapfrog steps per trajectory (= force evaluations per HMC step).
    generator : torch.Generator, optional

    Returns
    -------
    x, u, f, accepted, prob
        As :func:`mala_step`.
    """
    eps = _bcast(torch.as_tensor(step_size, dtype=x.dtype, device=x.device).expand(x.shape[0]), x)
    p = _randn(x.shape, generator, x)
    kinetic = 0.5 * _bsum(p ** 2)
    x_new, f_new = x, f
    p_new = p + 0.5 * eps * f_new
    for i in range(n_leapfrog):
        x_new = x_new + eps * p_new
        u_new, f_new = energy_fn(x_new)
        p_new = p_new + (eps if i < n_leapfrog - 1 else 0.5 * eps) * f_new
    log_ratio = -(u_new + 0.5 * _bsum(p_new ** 2)) + (u + kinetic)
    accepted, prob = _accept(log_ratio, generator)
    return (_select(accepted, x_new, x), torch.where(accepted, u_new, u),
            _select(accepted, f_new, f), accepted, prob)


def adapt_step_size(step_size, prob, target, rate=0.05, minimum=1e-12, maximum=1e6):
    """Robbins–Monro update of per-chain step sizes toward a target acceptance.

    log h ← log h + rate·(prob − target), clipped to [minimum, maximum].  Use during
    burn-in only; a step size that depends on the chain's history breaks exactness.

    Parameters
    ----------
    step_size : torch.Tensor, shape=(batch,)
    prob : torch.Tensor, shape=(batch,)
        Acceptance probabilities of the last step.
    target : float
        Target acceptance in (0, 1).
    rate : float
        Adaptation rate.

    Returns
    -------
    torch.Tensor, shape=(batch,)
    """
    prob = torch.nan_to_num(prob, nan=0.0)
    return torch.clamp(step_size * torch.exp(rate * (prob - target)), minimum, maximum)


# ---------------------------------------------------------------------- samplers
class MCMCResult:
    """Output of :meth:`MALA.run` / :meth:`HMC.run`.

    Attributes
    ----------
    samples : torch.Tensor, shape=(n_chains, n_kept, ...) or None
        Kept states (every ``thin``-th step after burn-in), units of x.
    energies : torch.Tensor, shape=(n_chains, n_kept) or None
        Reduced energies of the kept states.
    acceptance : torch.Tensor, shape=(n_chains,)
        Mean acceptance probability per chain after burn-in.
    step_size : torch.Tensor, shape=(n_chains,)
        Final (frozen) step sizes; also stored on the sampler, so a second
        :meth:`run` with as many chains continues with them.
    force_evaluations : int
        Configurations evaluated in this run (all chains, burn-in included).
    final : tuple of torch.Tensor
        (x, u, f) of the last state of each chain, to continue a run.
    """

    def __init__(self, samples, energies, acceptance, step_size, force_evaluations, final):
        self.samples = samples
        self.energies = energies
        self.acceptance = acceptance
        self.step_size = step_size
        self.force_evaluations = force_evaluations
        self.final = final

    def __repr__(self):
        shape = None if self.samples is None else tuple(self.samples.shape)
        return (f"MCMCResult(samples={shape}, acceptance="
                f"{float(self.acceptance.mean()):.3f}, force_evaluations={self.force_evaluations})")


def _as_tensor_nm(x, name="x0"):
    """Tensor, array or Quantity (nm) as a float64 tensor; TypeError/ValueError naming
    ``name`` for non-length Quantities, complex or non-numeric values."""
    from .units import as_nm
    if not isinstance(x, torch.Tensor) or unit.is_quantity(x):
        x = np.ascontiguousarray(as_nm(x, name))
    elif x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers in nm, got a {x.dtype} tensor")
    return torch.as_tensor(x, dtype=torch.float64)


def _check_x0(x0, name="x0"):
    x0 = _as_tensor_nm(x0)
    if x0.dim() < 2 or x0.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n_chains, ...) with n_chains >= 1, "
                         f"got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x0.clone()


class _BatchedSampler:
    _evals_per_step = 1

    def __init__(self, energy_fn, step_size, generator=None, adapt=True,
                 target_acceptance=0.574, adapt_rate=0.05):
        self.energy_fn, self._owns = _as_energy_fn(energy_fn)
        step = torch.as_tensor(step_size, dtype=torch.float64)
        if not torch.isfinite(step).all() or (step <= 0).any():
            raise ValueError(f"step_size must be finite and > 0, got {step_size!r}")
        if not 0.0 < target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
        self.step_size = step
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.adapt = bool(adapt)
        self.target_acceptance = float(target_acceptance)
        self.adapt_rate = float(adapt_rate)
        self.force_evaluations = 0

    def _evaluate(self, x):
        self.force_evaluations += int(x.shape[0])
        return self.energy_fn(x)

    def _step(self, x, u, f, h):
        raise NotImplementedError

    def run(self, x0, n_steps, burn_in=0, thin=1, progress=False, keep_samples=True,
            callback=None):
        """Run all chains.

        Parameters
        ----------
        x0 : torch.Tensor or openmm.unit.Quantity, shape=(n_chains, ...)
            Initial states (units of x; nm for molecules, Quantities are converted),
            finite.
        n_steps : int
            Total MCMC steps per chain (burn-in included).
        burn_in : int
            Initial steps discarded; step sizes adapt during them if ``adapt``.
        thin : int
            Keep every ``thin``-th step after burn-in.
        progress : bool
            Show a tqdm bar.
        keep_samples : bool
            Store the kept states (False: ``samples`` and ``energies`` are None).
        callback : callable, optional
            ``callback(step, x, u)`` after every step with states (n_chains, ...) and
            reduced energies (n_chains,).

        Returns
        -------
        MCMCResult

        Raises
        ------
        ValueError
            On non-finite x0, an empty batch or bad step counts.
        """
        from tqdm.auto import tqdm
        x = _check_x0(x0)
        if n_steps < 1 or burn_in < 0 or burn_in >= n_steps or thin < 1:
            raise ValueError(f"need n_steps >= 1, 0 <= burn_in < n_steps and thin >= 1, got "
                             f"n_steps={n_steps}, burn_in={burn_in}, thin={thin}")
        n = x.shape[0]
        h = self.step_size.expand(n).clone() if self.step_size.dim() == 0 else self.step_size.clone()
        if h.shape != (n,):
            raise ValueError(f"step_size must be a scalar or have shape ({n},)")
        start = self.force_evaluations
        u, f = self._evaluate(x)
        kept, kept_u, prob_sum, n_after = [], [], torch.zeros(n, dtype=x.dtype), 0
        for step in tqdm(range(n_steps), disable=not progress, desc=type(self).__name__):
            x, u, f, _, prob = self._step(x, u, f, h)
            if callback is not None:
                callback(step, x, u)
            if step < burn_in:
                if self.adapt:
                    h = adapt_step_size(h, prob, self.target_acceptance, self.adapt_rate)
                continue
            prob_sum += prob
            n_after += 1
            if keep_samples and (step - burn_in) % thin == 0:
                kept.append(x.clone())
                kept_u.append(u.clone())
        self.step_size = h
        return MCMCResult(torch.stack(kept, 1) if kept else None,
                          torch.stack(kept_u, 1) if kept else None, prob_sum / n_after, h,
                          self.force_evaluations - start, (x, u, f))

    def close(self):
        """Release a bridge the sampler opened itself (when built from a TargetSystem)."""
        if self._owns:
            self.energy_fn.close()


class MALA(_BatchedSampler):
    """Batched Metropolis-adjusted Langevin algorithm.

    Parameters
    ----------
    energy_fn : callable or TargetSystem
        ``energy_and_force(x) -> (u (batch,), −∇u (batch, ...))`` in reduced units, or a
        target (then :func:`energy_and_force` is used with one worker).
    step_size : float or torch.Tensor, shape=(n_chains,)
        Initial step h (units of x squared, e.g. nm²): x' = x + h f + sqrt(2h) ξ.
    generator : torch.Generator, optional
        Source of randomness (default: seeded with 0).
    adapt : bool
        Adapt h per chain during burn-in toward ``target_acceptance``.
    target_acceptance : float
        Default 0.574 (optimal for MALA).
    adapt_rate : float
        Robbins–Monro rate of :func:`adapt_step_size`.

    Notes
    -----
    One force evaluation per step and chain.
    """

    def _step(self, x, u, f, h):
        return mala_step(x, u, f, self._evaluate, h, self.generator)


class HMC(_BatchedSampler):
    """Batched Hamiltonian Monte Carlo (unit mass, leapfrog, per-chain MH).

    Parameters
    ----------
    energy_fn : callable or TargetSystem
        As :class:`MALA`.
    step_size : float or torch.Tensor, shape=(n_chains,)
        Initial leapfrog step ε (units of x).
    n_leapfrog : int
        Leapfrog steps per trajectory (force evaluations per step and chain).
    generator, adapt, adapt_rate
        As :class:`MALA`.
    target_acceptance : float
        Default 0.65.
    """

    def __init__(self, energy_fn, step_size, n_leapfrog=10, generator=None, adapt=True,
                 target_acceptance=0.65, adapt_rate=0.05):
        super().__init__(energy_fn, step_size, generator, adapt, target_acceptance, adapt_rate)
        if int(n_leapfrog) < 1:
            raise ValueError(f"n_leapfrog must be >= 1, got {n_leapfrog}")
        self.n_leapfrog = int(n_leapfrog)

    def _step(self, x, u, f, h):
        return hmc_step(x, u, f, self._evaluate, h, self.n_leapfrog, self.generator)

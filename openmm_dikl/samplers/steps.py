"""Building blocks of the exact MCMC kernels: MALA and HMC steps, MH decisions, adaptation.

Every function works on many independent chains at once: states x of shape
``(batch, ...)`` (nm for molecular targets), reduced energies u ``(batch,)``
(dimensionless) and reduced forces f = −∇u (1/nm), all float64 torch.  The samplers
(:class:`~openmm_dikl.samplers.MALA`, :class:`~openmm_dikl.samplers.HMC`,
:class:`~openmm_dikl.samplers.DiGSSampler`) and DiKL's posterior sampler are built
from them.
"""
import math

import torch

__all__ = ["mala_step", "hmc_step", "adapt_step_size", "metropolis_accept", "batch_sum",
           "select", "standard_normal", "event_sum", "broadcast_chains"]


def batch_sum(t):
    """Sum over all non-batch axes: (batch, ...) -> (batch,)."""
    return t.reshape(t.shape[0], -1).sum(-1)


def event_sum(t, event_dims):
    """Sum over the last ``event_dims`` axes (the axes of one configuration)."""
    return t.flatten(start_dim=t.dim() - event_dims).sum(-1) if event_dims else t


def broadcast_chains(v, like, event_dims=None):
    """A per-chain tensor (batch shape) shaped to broadcast against ``like`` (batch, ...)."""
    event_dims = like.dim() - v.dim() if event_dims is None else event_dims
    return v.reshape(tuple(v.shape) + (1,) * event_dims)


def standard_normal(shape, generator, like):
    """N(0, 1) draws of ``shape`` in the dtype and on the device of ``like``."""
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def metropolis_accept(log_ratio, generator):
    """Per-chain MH decision; NaN log ratios are rejections.  Returns (accepted, prob)."""
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    uniform = torch.rand(log_ratio.shape, generator=generator, dtype=log_ratio.dtype,
                         device=log_ratio.device)
    return uniform < prob, prob


def select(mask, new, old):
    """Per chain, ``new`` where ``mask`` (batch shape, bool) holds, else ``old``."""
    return torch.where(broadcast_chains(mask, new), new, old)


def mala_step(x, u, f, energy_fn, step_size, generator=None, event_dims=None, noise=None):
    """One Metropolis-adjusted Langevin step per chain.

    Proposal x' = x + h f(x) + sqrt(2h) ξ with f = −∇u, accepted with the usual
    MH ratio exp(−u(x') + u(x) − [q(x|x') − q(x'|x)]).

    Parameters
    ----------
    x : torch.Tensor, shape=(batch..., event...)
        Current states (e.g. nm); the last ``event_dims`` axes form one state.
    u : torch.Tensor, shape=(batch...)
        Reduced energies at x.
    f : torch.Tensor, shape of x
        Reduced forces −∇u at x (inverse units of x).
    energy_fn : callable
        x -> (u, f), batched.
    step_size : torch.Tensor or float
        Step h per chain (units of x squared), broadcastable to the batch shape.
    generator : torch.Generator, optional
    event_dims : int, optional
        Axes of one state (default: all but the first).
    noise : callable, optional
        ``noise(shape) -> ξ`` (default standard normal; e.g. centred noise, which keeps
        the chain on the zero-centroid subspace where the same MH ratio holds).

    Returns
    -------
    x, u, f : torch.Tensor
        Updated states, energies and forces.
    accepted : torch.Tensor, batch shape, dtype=bool
    prob : torch.Tensor, batch shape
        Acceptance probabilities min(1, ratio).
    """
    event_dims = x.dim() - 1 if event_dims is None else int(event_dims)
    batch_shape = x.shape[:x.dim() - event_dims]
    h = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).expand(batch_shape)
    hb = broadcast_chains(h, x, event_dims)
    xi = standard_normal(x.shape, generator, x) if noise is None else noise(x.shape)
    x_new = x + hb * f + torch.sqrt(2 * hb) * xi
    u_new, f_new = energy_fn(x_new)
    # log q(x | x') − log q(x' | x) with q(y|z) = N(y; z + h f(z), 2h)
    forward = event_sum((x_new - x - hb * f) ** 2, event_dims)
    backward = event_sum((x - x_new - hb * f_new) ** 2, event_dims)
    log_ratio = -(u_new - u) - (backward - forward) / (4 * h)
    accepted, prob = metropolis_accept(log_ratio, generator)
    return (select(accepted, x_new, x), torch.where(accepted, u_new, u),
            select(accepted, f_new, f), accepted, prob)


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
    eps = broadcast_chains(torch.as_tensor(step_size, dtype=x.dtype,
                                           device=x.device).expand(x.shape[0]), x)
    p = standard_normal(x.shape, generator, x)
    kinetic = 0.5 * batch_sum(p ** 2)
    x_new, f_new = x, f
    p_new = p + 0.5 * eps * f_new
    for i in range(n_leapfrog):
        x_new = x_new + eps * p_new
        u_new, f_new = energy_fn(x_new)
        p_new = p_new + (eps if i < n_leapfrog - 1 else 0.5 * eps) * f_new
    log_ratio = -(u_new + 0.5 * batch_sum(p_new ** 2)) + (u + kinetic)
    accepted, prob = metropolis_accept(log_ratio, generator)
    return (select(accepted, x_new, x), torch.where(accepted, u_new, u),
            select(accepted, f_new, f), accepted, prob)


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

"""Optimiser helpers of DiKL training: learning-rate schedule, guarded steps, weight average.

* :func:`learning_rate_factor` — the cosine decay of both learning rates
  (``optimisation.lr_decay``), as in SGDR (Loshchilov & Hutter, ICLR 2017) without
  restarts;
* :func:`guarded_step` — clip the gradient norm and step, or skip the step if a gradient
  is not finite (one overflowing sample would otherwise turn every parameter into NaN);
* :func:`weight_average` / :func:`update_weight_average` — an exponential moving average
  of the generator weights (``optimisation.ema_decay``; Polyak & Juditsky 1992), used for
  evaluation and for the saved sampler.
"""
import copy
import math

import torch

__all__ = ["learning_rate_factor", "set_learning_rate", "guarded_step", "weight_average",
           "update_weight_average"]


def learning_rate_factor(iteration, n_iterations, decay):
    """Factor (0, 1] applied to the learning rates at ``iteration``.

    Parameters
    ----------
    iteration : int
        Iterations done so far.
    n_iterations : int
        End of the cosine (the run's planned length).
    decay : float or None
        Final factor in (0, 1]; None: constant learning rates (factor 1).

    Returns
    -------
    float
        ``decay + (1 − decay) · (1 + cos(π · min(iteration / n_iterations, 1))) / 2``.
    """
    if decay is None:
        return 1.0
    progress = min(int(iteration) / max(int(n_iterations), 1), 1.0)
    return decay + (1.0 - decay) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer, lr):
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def guarded_step(module, optimizer, max_norm=None):
    """Clip the gradient norm of ``module`` and step ``optimizer``, unless it is not finite.

    Parameters
    ----------
    module : torch.nn.Module
        The network whose gradients ``optimizer`` applies.
    optimizer : torch.optim.Optimizer
    max_norm : float, optional
        Clip the global gradient norm to this value (None: no clipping).

    Returns
    -------
    bool
        True if the parameters were updated; False if a gradient was not finite (the
        gradients are then zeroed and nothing changes).
    """
    params = [p for p in module.parameters() if p.grad is not None]
    limit = math.inf if max_norm is None else max_norm
    norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else torch.zeros(())
    if not torch.isfinite(norm):
        optimizer.zero_grad()
        return False
    optimizer.step()
    return True


def weight_average(model):
    """A frozen copy of ``model`` to hold its weight average (starts at its weights)."""
    average = copy.deepcopy(model)
    average.requires_grad_(False)
    return average


@torch.no_grad()
def update_weight_average(average, model, decay):
    """ema ← decay·ema + (1 − decay)·θ for every parameter; buffers are copied.

    Parameters
    ----------
    average, model : torch.nn.Module
        Same architecture; ``average`` is updated in place.
    decay : float
        In (0, 1).
    """
    for avg, param in zip(average.parameters(), model.parameters()):
        avg.mul_(decay).add_(param.detach(), alpha=1.0 - decay)
    for avg, buf in zip(average.buffers(), model.buffers()):
        avg.copy_(buf)

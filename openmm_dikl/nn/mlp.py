"""Fully connected generator and score network on flattened configurations.

For targets that are not translation invariant (MW-32, MoG-40).  Positions in nm,
scores in 1/nm, shapes ``(batch, n_particles, spatial_dim)``.
"""
import numpy as np
import torch
from torch import nn

from ..geometry import remove_mean
from .base import (Configurable, activation_class, check_positive_int, check_score_sizes,
                   latent_sample, mlp, sinusoidal_embedding)

__all__ = ["MLPGenerator", "MLPScore"]


class MLPGenerator(Configurable):
    """Fully connected generator x = f_θ(z) on flattened configurations.

    Parameters
    ----------
    n_particles, spatial_dim : int
        Configuration shape (n, d); MoG-40 is (1, 2), MW-32 is (16, 2).
    hidden : int
        Width of the hidden layers.
    n_layers : int
        Number of hidden layers (>= 1).
    latent_std : float
        Standard deviation of the latent Gaussian used by :meth:`sample` (nm).
    activation : type or str
        Activation class (default SiLU).
    centre : bool
        If True, z is centred and the output's centroid removed (for translation-invariant
        targets).  Default False: MW-32 and MoG-40 are *not* translation invariant.
    output_scale : float
        The network's output is multiplied by this length (nm), so that it works with
        numbers of order one also for targets spread over tens of nm (the MoG-40 recipe:
        20, with ``residual``).
    residual : bool
        x = output_scale · (z + net(z)) instead of output_scale · net(z).  A fresh MLP maps
        every z to nearly the same point; with the skip connection the untrained generator
        is N(0, (output_scale · latent_std)²), so it can start spread over all modes.
    """

    def __init__(self, n_particles, spatial_dim, hidden=256, n_layers=3, latent_std=1.0,
                 activation=nn.SiLU, centre=False, output_scale=1.0, residual=False):
        super().__init__()
        self.n_particles = check_positive_int(n_particles, "n_particles")
        self.spatial_dim = check_positive_int(spatial_dim, "spatial_dim")
        check_positive_int(hidden, "hidden")
        check_positive_int(n_layers, "n_layers")
        if not (np.isfinite(latent_std) and latent_std > 0):
            raise ValueError(f"latent_std must be positive (nm), got {latent_std!r}")
        act = activation_class(activation)
        dim = self.n_particles * self.spatial_dim
        if not (np.isfinite(output_scale) and output_scale > 0):
            raise ValueError(f"output_scale must be positive (nm), got {output_scale!r}")
        self.latent_std = float(latent_std)
        self.centre = bool(centre)
        self.output_scale = float(output_scale)
        self.net = mlp([dim] + [hidden] * n_layers + [dim], act)
        self._store_config(n_particles=self.n_particles, spatial_dim=self.spatial_dim,
                           hidden=int(hidden), n_layers=int(n_layers), latent_std=self.latent_std,
                           activation=act.__name__, centre=self.centre)
        self.residual = bool(residual)
        if self.output_scale != 1.0:  # old checkpoints (no key) keep loading
            self._config["output_scale"] = self.output_scale
        if self.residual:
            self._config["residual"] = True

    def forward(self, z):
        """Map latent noise z (batch, n_particles, spatial_dim) to configurations in nm."""
        self._check_input(z, "z")
        if self.centre:
            z = remove_mean(z)
        x = self.net(z.reshape(z.shape[0], -1)).reshape(z.shape)
        if self.residual:
            x = x + z
        if self.output_scale != 1.0:
            x = x * self.output_scale
        return remove_mean(x) if self.centre else x

    def sample(self, n, generator=None):
        """Draw ``n`` configurations (n, n_particles, spatial_dim) in nm; z ~ N(0, latent_std²)."""
        z = latent_sample(self, n, self.n_particles, self.spatial_dim, self.latent_std,
                           self.centre, generator)
        return self(z)


class MLPScore(Configurable):
    """Fully connected score network s_φ(x_t, t) on flattened configurations.

    Parameters
    ----------
    n_particles, spatial_dim : int
        Configuration shape (n, d).
    hidden, n_layers : int
        Width and number of hidden layers.
    time_embedding_dim : int
        Size of the sinusoidal embedding of t (concatenated, with t, to the input).
    activation : type or str
        Activation class (default SiLU).
    centre : bool
        If True, the input is centred and the output's centroid removed.  Default False
        (MW-32, MoG-40 are not translation invariant).
    time_every_layer : bool
        False (default): the time features τ = [t, embedding(t)] enter once, with the
        input.  True: every hidden layer gets them,
        h_l = act(W_l h_{l−1} + b_l + V_l τ) with h_0 = x_t (flattened), as the DiKL
        reference code's MLP score network (4 × 400, a Fourier time embedding added
        to every layer; there with fixed random frequencies, here through a learned V_l
        from the sinusoidal features).  Stored in ``config`` only when True.

    Notes
    -----
    ``forward(x_t, t)``: x_t (batch, n, d) in nm, t (batch,) in [0, 1]; returns the score
    estimate (batch, n, d) in 1/nm.
    """

    def __init__(self, n_particles, spatial_dim, hidden=256, n_layers=3, time_embedding_dim=16,
                 activation=nn.SiLU, centre=False, time_every_layer=False):
        super().__init__()
        self.n_particles, self.spatial_dim, time_embedding_dim = check_score_sizes(
            n_particles, spatial_dim, hidden, n_layers, time_embedding_dim)
        act = activation_class(activation)
        dim = self.n_particles * self.spatial_dim
        self.time_embedding_dim = time_embedding_dim
        self.centre = bool(centre)
        if not isinstance(time_every_layer, bool):
            raise ValueError(f"time_every_layer must be True or False, got {time_every_layer!r}")
        self.time_every_layer = time_every_layer
        if time_every_layer:
            sizes = [dim] + [int(hidden)] * int(n_layers)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            self.time_layers = nn.ModuleList(nn.Linear(time_embedding_dim + 1, b, bias=False)
                                             for b in sizes[1:])
            self.activation = act()
            self.out = nn.Linear(int(hidden), dim)
        else:  # the architecture of every existing config and checkpoint
            self.net = mlp([dim + time_embedding_dim + 1] + [hidden] * n_layers + [dim], act)
        self._store_config(n_particles=self.n_particles, spatial_dim=self.spatial_dim,
                           hidden=int(hidden), n_layers=int(n_layers),
                           time_embedding_dim=time_embedding_dim, activation=act.__name__,
                           centre=self.centre)
        if time_every_layer:
            self._config["time_every_layer"] = True

    def forward(self, x_t, t):
        """Score estimate (batch, n, d) in 1/nm at x_t (batch, n, d) nm, t (batch,) in [0, 1]."""
        self._check_input(x_t, "x_t")
        t = self._check_time(t, x_t.shape[0]).to(dtype=x_t.dtype, device=x_t.device)
        if self.centre:
            x_t = remove_mean(x_t)
        flat = x_t.reshape(x_t.shape[0], -1)
        tau = torch.cat([t[:, None], sinusoidal_embedding(t, self.time_embedding_dim)], dim=-1)
        if self.time_every_layer:
            h = flat
            for layer, time_layer in zip(self.layers, self.time_layers):
                h = self.activation(layer(h) + time_layer(tau))
            s = self.out(h).reshape(x_t.shape)
        else:
            s = self.net(torch.cat([flat, tau], dim=-1)).reshape(x_t.shape)
        return remove_mean(s) if self.centre else s

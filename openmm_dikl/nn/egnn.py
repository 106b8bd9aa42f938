"""E(n)-equivariant graph networks for DiKL: generator and score network.

:class:`EGNNGenerator` and :class:`EGNNScore` are equivariant to rotations and
reflections, translations and permutations of identical particles, and remove the
centre of mass (the unweighted centroid) from their outputs.  Positions in nm, scores in
1/nm, shapes ``(batch, n_particles, spatial_dim)``.

>>> import torch
>>> from openmm_dikl.nn import EGNNGenerator, build_model
>>> net = EGNNGenerator(4, 2, n_layers=2, hidden=16)
>>> copy = build_model(net.config)
>>> _ = copy.load_state_dict(net.state_dict())
>>> z = torch.randn(3, 4, 2)
>>> torch.allclose(net(z), copy(z))
True

References
----------
V. G. Satorras, E. Hoogeboom, M. Welling, "E(n) Equivariant Graph Neural Networks",
ICML 2021.  J. He et al., "Training Neural Samplers with Reverse Diffusive KL
Divergence", AISTATS 2025.
"""
import logging

import numpy as np
import torch
from torch import nn

from ..geometry import random_rotation, remove_mean
from .base import (Configurable, activation_class, check_positive_int, latent_sample, mlp,
                   sinusoidal_embedding)

logger = logging.getLogger(__name__)

__all__ = ["EGNNLayer", "EGNN", "EGNNGenerator", "EGNNScore", "GENERATOR_OUTPUTS"]

#: What :class:`EGNNGenerator` returns: the final coordinates or their displacement from z.
GENERATOR_OUTPUTS = ("positions", "displacement")


def _check_norm_constant(norm_constant, normalize):
    """ValueError unless ``norm_constant`` is a finite number >= 0, and 0 without normalize."""
    if isinstance(norm_constant, bool) or not isinstance(norm_constant, (int, float)) \
            or not np.isfinite(norm_constant) or norm_constant < 0:
        raise ValueError(f"norm_constant must be a finite number >= 0, got {norm_constant!r}")
    if norm_constant and not normalize:
        raise ValueError(f"norm_constant={norm_constant!r} has no effect without "
                         "normalize=True")


class EGNNLayer(nn.Module):
    """One E(n)-equivariant graph convolution on a fully connected graph.

    For every ordered pair i ≠ j (Satorras et al. 2021, eqs. 3–6)::

        m_ij    = φ_e(h_i, h_j, |x_i − x_j|²)
        x_i'    = x_i + A_j (x_i − x_j) φ_x(m_ij)
        h_i'    = h_i + φ_h(h_i, A_j m_ij)

    with A the aggregation over neighbours j (sum or mean).

    Parameters
    ----------
    hidden : int
        Width H of node features and messages.
    activation : type
        Activation class (called with no arguments), default :class:`torch.nn.SiLU`.
    aggregation : {"mean", "sum"}
        ``"mean"`` divides both aggregates by n − 1 (magnitudes independent of the
        particle count; the default), ``"sum"`` is the paper's plain sum.
    normalize : bool
        Replace ``x_i − x_j`` in the coordinate update by
        ``(x_i − x_j) / (|x_i − x_j| + c + ε)`` with c = ``norm_constant``, so the step
        size does not grow with the distance (egnn_clean's ``normalize``; improves
        stability).
    norm_constant : float
        c >= 0 of ``normalize`` (0.0, default: unit vectors).  1.0 is the DiKL / DEM
        reference code's ``(x_i − x_j) / (|x_i − x_j| + 1)``, which shrinks the updates
        of close pairs (|d| ≪ 1 nm) instead of giving them full-length unit vectors.
        Needs ``normalize=True``.
    attention : bool
        Gate every message by a learned invariant weight, m_ij ← m_ij · sigmoid(w · m_ij
        + b), before both aggregations (the reference code's ``attention=True``).
    tanh : bool
        Bound the coordinate weight: ``φ_x(m) → coords_range · tanh(φ_x(m))``
        (egnn_clean's ``tanh``).  Then one layer moves a particle by at most
        ``coords_range`` (times the mean distance unless ``normalize``).
    coords_range : float
        Scale of the ``tanh`` bound (nm per layer with ``normalize``).
    update_coords : bool
        If False the layer leaves coordinates unchanged (invariant-feature layer).
    coord_hidden_layer : bool
        φ_x = Linear(H, H) → act → Linear(H, 1) as in the paper (default).  If False,
        φ_x = Linear(H, 1) on m_ij: one edge matmul and activation fewer per layer,
        about 25–50 % faster on CPU.
    update_features : bool
        If False the layer returns h unchanged and has no φ_h (the last layer of a
        network that only outputs coordinates).

    Notes
    -----
    Shapes: h (batch, n, H) features; x (batch, n, d) positions in nm.  φ_e's first
    linear layer is split into the h_i, h_j and distance blocks so it costs two
    (batch·n, H) products instead of one per edge.  The last layer of φ_x starts with
    xavier-uniform gain 1e-3, so a fresh layer is close to the identity on x.
    """

    def __init__(self, hidden, activation=nn.SiLU, aggregation="mean", normalize=False,
                 tanh=False, coords_range=1.0, update_coords=True, coord_hidden_layer=True,
                 update_features=True, norm_constant=0.0, attention=False):
        super().__init__()
        hidden = check_positive_int(hidden, "hidden")
        if aggregation not in ("mean", "sum"):
            raise ValueError(f"aggregation must be 'mean' or 'sum', got {aggregation!r}")
        _check_norm_constant(norm_constant, normalize)
        act = activation_class(activation)
        self.hidden = hidden
        self.aggregation = aggregation
        self.normalize = bool(normalize)
        self.tanh = bool(tanh)
        self.coords_range = float(coords_range)
        self.update_coords = bool(update_coords)
        self.update_features = bool(update_features)
        self.norm_constant = float(norm_constant)
        self.attention = bool(attention)
        self.epsilon = 1e-8
        self.edge_in = nn.Linear(2 * hidden + 1, hidden)    # φ_e layer 1 on [h_i, h_j, d²]
        self.edge_out = nn.Sequential(act(), nn.Linear(hidden, hidden), act())
        if self.attention:
            self.attention_mlp = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        if self.update_features:
            self.node_mlp = mlp([2 * hidden, hidden, hidden], act)
        if self.update_coords:
            head = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(head.weight, gain=1e-3)
            self.coord_mlp = (nn.Sequential(nn.Linear(hidden, hidden), act(), head)
                              if coord_hidden_layer else nn.Sequential(head))

    def _edge_update(self, h, sq_dist):
        """Messages m_ij (batch, n, n, H) from h (batch, n, H) and d² (batch, n, n) in nm²."""
        w = self.edge_in.weight
        source = torch.addmm(self.edge_in.bias, h.reshape(-1, self.hidden),
                             w[:, :self.hidden].T).view_as(h)      # h_i block + bias
        target = h @ w[:, self.hidden:2 * self.hidden].T           # h_j block
        pre = source[:, :, None, :] + target[:, None, :, :]         # (B, n, n, H)
        pre = pre.addcmul_(sq_dist[..., None], w[:, -1])            # + d²_ij w_d, in place
        m = self.edge_out(pre)
        return m * self.attention_mlp(m) if self.attention else m

    def _aggregate(self, edge_values):
        """A_j over j ≠ i of (batch, n, n, k) edge values -> (batch, n, k)."""
        n = edge_values.shape[1]
        total = edge_values.sum(dim=2) - torch.diagonal(edge_values, dim1=1, dim2=2).transpose(1, 2)
        return total / (n - 1) if self.aggregation == "mean" and n > 1 else total

    def _coord_update(self, x, diff, sq_dist, m):
        """x_i + A_j (x_i − x_j) φ_x(m_ij); x (batch, n, d) nm, diff (batch, n, n, d) nm."""
        weight = self.coord_mlp(m)                              # (B, n, n, 1)
        if self.tanh:
            weight = self.coords_range * torch.tanh(weight)
        if self.normalize:
            # clamp: no 0 · ∞ = NaN in the backward pass through sqrt at i = j
            distance = torch.sqrt(sq_dist.clamp_min(self.epsilon ** 2))
            diff = diff / (distance[..., None] + (self.epsilon + self.norm_constant))
        # diagonal terms vanish (x_i − x_i = 0), so the plain sum already excludes j = i
        shift = (diff * weight).sum(dim=2)
        n = x.shape[1]
        if self.aggregation == "mean" and n > 1:
            shift = shift / (n - 1)
        return x + shift

    def _node_update(self, h, m):
        """h_i + φ_h(h_i, A_j m_ij); h (batch, n, H), m (batch, n, n, H)."""
        return h + self.node_mlp(torch.cat([h, self._aggregate(m)], dim=-1))

    def forward(self, h, x):
        """Apply the layer.

        Parameters
        ----------
        h : torch.Tensor, shape=(batch, n_particles, hidden)
            Invariant node features.
        x : torch.Tensor, shape=(batch, n_particles, spatial_dim)
            Positions in nm.

        Returns
        -------
        h, x : torch.Tensor
            Updated features (invariant) and positions (equivariant), same shapes.
        """
        diff = x[:, :, None, :] - x[:, None, :, :]              # (B, n, n, d): x_i − x_j
        sq_dist = diff.pow(2).sum(-1)                          # (B, n, n) nm²
        m = self._edge_update(h, sq_dist)
        if self.update_coords:
            x = self._coord_update(x, diff, sq_dist, m)
        if self.update_features:
            h = self._node_update(h, m)
        return h, x


class EGNN(nn.Module):
    """A stack of :class:`EGNNLayer` (features and coordinates updated in every layer).

    Parameters
    ----------
    n_layers : int
        Number of layers.
    hidden : int
        Feature width H.
    activation, aggregation, normalize, tanh, coords_range, coord_hidden_layer
        Passed to every :class:`EGNNLayer` (see there for the equations they change).
    norm_constant, attention
        Passed to every :class:`EGNNLayer` as well.
    final_features : bool
        If False the last layer skips its feature update (and has no φ_h): use when
        only the output coordinates are needed.

    Notes
    -----
    ``forward(h, x)`` takes h (batch, n, H) and x (batch, n, d) in nm and returns the
    updated pair.  No centring happens here; the wrapping networks remove the centroid.
    """

    def __init__(self, n_layers, hidden, activation=nn.SiLU, aggregation="mean",
                 normalize=False, tanh=False, coords_range=1.0, coord_hidden_layer=True,
                 final_features=True, norm_constant=0.0, attention=False):
        super().__init__()
        n_layers = check_positive_int(n_layers, "n_layers")
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, activation=activation, aggregation=aggregation,
                      normalize=normalize, tanh=tanh, coords_range=coords_range,
                      coord_hidden_layer=coord_hidden_layer,
                      update_features=final_features or i < n_layers - 1,
                      norm_constant=norm_constant, attention=attention)
            for i in range(n_layers))

    def forward(self, h, x):
        """Run all layers; returns (h, x) with the input shapes (x in nm)."""
        for layer in self.layers:
            h, x = layer(h, x)
        return h, x


#: Target number of float entries in one edge tensor (batch_chunk · n² · hidden) when
#: EGNN networks split large batches: about 2 MB in float32, so edge tensors stay in cache.
_CHUNK_ENTRIES = 2 ** 19


class _EGNNBase(Configurable):
    """Shared construction of the EGNN generator and score network."""

    def __init__(self, n_particles, spatial_dim, n_layers, hidden, node_features, extra_inputs,
                 activation, aggregation, normalize, tanh, coords_range, coord_hidden_layer,
                 norm_constant=0.0, attention=False):
        super().__init__()
        self.n_particles = check_positive_int(n_particles, "n_particles", minimum=2)
        self.spatial_dim = check_positive_int(spatial_dim, "spatial_dim")
        hidden = check_positive_int(hidden, "hidden")
        if node_features is None:
            features = torch.ones(self.n_particles, 1)
            stored = None
        else:
            array = np.asarray(node_features, dtype=np.float64)
            if array.ndim == 1:
                array = array[:, None]
            if (array.ndim != 2 or array.shape[0] != self.n_particles
                    or not np.isfinite(array).all()):
                raise ValueError(f"node_features must be a finite (n_particles={self.n_particles}, "
                                 f"n_features) array, got shape {array.shape}")
            features = torch.as_tensor(array, dtype=torch.get_default_dtype())
            stored = array.tolist()
        self.register_buffer("node_features", features)
        self.embedding = nn.Linear(features.shape[1] + extra_inputs, hidden)
        self.egnn = EGNN(n_layers, hidden, activation=activation, aggregation=aggregation,
                         normalize=normalize, tanh=tanh, coords_range=coords_range,
                         coord_hidden_layer=coord_hidden_layer, final_features=False,
                         norm_constant=norm_constant, attention=attention)
        #: Batch chunk size used by ``forward`` (None: automatic, ~2 MB edge tensors).
        #: A runtime setting, not part of ``config``; results do not depend on it.
        self.chunk_size = None
        self._store_config(n_particles=self.n_particles, spatial_dim=self.spatial_dim,
                           n_layers=int(n_layers), hidden=hidden, node_features=stored,
                           activation=activation_class(activation).__name__,
                           aggregation=aggregation, normalize=bool(normalize), tanh=bool(tanh),
                           coords_range=float(coords_range),
                           coord_hidden_layer=bool(coord_hidden_layer))
        # options added later are stored only when set, so that existing configs and
        # checkpoints stay identical and loadable
        if float(norm_constant) != 0.0:
            self._config["norm_constant"] = float(norm_constant)
        if attention:
            self._config["attention"] = True

    def _chunks(self, batch):
        """Batch chunk size: edge tensors of about ``_CHUNK_ENTRIES`` entries (cache-sized)."""
        if self.chunk_size is not None:
            return check_positive_int(self.chunk_size, "chunk_size")
        hidden = self.embedding.out_features
        return max(8, _CHUNK_ENTRIES // (self.n_particles ** 2 * hidden))

    def _run(self, x0, extra=None):
        """EGNN output coordinates (batch, n, d) for centred inputs x0, in chunks of the batch."""
        size = self._chunks(x0.shape[0])
        outputs = []
        for start in range(0, x0.shape[0], size):
            x = x0[start:start + size]
            h = self.node_features.expand(x.shape[0], -1, -1)
            if extra is not None:
                e = extra[start:start + size]
                h = torch.cat([h, e[:, None, :].expand(-1, self.n_particles, -1)], dim=-1)
            _, x = self.egnn(self.embedding(h), x)
            outputs.append(x)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class EGNNGenerator(_EGNNBase):
    """One-shot E(n)-equivariant generator x = f_θ(z) for n-body targets.

    Parameters
    ----------
    n_particles : int
        Number of particles n (>= 2).
    spatial_dim : int
        Spatial dimension d (2 or 3 for the bundled targets).
    n_layers : int
        Number of EGNN layers (paper: 8).
    hidden : int
        Feature width (paper: 144 for DW-4, 192 for LJ-13).  The edge MLPs cost
        O(batch · n² · hidden²) operations and O(batch · n² · hidden) memory traffic.
    node_features : array-like, shape=(n_particles, n_features), optional
        Fixed per-particle features, e.g. :func:`atom_type_features` for molecules.
        Default: identical particles (one constant feature).
    latent_std : float
        Standard deviation of the latent Gaussian used by :meth:`sample` (nm).
    activation : type or str
        Activation class (default :class:`torch.nn.SiLU`) or its name in torch.nn.
    aggregation, normalize, tanh, coords_range, coord_hidden_layer, norm_constant, attention
        See :class:`EGNNLayer` (stability and speed options, with their equations).
    output : {"positions", "displacement"}
        ``"positions"`` (default): x = x_L, the EGNN's final coordinates started from
        z, i.e. z plus the summed layer displacements.  ``"displacement"``: x = x_L − z,
        the displacements alone, as the DiKL reference code's generator
        (``EGNN_dynamics`` with ``remove_input=True``; there with ``tanh``,
        ``coords_range`` = 15 / n_layers, ``aggregation="sum"``, ``normalize`` with
        ``norm_constant=1``, ``attention`` and ReLU).  A fresh network (tiny
        coordinate head) then maps every z close to 0.  Stored in ``config`` only when
        not the default.
    template : array-like, shape=(n_particles, spatial_dim), optional
        Positions (nm) of a reference structure, for molecules.  :meth:`sample` then
        draws z = R (t − t̄) + latent_std · ε, a uniformly rotated, centred template plus
        centred Gaussian noise, and with ``output="positions"`` the generator is a
        residual displacement x = z + Σ_l Δx_l on the template: a fresh network (tiny
        coordinate head) starts at the template's geometry instead of overlapping
        atoms, and the sample distribution stays rotation invariant because the EGNN is
        equivariant.  Stored in ``config`` only when set.

    Attributes
    ----------
    n_particles, spatial_dim : int
        Configuration shape.
    chunk_size : int or None
        Batch chunk used inside ``forward`` (None: automatic); a speed knob only.

    Notes
    -----
    ``forward`` centres z, runs the EGNN with z as initial coordinates and constant (or
    ``node_features``) node inputs, and returns the final coordinates (or, with
    ``output="displacement"``, their difference to z) with their centroid removed.  The
    map is equivariant to rotations and reflections, invariant to translations of z (the
    output is centred), and equivariant to permutations of particles with equal node
    features.
    """

    def __init__(self, n_particles, spatial_dim, n_layers=4, hidden=64, node_features=None,
                 latent_std=1.0, activation=nn.SiLU, aggregation="mean", normalize=False,
                 tanh=False, coords_range=1.0, coord_hidden_layer=True, norm_constant=0.0,
                 attention=False, output="positions", template=None):
        if output not in GENERATOR_OUTPUTS:
            raise ValueError(f"output must be one of {GENERATOR_OUTPUTS}, got {output!r}")
        super().__init__(n_particles, spatial_dim, n_layers, hidden, node_features, 0,
                         activation, aggregation, normalize, tanh, coords_range,
                         coord_hidden_layer, norm_constant, attention)
        if not (np.isfinite(latent_std) and latent_std > 0):
            raise ValueError(f"latent_std must be positive (nm), got {latent_std!r}")
        self.latent_std = float(latent_std)
        self._config["latent_std"] = self.latent_std
        self.output = output
        if output != "positions":
            self._config["output"] = output
        self.register_buffer("template", self._centred_template(template))
        if template is not None:
            self._config["template"] = np.asarray(template, dtype=np.float64).tolist()

    def _centred_template(self, template):
        """The template (n_particles, spatial_dim) nm, centred, or None."""
        if template is None:
            return None
        array = np.asarray(template, dtype=np.float64)
        if array.shape != (self.n_particles, self.spatial_dim) or not np.isfinite(array).all():
            raise ValueError(f"template must be finite positions of shape (n_particles="
                             f"{self.n_particles}, spatial_dim={self.spatial_dim}) in nm, "
                             f"got shape {array.shape}")
        array = array - array.mean(axis=0)
        return torch.as_tensor(array, dtype=torch.get_default_dtype())

    def forward(self, z):
        """Map latent noise to configurations.

        Parameters
        ----------
        z : torch.Tensor, shape=(batch, n_particles, spatial_dim)
            Latent noise (nm); need not be centred (it is centred first).

        Returns
        -------
        torch.Tensor, shape=(batch, n_particles, spatial_dim)
            Configurations in nm, centroid removed.

        Raises
        ------
        ValueError
            If ``z`` has the wrong shape.
        """
        self._check_input(z, "z")
        z = remove_mean(z)
        x = self._run(z)
        return remove_mean(x - z if self.output == "displacement" else x)

    def sample(self, n, generator=None):
        """Draw ``n`` configurations x = f_θ(z) with centred Gaussian z of std ``latent_std``
        (around a randomly rotated ``template`` when one is set).

        Parameters
        ----------
        n : int
            Number of samples.
        generator : torch.Generator, optional
            Source of randomness (default: torch's global generator).

        Returns
        -------
        torch.Tensor, shape=(n, n_particles, spatial_dim)
            Configurations in nm in the network's dtype and device.  Gradients flow to
            the parameters; wrap in ``torch.no_grad()`` for evaluation.
        """
        z = latent_sample(self, n, self.n_particles, self.spatial_dim, self.latent_std,
                           True, generator)
        if self.template is not None:
            rotation = random_rotation(n, self.spatial_dim, generator, z.dtype, z.device)
            z = self.template.to(z.dtype) @ rotation.transpose(-1, -2) + z
        return self(z)


class EGNNScore(_EGNNBase):
    """E(n)-equivariant score network s_φ(x_t, t) ≈ ∇ log p_t(x_t).

    Parameters
    ----------
    n_particles, spatial_dim, n_layers, hidden, node_features
        As for :class:`EGNNGenerator` (paper: 4 layers × 144 for DW-4).
    time_embedding_dim : int
        Size of the sinusoidal embedding of t, concatenated (with t itself) to every
        node's input features.
    activation : type or str
        Activation class (default :class:`torch.nn.SiLU`) or its name in torch.nn.
    aggregation, normalize, tanh, coords_range, coord_hidden_layer, norm_constant, attention
        See :class:`EGNNLayer` (stability and speed options, with their equations).

    Notes
    -----
    ``forward(x_t, t)`` returns ``x_L − x̂_t`` with its centroid removed, where x̂_t is
    the centred input and x_L the EGNN's output coordinates started from x̂_t.  This is
    rotation/reflection and permutation equivariant, translation invariant, and lies in
    the centred subspace, where the score of a translation-invariant density lives.  The
    output is read as a score in 1/nm; any noise-level scaling (e.g. division by σ_t) is
    left to the caller.
    """

    def __init__(self, n_particles, spatial_dim, n_layers=4, hidden=64, node_features=None,
                 time_embedding_dim=16, activation=nn.SiLU, aggregation="mean",
                 normalize=False, tanh=False, coords_range=1.0, coord_hidden_layer=True,
                 norm_constant=0.0, attention=False):
        time_embedding_dim = check_positive_int(time_embedding_dim, "time_embedding_dim",
                                                 minimum=2)
        if time_embedding_dim % 2:
            raise ValueError(f"time_embedding_dim must be even, got {time_embedding_dim}")
        super().__init__(n_particles, spatial_dim, n_layers, hidden, node_features,
                         time_embedding_dim + 1, activation, aggregation, normalize, tanh,
                         coords_range, coord_hidden_layer, norm_constant, attention)
        self.time_embedding_dim = time_embedding_dim
        self._config["time_embedding_dim"] = time_embedding_dim

    def forward(self, x_t, t):
        """Score estimate at noised configurations.

        Parameters
        ----------
        x_t : torch.Tensor, shape=(batch, n_particles, spatial_dim)
            Noised positions in nm.
        t : torch.Tensor, shape=(batch,)
            Noise level, float in [0, 1] (a scalar is broadcast).

        Returns
        -------
        torch.Tensor, shape=(batch, n_particles, spatial_dim)
            Score estimate (1/nm), centroid removed.

        Raises
        ------
        ValueError
            On wrong shapes.
        """
        self._check_input(x_t, "x_t")
        t = self._check_time(t, x_t.shape[0]).to(dtype=x_t.dtype, device=x_t.device)
        extra = torch.cat([t[:, None], sinusoidal_embedding(t, self.time_embedding_dim)], dim=-1)
        x0 = remove_mean(x_t)
        return remove_mean(self._run(x0, extra) - x0)

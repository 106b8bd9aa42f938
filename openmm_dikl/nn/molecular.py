"""Networks for molecules: an internal-coordinate generator and invariant score networks.

* :class:`InternalCoordinateGenerator` maps latent noise to the internal coordinates
  (bond lengths, angles, dihedrals) of a molecule around a reference geometry, rebuilds
  Cartesian positions (nm) with :class:`~openmm_dikl.internal.InternalCoordinates`, and
  applies a uniformly random rotation, so its samples are rotation invariant in law;
* :class:`PairScore` estimates the score as a sum of central pair terms over all
  interatomic distances (no net force or torque by construction);
* :class:`FrameMLPScore` is an MLP in a body frame built from three atom groups.

All follow the interface and configuration dictionaries of :mod:`openmm_dikl.nn`
(``build_model`` rebuilds them); positions in nm, scores in 1/nm.
"""
import numpy as np
import torch
from openmm import unit
from torch import nn

from ..geometry import quaternion_rotation, remove_mean
from ..internal import InternalCoordinates
from ..systems.alanine import (ZMATRIX_BACKBONE_ROWS, ZMATRIX_ROTOR_ROWS,
                               alanine_dipeptide_zmatrix)
from .base import (Configurable, activation_class, atom_type_features, check_positive_int,
                   check_score_sizes, latent_sample, mlp, sinusoidal_embedding)

__all__ = ["InternalCoordinateGenerator", "FrameMLPScore", "PairScore", "atom_identity_features",
           "quaternion_rotation", "group_frame"]


def atom_identity_features(topology):
    """Element one-hot plus atom-index one-hot features for EGNN node inputs.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        Topology whose atoms define the particles, in order.

    Returns
    -------
    numpy.ndarray, shape=(n_atoms, n_elements + n_atoms), dtype=float64
        ``[atom_type_features(topology), I]``: every atom gets its own label, so an
        EGNN score network can tell bonded from non-bonded pairs of a fixed molecule
        (no permutation symmetry is left; rotation, reflection and translation
        equivariance are kept).
    """
    types = atom_type_features(topology)
    return np.concatenate([types, np.eye(len(types))], axis=1)


class InternalCoordinateGenerator(Configurable):
    """Molecule generator in internal coordinates (Z-matrix), output in Cartesian nm.

    The latent z (batch, n_atoms, 3) is flattened; its first ``3·n_atoms − 6`` entries
    z_q drive the internal coordinates, the next four a uniformly random rotation::

        q = q_ref + scale ⊙ (gain ⊙ z_q + MLP(z_q))        (60 numbers for alanine dipeptide)
        x = remove_mean(R(z_rot) · NeRF(q))

    q_ref are the internal coordinates of ``reference`` (bond lengths in nm, angles and
    dihedrals in rad), ``scale`` fixes the initial width of every coordinate (a fresh
    generator is a Gaussian of those widths around the reference, since the MLP's last
    layer starts at zero and ``gain`` at one), NeRF is
    :meth:`openmm_dikl.internal.InternalCoordinates.to_cartesian`.  Bonds and angles are
    thereby small perturbations of the reference geometry, dihedrals are angles that may
    wander anywhere (only their cos and sin enter).  The random rotation makes the
    distribution rotation invariant like the Boltzmann density; without it every sample
    would sit in the Z-matrix's own frame and the DiKL gradient would have rotational
    components that the internal coordinates can only fake.

    Parameters
    ----------
    reference : array-like, shape=(n_atoms, 3)
        Reference geometry in nm (e.g. the energy minimum).
    roots : sequence of 3 int
        Root atoms of the Z-matrix (see :class:`openmm_dikl.internal.InternalCoordinates`).
    placed : sequence of (int, int, int, int)
        Z-matrix rows (atom, bond ref, angle ref, dihedral ref).
    scale : array-like, shape=(3·n_atoms − 6,)
        Positive width of each internal coordinate (nm for bonds, rad for angles and
        dihedrals), in the Z-matrix order of ``InternalCoordinates``.
    hidden : int
        Width of the MLP's hidden layers.
    n_layers : int
        Number of hidden layers (>= 1).
    latent_std : float
        Standard deviation of the latent Gaussian used by :meth:`sample` (dimensionless
        here: z is scaled by ``scale``).
    activation : type or str
        Activation class or its name in torch.nn (default SiLU).
    random_rotation : bool
        Apply the random rotation (default True).  If False the output lies in the
        Z-matrix frame (centred).

    Attributes
    ----------
    n_particles, spatial_dim : int
        (n_atoms, 3).
    ic : openmm_dikl.internal.InternalCoordinates
        The Z-matrix transform.

    Notes
    -----
    ``forward(z)`` returns positions in nm in the parameters' dtype, centroid removed.
    Use :meth:`alanine_dipeptide` for the 22-atom molecule.
    """

    def __init__(self, reference, roots, placed, scale, hidden=256, n_layers=3,
                 latent_std=1.0, activation=nn.SiLU, random_rotation=True):
        super().__init__()
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or reference.shape[1] != 3 or not np.isfinite(reference).all():
            raise ValueError(f"reference must be a finite (n_atoms, 3) array in nm, got shape "
                             f"{reference.shape}")
        self.ic = InternalCoordinates(roots, placed, reference.shape[0])
        self.n_particles = self.ic.n_atoms
        self.spatial_dim = 3
        n_q = self.ic.n_internal
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (n_q,) or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"scale must be {n_q} positive widths (nm, rad), got shape "
                             f"{scale.shape}")
        check_positive_int(hidden, "hidden")
        check_positive_int(n_layers, "n_layers")
        if not (np.isfinite(latent_std) and latent_std > 0):
            raise ValueError(f"latent_std must be positive, got {latent_std!r}")
        if 3 * self.n_particles < n_q + 4:
            raise ValueError("the latent is too small for the internal coordinates and a "
                             "rotation")
        act = activation_class(activation)
        self.latent_std = float(latent_std)
        self.random_rotation = bool(random_rotation)
        q_ref, _ = self.ic.to_internal(torch.as_tensor(reference)[None])
        dtype = torch.get_default_dtype()
        self.register_buffer("q_reference", q_ref[0].to(dtype))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=dtype))
        self.gain = nn.Parameter(torch.ones(n_q))
        self.net = mlp([n_q] + [hidden] * n_layers + [n_q], act)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self._store_config(reference=np.round(reference, 6).tolist(),
                           roots=[int(i) for i in roots],
                           placed=[[int(i) for i in row] for row in placed],
                           scale=[float(v) for v in scale], hidden=int(hidden),
                           n_layers=int(n_layers), latent_std=self.latent_std,
                           activation=act.__name__, random_rotation=self.random_rotation)

    @classmethod
    def alanine_dipeptide(cls, reference, topology, bond_scale=0.003, angle_scale=0.04,
                          dihedral_scale=0.1, rotor_scale=0.5, backbone_scale=1.0, **kwargs):
        """Generator for the 22-atom alanine dipeptide with per-kind initial widths.

        Parameters
        ----------
        reference : array-like or openmm.unit.Quantity, shape=(22, 3)
            Reference geometry (nm), e.g. the energy minimum.
        topology : openmm.app.Topology
            Atom order (names looked up per residue).
        bond_scale : float
            Bond widths (nm).
        angle_scale : float
            Angle widths (rad).
        dihedral_scale : float
            Widths (rad) of the stiff dihedrals (amide planes, relative H positions).
        rotor_scale : float
            Widths (rad) of the three methyl rotors.
        backbone_scale : float
            Widths (rad) of φ and ψ.
        **kwargs
            Passed to the constructor (hidden, n_layers, ...).
        """
        if unit.is_quantity(reference):
            reference = reference.value_in_unit(unit.nanometer)
        roots, placed = alanine_dipeptide_zmatrix(topology)
        scale = np.empty(3 * 22 - 6)
        scale[[0, 1]] = bond_scale
        scale[2] = angle_scale
        for k, (i, c, b, a) in enumerate(placed):
            scale[3 + 3 * k] = bond_scale
            scale[4 + 3 * k] = angle_scale
            if k in ZMATRIX_BACKBONE_ROWS:
                width = backbone_scale
            elif k in ZMATRIX_ROTOR_ROWS:
                width = rotor_scale
            else:
                width = dihedral_scale
            scale[5 + 3 * k] = width
        return cls(reference, roots, placed, scale, **kwargs)

    def internal(self, z):
        """Internal coordinates q (batch, 3·n_atoms − 6) of latent z (nm, rad)."""
        self._check_input(z, "z")
        n_q = self.ic.n_internal
        z_q = z.reshape(z.shape[0], -1)[:, :n_q]
        return self.q_reference + self.scale * (self.gain * z_q + self.net(z_q))

    def forward(self, z):
        """Map latent noise to configurations.

        Parameters
        ----------
        z : torch.Tensor, shape=(batch, n_atoms, 3)
            Latent noise (dimensionless).

        Returns
        -------
        torch.Tensor, shape=(batch, n_atoms, 3)
            Positions in nm (parameters' dtype), centroid removed.
        """
        q = self.internal(z)
        x = self.ic.to_cartesian(q)
        if self.random_rotation:
            n_q = self.ic.n_internal
            rotation = quaternion_rotation(z.reshape(z.shape[0], -1)[:, n_q:n_q + 4]
                                           .to(torch.float64))
            x = x @ rotation.transpose(-1, -2)
        return remove_mean(x).to(self.q_reference.dtype)

    def sample(self, n, generator=None):
        """Draw ``n`` configurations (n, n_atoms, 3) in nm from z ~ N(0, latent_std²)."""
        z = latent_sample(self, n, self.n_particles, self.spatial_dim, self.latent_std,
                           False, generator)
        return self(z)


def group_frame(x, groups):
    """Rotation-equivariant orthonormal frame of 3-D configurations from three atom groups.

    Parameters
    ----------
    x : torch.Tensor, shape=(batch, n_particles, 3)
        Positions (nm).
    groups : sequence of 3 index tensors
        Atoms whose centroids c0, c1, c2 define the frame.

    Returns
    -------
    torch.Tensor, shape=(batch, 3, 3)
        Columns e1 = unit(c1 − c0), e2 = unit component of c2 − c0 orthogonal to e1,
        e3 = e1 × e2; ``frame(R x) = R frame(x)`` for proper rotations R.
    """
    c0, c1, c2 = (x[:, g].mean(1) for g in groups)
    e1 = c1 - c0
    e1 = e1 / torch.linalg.norm(e1, dim=-1, keepdim=True).clamp_min(1e-9)
    v = c2 - c0
    e2 = v - (v * e1).sum(-1, keepdim=True) * e1
    e2 = e2 / torch.linalg.norm(e2, dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], -1)


class FrameMLPScore(Configurable):
    """Score network for one molecule: an MLP in a canonical frame built from atom groups.

    ``s(x_t, t) = F · MLP([Fᵀ (x_t − x̄_t)], t)`` with F (3×3) the orthonormal frame of the
    centroids of three atom groups (:func:`group_frame`).  Rotating x_t rotates F, so the
    output is rotation equivariant and translation invariant by construction (it is not
    reflection equivariant, which suits a chiral molecule), at the cost of an MLP on
    3·n_particles numbers.  Measured on alanine dipeptide (one CPU core, batch 256,
    forward + backward): 3 × 256 MLP 0.015 s vs 1.8 s for an :class:`EGNNScore` of 4 × 64.
    It cannot resolve bond-length noise of a few pm (denoising loss stays at the trivial
    value for σ ≤ 5 pm); :class:`PairScore` can.

    Parameters
    ----------
    n_particles : int
        Number of atoms (>= 3).
    frame_groups : sequence of 3 sequences of int
        Atom indices of the three groups (e.g. the ACE, ALA and NME residues); their
        centroids must not be collinear in the configurations of interest.
    hidden, n_layers : int
        Width and number of hidden layers of the MLP.
    time_embedding_dim : int
        Size of the sinusoidal embedding of t (concatenated, with t, to the input).
    activation : type or str
        Activation class (default SiLU).

    Notes
    -----
    ``forward(x_t, t)``: x_t (batch, n, 3) in nm, t (batch,) in [0, 1]; returns the
    network output (batch, n, 3) with its centroid removed, read as ε̂ or as a score in
    1/nm depending on the DiKL parameterization.
    """

    def __init__(self, n_particles, frame_groups, hidden=256, n_layers=3, time_embedding_dim=16,
                 activation=nn.SiLU):
        super().__init__()
        self.n_particles = check_positive_int(n_particles, "n_particles", minimum=3)
        self.spatial_dim = 3
        check_positive_int(hidden, "hidden")
        check_positive_int(n_layers, "n_layers")
        time_embedding_dim = check_positive_int(time_embedding_dim, "time_embedding_dim", 2)
        if time_embedding_dim % 2:
            raise ValueError(f"time_embedding_dim must be even, got {time_embedding_dim}")
        groups = [[int(i) for i in g] for g in frame_groups]
        if len(groups) != 3 or any(not g for g in groups) or any(
                i < 0 or i >= self.n_particles for g in groups for i in g):
            raise ValueError("frame_groups must be 3 non-empty lists of atom indices in "
                             f"[0, {self.n_particles})")
        act = activation_class(activation)
        self.time_embedding_dim = time_embedding_dim
        self._groups = [torch.tensor(g) for g in groups]
        dim = 3 * self.n_particles
        self.net = mlp([dim + time_embedding_dim + 1] + [hidden] * n_layers + [dim], act)
        self._store_config(n_particles=self.n_particles, frame_groups=groups, hidden=int(hidden),
                           n_layers=int(n_layers), time_embedding_dim=time_embedding_dim,
                           activation=act.__name__)

    def forward(self, x_t, t):
        """Output (batch, n, 3), centroid removed, at x_t (batch, n, 3) nm and t (batch,) in [0, 1]."""
        self._check_input(x_t, "x_t")
        t = self._check_time(t, x_t.shape[0]).to(dtype=x_t.dtype, device=x_t.device)
        x = remove_mean(x_t)
        frame = group_frame(x, self._groups)
        local = x @ frame                                     # coordinates in the frame
        inputs = torch.cat([local.reshape(x.shape[0], -1), t[:, None],
                            sinusoidal_embedding(t, self.time_embedding_dim)], dim=-1)
        out = self.net(inputs).reshape(x.shape)
        return remove_mean(out @ frame.transpose(-1, -2))


class PairScore(Configurable):
    """Score network as a sum of learned central pair terms on all interatomic distances.

    ``s_i(x_t, t) = Σ_{j≠i} c_ij(d, t) (x_i − x_j) / d_ij`` with c = MLP([(d − d_ref) / ℓ,
    t, embedding(t)]) symmetric (one coefficient per pair, n(n−1)/2 outputs) and d the
    vector of all pair distances of x_t.  The output is equivariant to rotations and
    reflections, translation invariant, sums to zero and carries no torque (Σ x_i × s_i = 0),
    which is exactly the space of scores of a rotation- and translation-invariant density.
    Because the MLP sees distances directly it resolves picometre bond-length deviations,
    which the frame-based :class:`FrameMLPScore` cannot; for alanine dipeptide (231 pairs,
    3 × 256 MLP) a forward + backward pass on 256 configurations takes 0.03 s on one CPU
    core, twice the frame MLP.

    Parameters
    ----------
    n_particles : int
        Number of atoms n (>= 2).
    spatial_dim : int
        Spatial dimension (3 for molecules).
    hidden, n_layers : int
        Width and number of hidden layers of the MLP.
    reference : array-like, shape=(n_particles, spatial_dim), optional
        Geometry (nm) whose distances d_ref are subtracted from the inputs (default: none).
    length_scale : float
        ℓ in nm: distance deviations are divided by it (default 0.05).
    time_embedding_dim : int
        Size of the sinusoidal embedding of t.
    activation : type or str
        Activation class (default SiLU).

    Notes
    -----
    ``forward(x_t, t)``: x_t (batch, n, d) nm, t (batch,) in [0, 1]; returns (batch, n, d),
    read as ε̂ (dimensionless) or as a score (1/nm) by the DiKL parameterization.  The last
    layer starts at zero, so a fresh network outputs zero.
    """

    def __init__(self, n_particles, spatial_dim=3, hidden=256, n_layers=3, reference=None,
                 length_scale=0.05, time_embedding_dim=16, activation=nn.SiLU):
        super().__init__()
        self.n_particles, self.spatial_dim, time_embedding_dim = check_score_sizes(
            n_particles, spatial_dim, hidden, n_layers, time_embedding_dim,
            min_particles=2)
        if not (np.isfinite(length_scale) and length_scale > 0):
            raise ValueError(f"length_scale must be positive (nm), got {length_scale!r}")
        act = activation_class(activation)
        i, j = torch.triu_indices(self.n_particles, self.n_particles, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)
        n_pairs = len(i)
        stored = None
        d_ref = torch.zeros(n_pairs)
        if reference is not None:
            array = np.asarray(reference, dtype=np.float64)
            if array.shape != (self.n_particles, self.spatial_dim) or not np.isfinite(array).all():
                raise ValueError(f"reference must be a finite ({self.n_particles}, "
                                 f"{self.spatial_dim}) array in nm, got shape {array.shape}")
            ref = torch.as_tensor(array)
            d_ref = torch.linalg.norm(ref[i] - ref[j], dim=-1).to(torch.get_default_dtype())
            stored = np.round(array, 6).tolist()
        self.register_buffer("reference_distances", d_ref)
        self.length_scale = float(length_scale)
        self.time_embedding_dim = time_embedding_dim
        self.net = mlp([n_pairs + time_embedding_dim + 1] + [hidden] * n_layers + [n_pairs], act)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self._store_config(n_particles=self.n_particles, spatial_dim=self.spatial_dim,
                           hidden=int(hidden), n_layers=int(n_layers), reference=stored,
                           length_scale=self.length_scale, time_embedding_dim=time_embedding_dim,
                           activation=act.__name__)

    def forward(self, x_t, t):
        """Output (batch, n, d) at x_t (batch, n, d) nm and t (batch,) in [0, 1]; see class notes."""
        self._check_input(x_t, "x_t")
        t = self._check_time(t, x_t.shape[0]).to(dtype=x_t.dtype, device=x_t.device)
        diff = x_t[:, self.pair_i] - x_t[:, self.pair_j]                 # (B, P, d) nm
        dist = torch.sqrt(diff.pow(2).sum(-1).clamp_min(1e-12))          # (B, P) nm
        features = (dist - self.reference_distances.to(dist.dtype)) / self.length_scale
        inputs = torch.cat([features, t[:, None], sinusoidal_embedding(t, self.time_embedding_dim)],
                           dim=-1)
        coefficient = self.net(inputs)                                   # (B, P)
        pair = coefficient[..., None] * diff / dist[..., None]           # force on i from j
        out = torch.zeros_like(x_t)
        out = out.index_add(1, self.pair_i, pair)
        return out.index_add(1, self.pair_j, -pair)

"""Internal coordinates (Z-matrix) of molecules as a differentiable torch transform.

A Z-matrix places three *root* atoms (origin, x-axis, xy-plane) and then every other
atom i from three already placed atoms (c, b, a): bond length r = |x_i − x_c|, angle
θ = ∠(i, c, b) and dihedral τ = dihedral(i, c, b, a).  For N atoms this gives 3N − 6
internal coordinates: the six rigid-body degrees of freedom (translation of the first
root, orientation of the root triangle) are held in a separate *reference frame*.

For alanine dipeptide (22 atoms) the Z-matrix registered with the system
(:attr:`TargetSystem.zmatrix`, from
:func:`openmm_dikl.systems.alanine.alanine_dipeptide_zmatrix`) gives the 60 coordinates (21 bonds, 20 angles, 19 dihedrals) used by the DiGS paper (following FAB /
boltzgen).  Roots are N, Cα, C of the alanine residue; the backbone dihedrals are
coordinates themselves, with the mdtraj conventions

* φ = dihedral(C(ACE), N, Cα, C)   (atoms 4, 6, 8, 14),
* ψ = dihedral(N, Cα, C, N(NME))   (atoms 6, 8, 14, 16),

and every other atom of the acetyl cap (and the amide H) is placed relative to the atoms
that define φ, every atom of the N-methyl cap (and the carbonyl O) relative to those of ψ.
So changing φ alone, with all other coordinates fixed, rigidly rotates the acetyl side
about the N–Cα bond, and changing ψ rigidly rotates the N-methyl side about Cα–C
(the pivot moves of :class:`openmm_dikl.samplers.kernels.TorsionalKernel`).

Jacobian.  With x = R·x_local(q) + t, Lebesgue measure on ℝ^{3N} factorises as

    dx = J(q) dq · dt · dR,   J(q) = r₁² · r₂² sin θ₂ · Π_i r_i² sin θ_i,

(dR the Haar measure on SO(3), total volume 8π²; r₁, r₂, θ₂ the root bond lengths and
angle).  J does not depend on any dihedral.  The density of q is therefore
p(q) ∝ exp(−u(x(q))) · J(q); :meth:`InternalCoordinates.to_internal` returns log J.

Periodicity.  Dihedrals come out in (−π, π] but :meth:`to_cartesian` accepts any real
value (it only uses cos and sin), so a sampler may work with unwrapped dihedrals: the
target u(x(q)) is 2π-periodic in them, and any kernel that commutes with 2π shifts
(e.g. a Gaussian kernel with α = 1 or x̃ = αq + σε, see :mod:`openmm_dikl.samplers.digs`) stays
exact for the wrapped chain.

>>> import torch
>>> from openmm_dikl import systems
>>> from openmm_dikl.internal import InternalCoordinates
>>> target = systems.get("alanine_dipeptide_vacuum")
>>> ic = InternalCoordinates.from_target(target)
>>> x = torch.tensor(target.positions._value)[None]
>>> q, log_det = ic.to_internal(x)
>>> tuple(q.shape), ic.n_bonds, ic.n_angles, ic.n_dihedrals
((1, 60), 21, 20, 19)
>>> frame = ic.frame(x)
>>> bool(torch.allclose(ic.to_cartesian(q, frame), x, atol=1e-10))
True
"""

import torch

from .geometry import angle, dihedral, unit_vector, wrap_angle

__all__ = ["InternalCoordinates", "InternalTransform"]

def _place(a, b, c, r, theta, tau):
    """NeRF: the point d with |d − c| = r, ∠(d, c, b) = θ, dihedral(d, c, b, a) = τ."""
    bc = unit_vector(c - b)
    n = unit_vector(torch.cross(b - a, bc, dim=-1))
    m = torch.cross(n, bc, dim=-1)
    rt = r[..., None]
    return (c - rt * torch.cos(theta)[..., None] * bc
            + rt * (torch.sin(theta) * torch.cos(tau))[..., None] * m
            + rt * (torch.sin(theta) * torch.sin(tau))[..., None] * n)


class InternalCoordinates:
    """Differentiable Cartesian ↔ internal (Z-matrix) coordinates, batched.

    Parameters
    ----------
    roots : tuple of 3 int
        Root atoms: the first at the origin, the second on the x-axis, the third in the
        xy-plane of the local frame.
    placed : sequence of (int, int, int, int)
        (atom, bond ref c, angle ref b, dihedral ref a) for every other atom, in
        placement order: atom i has r = |x_i − x_c|, θ = ∠(i, c, b),
        τ = dihedral(i, c, b, a); references must be placed earlier.
    n_atoms : int, optional
        Number of atoms (default 3 + len(placed)); every atom must appear once.

    Attributes
    ----------
    n_internal : int
        3·n_atoms − 6.
    n_bonds, n_angles, n_dihedrals : int
    bond_index, angle_index, dihedral_index : torch.Tensor
        Positions of each kind in the coordinate vector q, which is ordered
        [r(root1), r(root2), θ(root2), then (r, θ, τ) per placed atom].

    Notes
    -----
    Lengths in the unit of x (nm), angles in radians.  See the module docstring for the
    Jacobian J(q) (independent of dihedrals) and for periodic dihedrals.
    """

    def __init__(self, roots, placed, n_atoms=None):
        roots = tuple(int(i) for i in roots)
        placed = [tuple(int(i) for i in row) for row in placed]
        n_atoms = 3 + len(placed) if n_atoms is None else int(n_atoms)
        if len(roots) != 3 or any(len(row) != 4 for row in placed):
            raise ValueError("roots must be 3 atoms and each placed row (atom, bond, angle, "
                             "dihedral) 4 atoms")
        seen = set(roots)
        if len(seen) != 3:
            raise ValueError(f"root atoms must be distinct, got {roots}")
        for row in placed:
            if row[0] in seen:
                raise ValueError(f"atom {row[0]} is placed twice")
            if len(set(row)) != 4 or not set(row[1:]) <= seen:
                raise ValueError(f"Z-matrix row {row}: references must be distinct atoms "
                                 "placed earlier")
            seen.add(row[0])
        if seen != set(range(n_atoms)):
            raise ValueError(f"the Z-matrix must place every atom 0..{n_atoms - 1} exactly once")
        self.roots, self.placed, self.n_atoms = roots, placed, n_atoms
        self.n_internal = 3 * n_atoms - 6
        self.n_bonds, self.n_angles, self.n_dihedrals = n_atoms - 1, n_atoms - 2, n_atoms - 3
        k = torch.arange(len(placed))
        self.bond_index = torch.cat([torch.tensor([0, 1]), 3 + 3 * k])
        self.angle_index = torch.cat([torch.tensor([2]), 4 + 3 * k])
        self.dihedral_index = 5 + 3 * k
        self._rows = torch.tensor(placed, dtype=torch.long).reshape(-1, 4)

    @classmethod
    def from_target(cls, target):
        """The Z-matrix registered with a target (``target.zmatrix``: roots, placed rows).

        Raises
        ------
        ValueError
            If the target has no Z-matrix (only molecules with one registered do).
        """
        if target.zmatrix is None:
            raise ValueError(f"system {target.name!r} has no Z-matrix registered")
        roots, placed = target.zmatrix
        return cls(roots, placed, target.n_particles)

    def coordinate_index(self, atoms):
        """Index in q of the dihedral whose Z-matrix row is ``atoms`` (4 ints, either order).

        Raises
        ------
        ValueError
            If no Z-matrix dihedral is defined by those atoms.
        """
        atoms = tuple(int(i) for i in atoms)
        for k, row in enumerate(self.placed):
            if row == atoms or row[::-1] == atoms:
                return int(self.dihedral_index[k])
        raise ValueError(f"no Z-matrix dihedral is defined by atoms {atoms}")

    def _check(self, x):
        x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, torch.Tensor) else x
        if x.dim() != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape (batch, {self.n_atoms}, 3) in nm, "
                             f"got {tuple(x.shape)}")
        return x

    def to_internal(self, x):
        """Internal coordinates and the log-Jacobian of the inverse map.

        Parameters
        ----------
        x : torch.Tensor, shape=(batch, n_atoms, 3)
            Positions in nm.

        Returns
        -------
        q : torch.Tensor, shape=(batch, n_internal)
            Bonds (nm), angles (rad, in [0, π]) and dihedrals (rad, in (−π, π]).
        log_det : torch.Tensor, shape=(batch,)
            log J(q) = log|det ∂x/∂(q, frame)| (nm² per bond, see module docstring), so
            that log p(q) = −u(x) + log_det + const.
        """
        x = self._check(x)
        r0, r1, r2 = (x[:, i] for i in self.roots)
        rows = self._rows
        xi, xc, xb, xa = (x[:, rows[:, j]] for j in range(4))
        bonds = torch.linalg.norm(xi - xc, dim=-1)
        angles = angle(xi, xc, xb)
        dihedrals = dihedral(xi, xc, xb, xa)
        head = torch.stack([torch.linalg.norm(r1 - r0, dim=-1),
                            torch.linalg.norm(r2 - r1, dim=-1), angle(r0, r1, r2)], -1)
        body = torch.stack([bonds, angles, dihedrals], -1).reshape(x.shape[0], -1)
        q = torch.cat([head, body], -1)
        return q, self.log_det_jacobian(q)

    def log_det_jacobian(self, q):
        """log J(q) = Σ 2 log r + Σ log sin θ (torsion independent), shape (batch,)."""
        q = torch.as_tensor(q, dtype=torch.float64)
        return (2 * torch.log(torch.abs(q[:, self.bond_index])).sum(-1)
                + torch.log(torch.abs(torch.sin(q[:, self.angle_index]))).sum(-1))

    def frame(self, x):
        """Rigid-body reference frame of configurations.

        Parameters
        ----------
        x : torch.Tensor, shape=(batch, n_atoms, 3)
            Positions in nm.

        Returns
        -------
        rotation : torch.Tensor, shape=(batch, 3, 3)
            Columns: unit x-axis (root0 → root1), y-axis (in the root plane), z-axis.
        translation : torch.Tensor, shape=(batch, 3)
            Position of root 0 (nm).
        """
        x = self._check(x)
        r0, r1, r2 = (x[:, i] for i in self.roots)
        e1 = unit_vector(r1 - r0)
        v = r2 - r1
        e2 = unit_vector(v - (v * e1).sum(-1, keepdim=True) * e1)
        e3 = torch.cross(e1, e2, dim=-1)
        return torch.stack([e1, e2, e3], -1), r0

    def to_cartesian(self, q, frame=None):
        """Cartesian positions of internal coordinates.

        Parameters
        ----------
        q : torch.Tensor, shape=(batch, n_internal)
            Internal coordinates (nm, rad); dihedrals may be unwrapped (any real value).
        frame : tuple (rotation (batch, 3, 3), translation (batch, 3)), optional
            Reference frame from :meth:`frame`; default: the local frame (root 0 at the
            origin, root 1 on +x, root 2 in the xy-plane with y > 0).

        Returns
        -------
        torch.Tensor, shape=(batch, n_atoms, 3)
            Positions in nm, differentiable with respect to q.
        """
        q = torch.as_tensor(q, dtype=torch.float64)
        if q.dim() != 2 or q.shape[1] != self.n_internal:
            raise ValueError(f"internal coordinates must have shape (batch, {self.n_internal}), "
                             f"got {tuple(q.shape)}")
        batch = q.shape[0]
        zero = torch.zeros(batch, dtype=q.dtype, device=q.device)
        pos = [None] * self.n_atoms
        pos[self.roots[0]] = torch.stack([zero, zero, zero], -1)
        pos[self.roots[1]] = torch.stack([q[:, 0], zero, zero], -1)
        theta = q[:, 2]
        pos[self.roots[2]] = pos[self.roots[1]] + q[:, 1, None] * torch.stack(
            [-torch.cos(theta), torch.sin(theta), zero], -1)
        for k, (i, c, b, a) in enumerate(self.placed):
            pos[i] = _place(pos[a], pos[b], pos[c], q[:, 3 + 3 * k], q[:, 4 + 3 * k],
                            q[:, 5 + 3 * k])
        x = torch.stack(pos, 1)
        if frame is not None:
            rotation, translation = frame
            x = x @ rotation.transpose(-1, -2) + translation[:, None, :]
        return x


class InternalTransform:
    """Standardised internal coordinates z = (q − center) / scale, for samplers.

    Implements the transform protocol of :class:`openmm_dikl.samplers.digs.DiGSSampler`:
    ``forward(x) -> (z, log_det)`` and ``inverse(z) -> (x, log_det)`` with
    log_det = log|det ∂x/∂z| = log J(q) + Σ log scale, so the density of z is
    exp(−u(x(z)) + log_det(z)).  The rigid-body frame is fixed (``frame``), which is
    exact for rigid-body-invariant energies.

    Parameters
    ----------
    ic : InternalCoordinates
    center : torch.Tensor, shape=(n_internal,)
        Centre (nm, rad).
    scale : torch.Tensor, shape=(n_internal,)
        Positive scales (nm, rad).
    frame : tuple, optional
        Reference frame for :meth:`inverse` (batch 1; broadcast), default local frame.
    """

    def __init__(self, ic, center, scale, frame=None):
        self.ic = ic
        self.center = torch.as_tensor(center, dtype=torch.float64)
        self.scale = torch.as_tensor(scale, dtype=torch.float64)
        if self.center.shape != (ic.n_internal,) or self.scale.shape != (ic.n_internal,):
            raise ValueError(f"center and scale must have shape ({ic.n_internal},)")
        if not (self.scale > 0).all():
            raise ValueError("scale must be positive")
        self.frame = frame
        self._log_scale = torch.log(self.scale).sum()

    @classmethod
    def fit(cls, ic, samples, min_scale=1e-4):
        """Centre and scale from samples: means (circular means for dihedrals) and stds.

        Parameters
        ----------
        ic : InternalCoordinates
        samples : torch.Tensor, shape=(n_samples, n_atoms, 3)
            Configurations in nm (e.g. a short MD run).
        min_scale : float
            Lower bound of the scales.
        """
        q, _ = ic.to_internal(torch.as_tensor(samples, dtype=torch.float64))
        center = q.mean(0)
        d = ic.dihedral_index
        center[d] = torch.atan2(torch.sin(q[:, d]).mean(0), torch.cos(q[:, d]).mean(0))
        dev = q - center
        dev[:, d] = wrap_angle(dev[:, d])
        scale = torch.clamp(dev.std(0), min=min_scale)
        frame = ic.frame(torch.as_tensor(samples[:1], dtype=torch.float64))
        return cls(ic, center, scale, frame)

    def forward(self, x):
        """z (batch, n_internal) and log|det ∂x/∂z| (batch,) of positions x (batch, n, 3) nm."""
        q, log_det = self.ic.to_internal(x)
        z = (q - self.center) / self.scale
        d = self.ic.dihedral_index
        z[:, d] = wrap_angle(q[:, d] - self.center[d]) / self.scale[d]
        return z, log_det + self._log_scale

    def inverse(self, z):
        """Positions (batch, n, 3) nm and log|det ∂x/∂z| (batch,) of z (any real dihedrals)."""
        q = self.center + z * self.scale
        frame = None
        if self.frame is not None:
            rotation, translation = self.frame
            frame = (rotation.expand(q.shape[0], 3, 3), translation.expand(q.shape[0], 3))
        return self.ic.to_cartesian(q, frame), self.ic.log_det_jacobian(q) + self._log_scale

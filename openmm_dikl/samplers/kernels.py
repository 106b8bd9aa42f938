"""Noising kernels of Diffusive Gibbs Sampling: Gaussian, blocked Gaussian, torsional.

A kernel k(ỹ | y) provides, for each of its ``n_levels`` levels, the noising draw
(:meth:`noise`), the initialisation proposal whose density in y' is proportional to
k(ỹ | y') (:meth:`propose`, so the MH ratio of the initialisation is p(y')/p(y)), and the
kernel energy −log k(ỹ | y) with its force (:meth:`energy`) for the denoising steps.

* :class:`GaussianKernel` — k(ỹ | y) = N(ỹ; α y, σ² I), σ² = 1 − α² by default (VP).
* :class:`BlockGaussianKernel` — the same on one block of particles per level.
* :class:`TorsionalKernel` — wrapped-normal noise on chosen dihedrals, with rigid pivot
  rotations as initialisation (for molecules).

>>> import math
>>> from openmm_dikl import systems
>>> from openmm_dikl.samplers import TorsionalKernel
>>> ala2 = systems.get("alanine_dipeptide_vacuum")
>>> quads = [ala2.torsions["phi"][0], ala2.torsions["psi"][0]]
>>> kernel = TorsionalKernel.from_topology(ala2.topology, quads, [math.pi, 0.3])
>>> [len(m) for m in kernel.moving_atoms], kernel.n_levels
([7, 7], 2)
"""
import math

import numpy as np
import torch

from ..geometry import dihedral, wrap_angle
from ..systems.torsions import bond_graph, pivot_side
from .steps import batch_sum, standard_normal

__all__ = ["GaussianKernel", "BlockGaussianKernel", "TorsionalKernel"]


class GaussianKernel:
    """Isotropic Gaussian noising kernel k(ỹ | y) = N(ỹ; α y, σ² I).

    Parameters
    ----------
    alphas : sequence of float
        Scale α of each noise level, in (0, 1].
    sigmas : sequence of float, optional
        Noise standard deviations σ (units of y), > 0.  Default: variance preserving,
        σ = sqrt(1 − α²) (then α must be < 1).

    Notes
    -----
    Proposal of the initialisation: y' ~ N(ỹ/α, (σ/α)² I), whose density in y' is
    proportional to k(ỹ | y').  Kernel energy −log k = |ỹ − α y|²/(2σ²) + const.
    The kernel commutes with shifts y → y + 2π·e_j (ỹ → ỹ + 2πα·e_j), so it may be used on
    unwrapped periodic coordinates (dihedrals): the wrapped chain stays exact.
    """

    def __init__(self, alphas, sigmas=None):
        alphas = [float(a) for a in np.atleast_1d(np.asarray(alphas, dtype=float))]
        if not alphas or any(not (0.0 < a <= 1.0) for a in alphas):
            raise ValueError(f"alphas must be a non-empty list of values in (0, 1], got {alphas}")
        if sigmas is None:
            if any(a == 1.0 for a in alphas):
                raise ValueError("alpha = 1 gives sigma = 0 in the variance-preserving "
                                 "schedule; pass explicit sigmas")
            sigmas = [math.sqrt(1.0 - a * a) for a in alphas]
        sigmas = [float(s) for s in np.atleast_1d(np.asarray(sigmas, dtype=float))]
        if len(sigmas) != len(alphas) or any(not (s > 0 and math.isfinite(s)) for s in sigmas):
            raise ValueError(f"sigmas must be {len(alphas)} finite values > 0, got {sigmas}")
        self.alphas, self.sigmas = alphas, sigmas

    @property
    def n_levels(self):
        """Number of noise levels (int)."""
        return len(self.alphas)

    def describe(self, level):
        """Short label of a level (str)."""
        return f"alpha={self.alphas[level]:g}, sigma={self.sigmas[level]:.3g}"

    def noise(self, y, level, generator):
        """Draw ỹ ~ N(α y, σ²), same shape as y (batch, ...)."""
        return self.alphas[level] * y + self.sigmas[level] * standard_normal(y.shape, generator, y)

    def energy(self, y, y_tilde, level):
        """Kernel energy e = |ỹ − α y|²/(2σ²), shape (batch,), and its force −∇_y e."""
        a, s2 = self.alphas[level], self.sigmas[level] ** 2
        r = y_tilde - a * y
        return batch_sum(r ** 2) / (2 * s2), a * r / s2

    def propose(self, y, y_tilde, level, generator):
        """Initialisation proposal y' ~ N(ỹ/α, (σ/α)² I) (∝ k(ỹ | y'))."""
        a, s = self.alphas[level], self.sigmas[level]
        return y_tilde / a + (s / a) * standard_normal(y.shape, generator, y)


class BlockGaussianKernel(GaussianKernel):
    """Gaussian noise on one block of particles per level (a blocked DiGS kernel).

    Level ℓ noises only the particles in ``blocks[ℓ]``: ỹ_B = α y_B + σ ε, and the
    initialisation proposes y'_B ~ N(ỹ_B/α, (σ/α)² I) with every other coordinate kept.
    The auxiliary variable lives on the block alone, so the joint p(y) k(ỹ_B | y_B) is a
    valid DiGS target and the MH ratio is still p(y')/p(y).  For targets made of weakly
    coupled parts (MW-32: 16 independent double wells) the d-dimensional acceptance
    exp(−d(1/α² − 1)/2) of a full Gaussian proposal becomes that of one block.

    Parameters
    ----------
    alpha : float
        Scale α in (0, 1) used for every block.
    blocks : sequence of sequences of int
        Particle indices of each block (one level per block, cycled in order).
    sigma : float, optional
        Noise standard deviation (units of y); default sqrt(1 − α²).

    Notes
    -----
    States have shape (batch, n_particles, d); coordinates outside the block are ignored
    by :meth:`energy` and unchanged by :meth:`propose`.
    """

    def __init__(self, alpha, blocks, sigma=None):
        blocks = [sorted(int(i) for i in block) for block in blocks]
        if not blocks or any(not block for block in blocks):
            raise ValueError("blocks must be a non-empty list of non-empty particle index lists")
        super().__init__([alpha] * len(blocks), None if sigma is None else [sigma] * len(blocks))
        self.blocks = blocks

    def describe(self, level):
        """Short label of a level (str)."""
        return f"block {self.blocks[level]}, " + super().describe(level)

    def _mask(self, y, level):
        mask = torch.zeros(y.shape[-2], 1, dtype=torch.bool, device=y.device)
        mask[self.blocks[level]] = True
        return mask

    def noise(self, y, level, generator):
        """ỹ = α y + σ ε on the block, 0 elsewhere; shape (batch, n, d)."""
        return torch.where(self._mask(y, level), super().noise(y, level, generator),
                           torch.zeros_like(y))

    def energy(self, y, y_tilde, level):
        """Kernel energy |ỹ_B − α y_B|²/(2σ²) (batch,) and its force (batch, n, d)."""
        mask = self._mask(y, level)
        e, f = super().energy(torch.where(mask, y, y_tilde / self.alphas[level]), y_tilde, level)
        return e, torch.where(mask, f, torch.zeros_like(f))

    def propose(self, y, y_tilde, level, generator):
        """y'_B ~ N(ỹ_B/α, (σ/α)² I); other particles unchanged."""
        return torch.where(self._mask(y, level), super().propose(y, y_tilde, level, generator), y)


class TorsionalKernel:
    """Noise on a few dihedral angles, with rigid pivot rotations as initialisation.

    The auxiliary variable is θ̃ = (θ̃_1, …, θ̃_m) on the torus, with
    k(θ̃ | x) = Π_j WN(θ̃_j; θ_j(x), σ_j²), WN the wrapped normal and θ_j(x) the
    dihedral of atoms ``torsions[j]``.  The joint p(x) k(θ̃ | x) is a DiGS target with a
    non-isotropic, nonlinear kernel.

    Parameters
    ----------
    torsions : array-like of int, shape=(m, 4)
        Atom quadruples (a, b, c, d) of the noised dihedrals.
    moving_atoms : sequence of m sequences of int
        For each torsion, the atoms rigidly rotated about the b–c bond by the pivot move:
        they must contain exactly one end atom (a or d) and neither b nor c.  Sets must be
        disjoint, and no set may contain an atom of another torsion.
    sigmas : sequence of float, or array-like, shape=(n_levels, m)
        Noise scale σ (radians) of each level (one value for all torsions, or one per
        torsion).

    Notes
    -----
    *Initialisation.*  Draw θ'_j ~ WN(θ̃_j, σ_j²) — the density of θ'_j is proportional to
    k(θ̃_j | θ'_j) because the wrapped normal is symmetric — and rotate the moving atoms of
    torsion j about the b_j → c_j axis by θ'_j − θ_j(x), which sets θ_j(x') = θ'_j exactly.

    *Why the MH ratio is p(x')/p(x).*  The rotation of torsion j by t is the flow G_t of
    the vector field v_i = ω × (x_i − x_b) on the moving atoms (ω the unit b → c axis, a
    function of the unmoved atoms only), 0 elsewhere.  Its divergence is zero (each v_i is
    a rotation of x_i, and it does not depend on the moving atoms otherwise), so G_t
    preserves Lebesgue measure, and θ_j(G_t x) = θ_j(x) + t.  In flow-box coordinates
    (θ_j, orbit label) Lebesgue measure is dθ_j × (transverse measure), i.e. the
    Jacobian does not depend on θ_j — as for the Z-matrix transform, whose Jacobian
    Π r² sin θ contains no dihedral.  The move therefore is a Gibbs-type update of θ_j
    alone with proposal ∝ k(θ̃ | θ'), and the kernel factors cancel in the MH ratio,
    leaving min(1, p(x')/p(x)).  The conditions on ``moving_atoms`` make the flows of
    different torsions commute and leave the other torsions unchanged, so the same
    argument holds on the torus of all m torsions.

    *Denoising* runs MALA/HMC in Cartesian space on −u(x) + Σ_j log WN(θ̃_j; θ_j(x), σ_j²),
    the gradient of the dihedral term from torch autograd.  The wrapped normal is summed
    over enough images (2πk shifts) for a relative error below 1e−15.
    """

    def __init__(self, torsions, moving_atoms, sigmas):
        torsions = torch.as_tensor(np.asarray(torsions, dtype=np.int64).reshape(-1, 4))
        if len(moving_atoms) != torsions.shape[0]:
            raise ValueError(f"need one moving-atom set per torsion ({torsions.shape[0]}), "
                             f"got {len(moving_atoms)}")
        canonical, sets = [], []
        for j, (quad, moving) in enumerate(zip(torsions.tolist(), moving_atoms)):
            moving = sorted({int(i) for i in moving})
            a, b, c, d = quad
            if b in moving or c in moving or (a in moving) == (d in moving):
                raise ValueError(f"moving atoms of torsion {quad} must contain exactly one end "
                                 "atom (first or last) and neither axis atom")
            canonical.append(quad if d in moving else quad[::-1])  # moving end last
            sets.append(moving)
        for j, moving in enumerate(sets):
            for k in range(len(sets)):
                if k != j and (set(moving) & set(sets[k]) or set(moving) & set(canonical[k])):
                    raise ValueError(f"moving atoms of torsion {j} overlap torsion {k} or its "
                                     "moving atoms; the pivot moves must commute")
        self.torsions = torch.tensor(canonical, dtype=torch.long)
        self.moving_atoms = [torch.tensor(s, dtype=torch.long) for s in sets]
        m = self.torsions.shape[0]
        sig = np.asarray(sigmas, dtype=float)
        sig = np.repeat(sig.reshape(-1, 1), m, axis=1) if sig.ndim <= 1 else sig
        if sig.ndim != 2 or sig.shape[1] != m or sig.shape[0] == 0 \
                or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
            raise ValueError(f"sigmas must be positive finite radians, one per level (or "
                             f"(n_levels, {m})), got {sigmas!r}")
        self.sigmas = torch.tensor(sig)
        # images of the wrapped normal: (2πK − π)² / (2σ²) > 40 for the largest σ
        self._images = [torch.arange(-k, k + 1, dtype=torch.float64) * 2 * math.pi for k in
                        (int(math.ceil((math.pi + math.sqrt(80) * s.max().item()) / (2 * math.pi)))
                         for s in self.sigmas)]

    @classmethod
    def from_topology(cls, topology, torsions, sigmas):
        """Kernel whose pivot moves rotate the smaller side of each torsion's central bond.

        Parameters
        ----------
        topology : openmm.app.Topology
            Bonded graph (``topology.bonds()``).
        torsions : array-like of int, shape=(m, 4)
            Dihedral quadruples.
        sigmas
            As in the constructor (radians).

        Raises
        ------
        ValueError
            If a torsion is not a bonded chain a–b–c–d of the topology, or its central bond
            is in a ring (its sides are not separated); see
            :func:`~openmm_dikl.systems.torsions.pivot_side`.
        """
        neighbours = bond_graph(topology)
        moving = [pivot_side(neighbours, quad).moving_atoms
                  for quad in np.asarray(torsions, dtype=int).reshape(-1, 4)]
        return cls(torsions, moving, sigmas)

    @property
    def n_levels(self):
        """Number of noise levels (int)."""
        return self.sigmas.shape[0]

    def describe(self, level):
        """Short label of a level (str)."""
        return "sigma=" + ",".join(f"{math.degrees(s):.0f}deg" for s in self.sigmas[level].tolist())

    def angles(self, x):
        """Dihedrals θ_j(x) in radians, shape (batch, m), of positions (batch, n, 3) nm."""
        p = x[:, self.torsions]  # (batch, m, 4, 3)
        return dihedral(p[..., 0, :], p[..., 1, :], p[..., 2, :], p[..., 3, :])

    def noise(self, x, level, generator):
        """θ̃ ~ WN(θ(x), σ²): wrapped angles (batch, m) in [−π, π)."""
        theta = self.angles(x)
        return wrap_angle(theta + self.sigmas[level] * standard_normal(theta.shape, generator, theta))

    def energy(self, x, theta_tilde, level):
        """Kernel energy −Σ_j log WN(θ̃_j; θ_j(x), σ_j²) + const, shape (batch,), and −∇_x."""
        sigma, images = self.sigmas[level], self._images[level]
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            d = wrap_angle(theta_tilde - self.angles(x))[..., None] + images
            e = -torch.logsumexp(-d ** 2 / (2 * sigma[:, None] ** 2), dim=-1).sum(-1)
            (grad,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), -grad

    def propose(self, x, theta_tilde, level, generator):
        """Pivot proposal: set θ_j(x') = θ'_j ~ WN(θ̃_j, σ_j²) by rigid rotations."""
        target = theta_tilde + self.sigmas[level] * standard_normal(theta_tilde.shape, generator, x)
        delta = target - self.angles(x)
        x = x.clone()
        for j, moving in enumerate(self.moving_atoms):
            b, c = int(self.torsions[j, 1]), int(self.torsions[j, 2])
            origin = x[:, b:b + 1, :]
            k = x[:, c] - x[:, b]
            k = (k / torch.linalg.norm(k, dim=-1, keepdim=True))[:, None, :]
            v = x[:, moving] - origin
            cos, sin = torch.cos(delta[:, j])[:, None, None], torch.sin(delta[:, j])[:, None, None]
            x[:, moving] = origin + v * cos + torch.cross(k.expand_as(v), v, dim=-1) * sin \
                + k * (k * v).sum(-1, keepdim=True) * (1 - cos)
        return x

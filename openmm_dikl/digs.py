"""Batched Diffusive Gibbs Sampling (DiGS; Chen et al., ICML 2024) in torch.

DiGS samples the joint p(y) k(ỹ | y) of the state y and a noisy copy ỹ by Gibbs steps:

1. *Noising*: ỹ ~ k(· | y) (exact).
2. *Denoising*: y ~ p(y | ỹ) ∝ p(y) k(ỹ | y) by
   a. an *initialisation* (Metropolis-within-Gibbs): propose y' from a density
      proportional to y' ↦ k(ỹ | y'); because the proposal is proportional to the kernel
      term, the acceptance probability is min(1, p(y')/p(y)).  This is the move that
      jumps between modes;
   b. ``n_denoise_steps`` MALA or HMC steps on log p(y | ỹ) = −u(y) + log k(ỹ | y).

Both steps leave p(y) k(ỹ | y) invariant, so the marginal chain of y is an exact MCMC for
p ∝ exp(−u).  A *sweep* is one noising + denoising at one noise level; sweeps cycle
through the levels in the order given.  The paper's order x → x̃_{σT} → x → x̃_{σT−1} → …
(largest noise first) is ``alphas=[α_T, …, α_1]`` with α_T the smallest.

Kernels:

* :class:`GaussianKernel` — k(ỹ | y) = N(ỹ; α y, σ² I), σ² = 1 − α² by default (VP),
  with proposal y' ~ N(ỹ/α, (σ/α)² I); on Cartesian positions or, with a ``transform``,
  on (standardised) internal coordinates.
* :class:`TorsionalKernel` — noise on chosen dihedrals only (for molecules):
  θ̃_j ~ wrapped normal WN(θ_j(x), σ_j²); the initialisation sets each θ_j to
  θ_j' ~ WN(θ̃_j, σ_j²) by rigidly rotating the atoms on one side of the torsion bond
  (a pivot move).  See its docstring for why the MH ratio is still p(x')/p(x).

Molecules.  An isotropic Gaussian kernel on Cartesian positions (or on the 60 internal
coordinates of alanine dipeptide) almost never accepts an initialisation large enough
to change a backbone dihedral: for a near-harmonic target the acceptance is about
exp(−d (1/α² − 1)/2) in d dimensions.  The torsional kernel puts the noise where the
slow mode lives; with σ = π (an almost uniform wrapped normal) and one MALA step per
sweep it made ≈ 700 core-to-core φ transitions per 10⁶ force evaluations on alanine
dipeptide in implicit solvent at 300 K, where MALA, HMC, Cartesian DiGS and 1 fs
Langevin made none (``benchmarks/digs_torch.py``).

>>> import math
>>> from openmm_dikl.digs import TorsionalKernel
>>> kernel = TorsionalKernel.alanine_dipeptide([math.pi, 0.3])  # φ, ψ pivots
>>> [len(m) for m in kernel.moving_atoms], kernel.n_levels
([7, 7], 2)

>>> import torch
>>> from openmm_dikl.digs import DiGSSampler
>>> def gaussian(x):
...     return 0.5 * (x ** 2).sum(-1), -x
>>> sampler = DiGSSampler(gaussian, alphas=[0.5], step_size=0.3,
...                       generator=torch.Generator().manual_seed(0))
>>> result = sampler.run(torch.zeros(200, 2), n_sweeps=60, burn_in=10, progress=False)
>>> tuple(result.samples.shape)
(200, 50, 2)
>>> bool(abs(result.samples.var() - 1.0) < 0.1)
True
"""
import logging
import math

import numpy as np
import torch

from .internal import dihedral, wrap_angle
from .torch_mcmc import (_accept, _as_energy_fn, _as_tensor_nm, _bsum, _randn, _select,
                         TransformedEnergy, adapt_step_size, hmc_step, mala_step)

__all__ = ["GaussianKernel", "BlockGaussianKernel", "TorsionalKernel", "DiGSSampler", "DiGSResult"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- kernels
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
        return self.alphas[level] * y + self.sigmas[level] * _randn(y.shape, generator, y)

    def energy(self, y, y_tilde, level):
        """Kernel energy e = |ỹ − α y|²/(2σ²), shape (batch,), and its force −∇_y e."""
        a, s2 = self.alphas[level], self.sigmas[level] ** 2
        r = y_tilde - a * y
        return _bsum(r ** 2) / (2 * s2), a * r / s2

    def propose(self, y, y_tilde, level, generator):
        """Initialisation proposal y' ~ N(ỹ/α, (σ/α)² I) (∝ k(ỹ | y'))."""
        a, s = self.alphas[level], self.sigmas[level]
        return y_tilde / a + (s / a) * _randn(y.shape, generator, y)


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
            If a central bond is in a ring (its sides are not separated).
        """
        n = topology.getNumAtoms()
        neighbours = [set() for _ in range(n)]
        for bond in topology.bonds():
            i, j = bond[0].index, bond[1].index
            neighbours[i].add(j)
            neighbours[j].add(i)
        moving = []
        for a, b, c, d in np.asarray(torsions, dtype=int).reshape(-1, 4):
            sides = []
            for root, other in ((b, c), (c, b)):  # component of root without the bond root–other
                seen, stack = {int(root)}, [int(root)]
                while stack:
                    i = stack.pop()
                    for j in neighbours[i]:
                        if j not in seen and not (i == root and j == other):
                            seen.add(j)
                            stack.append(j)
                sides.append(seen - {int(root)})
            if c in sides[0] or not {a, d} - {b, c} or a not in sides[0] or d not in sides[1]:
                raise ValueError(f"torsion {(a, b, c, d)}: its atoms must form a bonded chain "
                                 f"a-b-c-d and the bond {b}-{c} must not be in a ring")
            moving.append(sorted(min(sides, key=len)))
        return cls(torsions, moving, sigmas)

    @classmethod
    def alanine_dipeptide(cls, sigmas, topology=None, torsions=("phi", "psi")):
        """Kernel on φ and/or ψ of alanine dipeptide (mdtraj conventions, atom order of
        the shipped topology unless ``topology`` is given).

        φ = (C_ACE, N, Cα, C) pivots the acetyl cap and amide H (7 atoms) about N–Cα;
        ψ = (N, Cα, C, N_NME) pivots the carbonyl O and N-methyl cap (7 atoms) about Cα–C.
        """
        from .internal import alanine_dipeptide_zmatrix
        roots, placed = alanine_dipeptide_zmatrix(topology)
        if topology is None:
            from openmm import app
            from .systems import shipped_path
            topology = app.PDBFile(shipped_path("alanine_dipeptide.pdb")).topology
        n, ca, c = roots
        quads = {"phi": (placed[0][0], n, ca, c), "psi": (n, ca, c, placed[1][0])}
        unknown = set(torsions) - set(quads)
        if unknown or not torsions:
            raise ValueError(f"torsions must be a non-empty subset of ('phi', 'psi'), got {torsions}")
        return cls.from_topology(topology, [quads[t] for t in torsions], sigmas)

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
        return wrap_angle(theta + self.sigmas[level] * _randn(theta.shape, generator, theta))

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
        target = theta_tilde + self.sigmas[level] * _randn(theta_tilde.shape, generator, x)
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


# ---------------------------------------------------------------------- sampler
class DiGSResult:
    """Output of :meth:`DiGSSampler.run`.

    Attributes
    ----------
    samples : torch.Tensor, shape=(n_chains, n_kept, ...) or None
        Kept configurations (Cartesian, nm for molecules), one per ``thin`` sweeps after
        burn-in; None with ``keep_samples=False``.
    energies : torch.Tensor, shape=(n_chains, n_kept) or None
        Reduced energies of the kept samples: u(x) (dimensionless, kT), or with a
        ``transform`` the energy of the sampled variable, u(x(y)) − log|det ∂x/∂y|.
    statistics : dict
        ``init_acceptance`` (n_levels,): fraction of accepted initialisations;
        ``denoise_acceptance`` (n_levels,): mean MH probability of the denoising steps
        (NaN for levels without steps);
        ``sweeps`` (n_levels,): sweeps per level (after burn-in, per chain);
        ``force_evaluations`` (int): configurations evaluated, all chains, burn-in included;
        ``force_evaluations_per_level`` (n_levels,); ``step_size`` (n_levels, n_chains).
    final : torch.Tensor, shape=(n_chains, ...)
        Last configuration of each chain (Cartesian), to continue a run.
    """

    def __init__(self, samples, energies, statistics, final):
        self.samples, self.energies = samples, energies
        self.statistics, self.final = statistics, final

    def __repr__(self):
        shape = None if self.samples is None else tuple(self.samples.shape)
        return (f"DiGSResult(samples={shape}, init_acceptance="
                f"{np.round(self.statistics['init_acceptance'], 4).tolist()}, "
                f"force_evaluations={self.statistics['force_evaluations']})")


class DiGSSampler:
    """Diffusive Gibbs sampler with many chains in torch.

    Parameters
    ----------
    energy : callable or TargetSystem
        ``energy_and_force(x) -> (u (batch,), −∇u (batch, ...))`` in reduced units (any
        torch energy, the OpenMM bridge, ANI), or a
        :class:`~openmm_dikl.systems.TargetSystem` (torch twin → autograd, else the
        bridge with ``n_workers``; close with :meth:`close`).
    alphas : sequence of float, optional
        Gaussian-kernel levels α in (0, 1], used in this order (cycled).  Required unless
        ``kernel`` is given.
    n_denoise_steps : int or sequence of int
        MALA/HMC steps per sweep (>= 0), or one count per level (e.g. pure pivot sweeps
        with 0 steps mixed with sweeps that also relax the other coordinates; at least
        one level needs steps for the chain to be ergodic).
    step_size : float
        Initial denoising step: MALA h (units of y squared, e.g. nm²) or HMC ε (units of
        y); adapted per chain and level during burn-in if ``adapt``.
    denoiser : {"mala", "hmc"}
        Denoising MCMC.
    transform : object, optional
        Sample in transformed coordinates y = T(x): needs ``forward(x) -> (y, log_det)``
        and ``inverse(y) -> (x, log_det)`` with log_det = log|det ∂x/∂y| (e.g.
        :class:`~openmm_dikl.internal.InternalTransform`); the density of y is
        exp(−u(x(y)) + log_det(y)).  Only with a Gaussian kernel.
    sigmas : sequence of float, optional
        Gaussian-kernel σ per level (default VP, σ² = 1 − α²).
    kernel : GaussianKernel or TorsionalKernel, optional
        Noising kernel (instead of ``alphas``/``sigmas``).
    mh_init : bool
        Accept initialisations with min(1, p(y')/p(y)) (exact).  False accepts every
        finite proposal: biased, for comparison only.
    n_leapfrog : int
        Leapfrog steps per HMC step.
    adapt : bool
        Adapt step sizes during burn-in (frozen afterwards, keeping exactness).
    target_acceptance : float, optional
        Denoising acceptance targeted by adaptation (0.574 MALA, 0.65 HMC).
    generator : torch.Generator, optional
        Randomness (default seeded with ``seed``).
    seed : int
        Seed used when ``generator`` is None.
    n_workers : int
        Bridge workers when ``energy`` is a target without torch twin.

    Notes
    -----
    Step sizes adapted during a run's burn-in are kept in ``step_size`` (n_levels,
    n_chains) and reused by the next :meth:`run` with the same number of chains.

    Force evaluations per sweep and chain: 1 (initialisation) + ``n_denoise_steps``
    (MALA) or + ``n_denoise_steps · n_leapfrog`` (HMC) of the sweep's level.  The initialisation needs only
    the energy, but its force is kept for the denoising steps if accepted.
    """

    def __init__(self, energy, alphas=None, n_denoise_steps=5, step_size=None, denoiser="mala",
                 transform=None, sigmas=None, kernel=None, mh_init=True, n_leapfrog=5,
                 adapt=True, target_acceptance=None, generator=None, seed=0, n_workers=1):
        self.target = energy if hasattr(energy, "has_torch_twin") else None
        if kernel is None:
            if alphas is None:
                raise ValueError("pass alphas (Gaussian kernel levels) or a kernel")
            kernel = GaussianKernel(alphas, sigmas)
        elif alphas is not None or sigmas is not None:
            raise ValueError("pass either alphas/sigmas or kernel, not both")
        if not isinstance(kernel, (GaussianKernel, TorsionalKernel)):
            raise ValueError(f"kernel must be a GaussianKernel or TorsionalKernel, got "
                             f"{type(kernel).__name__}")
        if transform is not None and isinstance(kernel, TorsionalKernel):
            raise ValueError("the torsional kernel acts on Cartesian positions; use no transform")
        if denoiser not in ("mala", "hmc"):
            raise ValueError(f"denoiser must be 'mala' or 'hmc', got {denoiser!r}")
        if step_size is None or not (float(step_size) > 0 and math.isfinite(float(step_size))):
            raise ValueError(f"step_size must be a finite value > 0, got {step_size!r}")
        steps = np.atleast_1d(np.asarray(n_denoise_steps))
        if steps.ndim != 1 or len(steps) not in (1, kernel.n_levels) \
                or not np.issubdtype(steps.dtype, np.integer) or (steps < 0).any():
            raise ValueError(f"n_denoise_steps must be an integer >= 0 or one per level "
                             f"({kernel.n_levels}), got {n_denoise_steps!r}")
        if int(n_leapfrog) < 1:
            raise ValueError(f"n_leapfrog must be >= 1, got {n_leapfrog}")
        self.kernel, self.transform = kernel, transform
        self.n_denoise_steps = [int(k) for k in np.broadcast_to(steps, (kernel.n_levels,))]
        self.n_leapfrog = int(n_leapfrog)
        self.denoiser, self.mh_init, self.adapt = denoiser, bool(mh_init), bool(adapt)
        self.target_acceptance = float(target_acceptance if target_acceptance is not None
                                       else (0.574 if denoiser == "mala" else 0.65))
        self.initial_step_size = float(step_size)
        self.step_size = None  # (n_levels, n_chains) after a run
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._energy_fn, self._owns = _as_energy_fn(energy, n_workers)
        # the density of the sampled variable: with a transform, u(x(y)) − log|det ∂x/∂y|
        self._sampled_energy = (self._energy_fn if transform is None
                                else TransformedEnergy(self._energy_fn, transform))
        self.force_evaluations = 0

    def close(self):
        """Release a bridge opened by the sampler itself (idempotent)."""
        if self._owns:
            self._energy_fn.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False

    # -------------------------------------------------------------- energies on y
    def _energy(self, y):
        """Reduced energy and force of the sampled variable y (Cartesian or transformed)."""
        self.force_evaluations += int(y.shape[0])
        return self._sampled_energy(y)

    def _to_state(self, x):
        return x if self.transform is None else self.transform.forward(x)[0].detach()

    def _to_cartesian(self, y):
        return y if self.transform is None else self.transform.inverse(y)[0].detach()

    def _check_x0(self, x0):
        x0 = _as_tensor_nm(x0)
        if self.target is not None:
            expected = (self.target.n_particles, self.target.spatial_dim)
            if x0.dim() != 3 or tuple(x0.shape[1:]) != expected:
                raise ValueError(f"x0 must have shape (n_chains, {expected[0]}, {expected[1]}) "
                                 f"in nm, got {tuple(x0.shape)}")
        if isinstance(self.kernel, TorsionalKernel) and (x0.dim() != 3 or x0.shape[-1] != 3):
            raise ValueError(f"the torsional kernel needs positions (n_chains, n_atoms, 3), "
                             f"got {tuple(x0.shape)}")
        if x0.dim() < 2 or x0.shape[0] == 0:
            raise ValueError(f"x0 must have shape (n_chains, ...), got {tuple(x0.shape)}")
        if not torch.isfinite(x0).all():
            raise ValueError("x0 contains NaN or inf")
        return x0.clone()

    def _denoise_step(self, y, uc, fc, energy_fn, h):
        if self.denoiser == "mala":
            return mala_step(y, uc, fc, energy_fn, h, self.generator)
        return hmc_step(y, uc, fc, energy_fn, h, self.n_leapfrog, self.generator)

    # -------------------------------------------------------------- main loop
    def run(self, x0, n_sweeps, burn_in=0, thin=1, keep_samples=True, progress=True,
            callback=None):
        """Run all chains for ``n_sweeps`` sweeps (one noise level each, cycled).

        Parameters
        ----------
        x0 : torch.Tensor or openmm.unit.Quantity, shape=(n_chains, ...)
            Initial states (Cartesian; nm for molecules), finite.
        n_sweeps : int
            Sweeps per chain, burn-in included.
        burn_in : int
            Initial sweeps not kept (step sizes adapt during them).
        thin : int
            Keep one sample every ``thin`` sweeps after burn-in.
        keep_samples : bool
            Store samples (False: only statistics and the final state; use ``callback``).
        progress : bool
            Show a tqdm progress bar.
        callback : callable, optional
            ``callback(sweep, x, statistics)`` after every sweep with the Cartesian states
            x (n_chains, ...) and a dict with ``level`` and ``init_accepted`` (bool
            tensor (n_chains,)).

        Returns
        -------
        DiGSResult

        Raises
        ------
        ValueError
            On a non-finite or wrongly shaped x0 or bad sweep counts.
        """
        from tqdm.auto import tqdm
        x0 = self._check_x0(x0)
        n_sweeps, burn_in, thin = int(n_sweeps), int(burn_in), int(thin)
        if n_sweeps < 1 or not 0 <= burn_in < n_sweeps or thin < 1:
            raise ValueError(f"need n_sweeps >= 1, 0 <= burn_in < n_sweeps, thin >= 1; got "
                             f"{n_sweeps}, {burn_in}, {thin}")
        kernel, n_chains, n_levels = self.kernel, x0.shape[0], self.kernel.n_levels
        if self.step_size is None or self.step_size.shape != (n_levels, n_chains):
            self.step_size = torch.full((n_levels, n_chains), self.initial_step_size,
                                        dtype=torch.float64)
        h = self.step_size
        y = self._to_state(x0)
        start_evals = self.force_evaluations
        u, f = self._energy(y)
        if not torch.isfinite(u).all():
            raise ValueError("x0 has non-finite energy in chain "
                             f"{int(torch.nonzero(~torch.isfinite(u))[0])}")
        n_init_acc, n_sweep, den_prob = (np.zeros(n_levels) for _ in range(3))
        evals_level = np.zeros(n_levels, dtype=np.int64)
        kept, kept_u = [], []
        bar = tqdm(range(n_sweeps), disable=not progress, desc="DiGS")
        for sweep in bar:
            level = sweep % n_levels
            before = self.force_evaluations
            y_tilde = kernel.noise(y, level, self.generator)
            # initialisation: proposal ∝ k(ỹ | y'), accepted with min(1, p(y')/p(y))
            y_new = kernel.propose(y, y_tilde, level, self.generator)
            u_new, f_new = self._energy(y_new)
            if self.mh_init:
                accepted, _ = _accept(u - u_new, self.generator)
            else:
                accepted = torch.isfinite(u_new) & torch.isfinite(_bsum(f_new))
            y, u, f = _select(accepted, y_new, y), torch.where(accepted, u_new, u), \
                _select(accepted, f_new, f)
            # denoising on −u(y) + log k(ỹ | y)
            e_k, f_k = kernel.energy(y, y_tilde, level)
            uc, fc = u + e_k, f + f_k

            def conditional(z, _level=level, _y_tilde=y_tilde):
                uz, fz = self._energy(z)
                ez, gz = kernel.energy(z, _y_tilde, _level)
                return uz + ez, fz + gz

            prob_sum = torch.zeros(n_chains, dtype=torch.float64)
            n_steps = self.n_denoise_steps[level]
            for _ in range(n_steps):
                y, uc, fc, _, prob = self._denoise_step(y, uc, fc, conditional, h[level])
                prob_sum += torch.nan_to_num(prob, nan=0.0)
                if sweep < burn_in and self.adapt:
                    h[level] = adapt_step_size(h[level], prob, self.target_acceptance)
            e_k, f_k = kernel.energy(y, y_tilde, level)
            u, f = uc - e_k, fc - f_k
            evals_level[level] += self.force_evaluations - before
            if sweep >= burn_in:
                n_init_acc[level] += float(accepted.double().mean())
                n_sweep[level] += 1
                if n_steps:
                    den_prob[level] += float(prob_sum.mean()) / n_steps
                if keep_samples and (sweep - burn_in) % thin == 0:
                    kept.append(self._to_cartesian(y).clone())
                    kept_u.append(u.clone())
            if callback is not None:
                callback(sweep, self._to_cartesian(y), {"level": level, "init_accepted": accepted})
            if progress and sweep % 50 == 0 and n_sweep.sum():
                bar.set_postfix(init=f"{n_init_acc.sum() / n_sweep.sum():.3f}")
        self.step_size = h
        no_steps = np.array(self.n_denoise_steps) == 0
        stats = {"init_acceptance": n_init_acc / np.maximum(n_sweep, 1),
                 "denoise_acceptance": np.where(no_steps, np.nan, den_prob / np.maximum(n_sweep, 1)),
                 "sweeps": n_sweep.astype(int),
                 "force_evaluations": int(self.force_evaluations - start_evals),
                 "force_evaluations_per_level": evals_level,
                 "step_size": h.clone(),
                 "levels": [kernel.describe(i) for i in range(n_levels)]}
        samples = torch.stack(kept, 1) if kept else None
        energies = torch.stack(kept_u, 1) if kept else None
        return DiGSResult(samples, energies, stats, self._to_cartesian(y).clone())

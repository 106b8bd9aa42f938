"""Where the DiKL noise acts: on the positions, or on standardised internal coordinates.

A *diffusion space* maps generator samples x (positions in nm) to the variable y that
the VP kernel x_t = α y + σ ε noises, and gives the target's reduced energy as a density
of y (what the posterior sampler needs).  The reverse diffusive KL is a divergence in any
space the generator and the target are both pushed into, so the choice changes how
informative the noisy scores are, not what the generator converges to.

* :class:`CartesianSpace` (``schedule.space = "cartesian"``): y = x / c (nm / c), in the
  zero-centre-of-mass subspace for translation-invariant targets.  For particles.
* :class:`InternalSpace` (``"internal"``): y = z, the target's standardised internal
  coordinates (:class:`~openmm_dikl.internal.InternalTransform` registered as
  ``TargetSystem.internal_transform``), shape (batch, 1, 3N − 6), dimensionless.  Every
  bond, angle and stiff dihedral is then close to a unit-width Gaussian, for which the
  mixed score identity has (nearly) zero variance, and the noise that bridges backbone
  basins (σ of order 1 rad on φ and ψ) leaves the covalent geometry readable.  In
  Cartesian nm a molecule has force constants near 10⁵ kJ/mol/nm², so noise large enough
  to change a torsion makes importance sampling of the posterior hopeless.

The density of z is restricted to the window centre ± π of every dihedral (z outside it
has u = +∞): the map z → x is 2π-periodic, so without the cut the density would not be
normalisable.  The generator's z always lie inside, since the transform wraps dihedrals.
The cut is where the target registers least density (for alanine dipeptide: none at the
φ cut, 0.2 % per 10° at the ψ cut), because the target score identity assumes a density
that vanishes at the boundary; the denoising part of the mixed identity does not.  Of
two cuts of equally low density, prefer the one that keeps the basins joined along their
transition path: the generator is a continuous map of its latent, so it moves mass
between basins through the window.
"""
import math

import torch

from ..energy import Energy, ScaledEnergy, TransformedEnergy
from ..geometry import remove_mean

__all__ = ["CartesianSpace", "InternalSpace", "diffusion_space", "check_model_shapes"]


class CartesianSpace:
    """y = x / c, centred on the centre of mass when ``centre`` (c in nm).

    Parameters
    ----------
    target : TargetSystem or target-like
        Gives ``n_particles`` and ``spatial_dim``.
    scale : float
        c (nm).
    centre : bool
        Work in the zero-centre-of-mass subspace.

    Attributes
    ----------
    shape : (int, int)
        (n_particles, spatial_dim) of y.
    """

    name = "cartesian"
    #: No periodic coordinates to jump on (see :class:`InternalSpace`).
    jumps = None

    def __init__(self, target, scale=1.0, centre=False):
        self.shape = (target.n_particles, target.spatial_dim)
        self.scale = float(scale)
        self.centre = bool(centre)

    def encode(self, x):
        """y (batch, n, d) of positions x (batch, n, d) in nm, differentiable."""
        if self.scale != 1.0:
            x = x / self.scale
        return remove_mean(x) if self.centre else x

    def energy(self, energy):
        """The reduced energy and force of y, from those of x (an Energy of positions)."""
        return ScaledEnergy(energy, self.scale)


class InternalSpace:
    """y = z (batch, 1, 3N − 6), the standardised internal coordinates of a molecule.

    Parameters
    ----------
    transform : openmm_dikl.internal.InternalTransform
        The standardisation (centres, widths, dihedral cuts).

    Attributes
    ----------
    shape : (int, int)
        (1, n_internal).
    centre : bool
        Always False (internal coordinates have no translation).
    """

    name = "internal"
    centre = False

    #: Dihedrals standardised by a width of at least this (rad) are the soft circles
    #: (backbone torsions, methyl rotors) that the posterior may jump on.
    JUMP_MIN_WIDTH = 0.99

    def __init__(self, transform):
        self.transform = transform
        self.shape = (1, transform.ic.n_internal)
        dihedrals = transform.ic.dihedral_index
        soft = dihedrals[transform.scale[dihedrals] >= self.JUMP_MIN_WIDTH]
        #: (coordinates, half-widths) of the soft dihedrals in z, for
        #: ``PosteriorSampler(jumps=...)``; None if there are none.
        self.jumps = (None if len(soft) == 0 else
                      (soft, math.pi / transform.scale[soft]))

    def encode(self, x):
        """z (batch, 1, n_internal) of positions x (batch, n_atoms, 3) nm, differentiable
        (dihedrals wrapped into their windows), in the dtype of x."""
        z, _ = self.transform.forward(x)
        return z.to(x.dtype)[:, None, :]

    def energy(self, energy):
        """u_z(z) = u(x(z)) − log|det ∂x/∂z| inside the windows, +∞ outside (reduced units,
        from an Energy of positions in nm)."""
        return _WindowedInternalEnergy(TransformedEnergy(energy, self.transform),
                                       self.transform)


class _WindowedInternalEnergy(Energy):
    """The density of z on its dihedral windows, for z of shape (batch, 1, n_internal)."""

    def __init__(self, energy, transform):
        super().__init__()
        self.energy = energy
        dihedrals = transform.ic.dihedral_index
        self._dihedrals = dihedrals
        self._half_width = math.pi / transform.scale[dihedrals]

    def _evaluate(self, z):
        flat = z.reshape(z.shape[0], -1)
        u, f = self.energy(flat)
        outside = (flat[:, self._dihedrals].abs() > self._half_width).any(-1)
        u = torch.where(outside, torch.full_like(u, math.inf), u)
        f = torch.where(outside[:, None], torch.zeros_like(f), f)
        return u, f.reshape(z.shape)

    def close(self):
        self.energy.close()


def diffusion_space(target, schedule, centre):
    """The space of a DiKL run.

    Parameters
    ----------
    target : TargetSystem or target-like
    schedule : openmm_dikl.dikl.config.ScheduleConfig
        Its ``space`` and ``coordinate_scale``.
    centre : bool
        The resolved centring of a Cartesian run.

    Raises
    ------
    ValueError
        ``space = "internal"`` for a target without a registered ``internal_transform``.
    """
    if schedule.space == "cartesian":
        return CartesianSpace(target, schedule.coordinate_scale, centre)
    transform = getattr(target, "internal_transform", None)
    if transform is None:
        raise ValueError(f"schedule.space='internal' needs standardised internal coordinates "
                         f"registered with the system (TargetSystem.internal_transform); "
                         f"{target.name!r} has none")
    return InternalSpace(transform)


def check_model_shapes(target, generator, score_model, space):
    """Check that the generator makes the target's positions and the score network fits
    the diffusion space (models without ``n_particles`` / ``spatial_dim`` are not checked).

    Raises
    ------
    ValueError
        A network built for another shape, naming the shapes.
    """
    for what, model, expected, where in (
            ("generator", generator, (target.n_particles, target.spatial_dim), "target"),
            ("score_model", score_model, space.shape, f"{space.name} diffusion space")):
        shape = (getattr(model, "n_particles", None), getattr(model, "spatial_dim", None))
        if shape != (None, None) and shape != expected:
            raise ValueError(f"{what} is built for {shape[0]} particles in {shape[1]}-D but "
                             f"the {where} of {target.name!r} has {expected[0]} in "
                             f"{expected[1]}-D")

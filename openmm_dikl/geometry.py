"""Geometry on batched torch positions: dihedrals, angles, angle wrapping, centring.

All functions are differentiable torch code and work on any leading batch shape.
Positions in any length unit (nm in the package); angles in radians.
"""
import math

import torch

__all__ = ["dihedral", "angle", "wrap_angle", "unit_vector", "remove_mean", "quaternion_rotation",
           "random_rotation"]


def wrap_angle(theta):
    """Wrap angles (radians, any shape) into [−π, π)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def unit_vector(v):
    """v / |v| along the last axis (any shape (..., d))."""
    return v / torch.linalg.norm(v, dim=-1, keepdim=True)


def dihedral(p0, p1, p2, p3):
    """Dihedral angle of four points (IUPAC / mdtraj convention), in radians.

    Parameters
    ----------
    p0, p1, p2, p3 : torch.Tensor, shape=(..., 3)
        Positions (any length unit).

    Returns
    -------
    torch.Tensor, shape=(...)
        Angle in (−π, π], differentiable (except for collinear points).
    """
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.cross(b0, b1, dim=-1), torch.cross(b1, b2, dim=-1)
    y = (b0 * n2).sum(-1) * torch.linalg.norm(b1, dim=-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def angle(p0, p1, p2):
    """Angle ∠(p0, p1, p2) at p1 in radians, shape (...), for points of shape (..., 3)."""
    u, v = unit_vector(p0 - p1), unit_vector(p2 - p1)
    cos = (u * v).sum(-1)
    sin = torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1)
    return torch.atan2(sin, cos)


def remove_mean(x):
    """Subtract the centroid of every configuration.

    Parameters
    ----------
    x : torch.Tensor, shape=(batch, n_particles, spatial_dim)
        Positions (nm) or any per-particle vectors (e.g. scores, 1/nm).

    Returns
    -------
    torch.Tensor, shape=(batch, n_particles, spatial_dim)
        ``x − mean_i x_i``: the projection onto the centred (zero centre-of-mass for
        equal masses) subspace.  Same unit as ``x``.
    """
    return x - x.mean(dim=-2, keepdim=True)


def quaternion_rotation(quaternion):
    """Rotation matrices of (not necessarily normalised) quaternions.

    Parameters
    ----------
    quaternion : torch.Tensor, shape=(batch, 4)
        (w, x, y, z), any non-zero length.  A standard normal 4-vector gives a
        uniformly (Haar) distributed rotation.

    Returns
    -------
    torch.Tensor, shape=(batch, 3, 3)
        Proper rotations (det +1), dimensionless, in the quaternion's dtype.
    """
    q = quaternion / torch.linalg.norm(quaternion, dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


def random_rotation(n, spatial_dim, generator=None, dtype=None, device=None):
    """Uniformly (Haar) distributed proper rotations.

    Parameters
    ----------
    n : int
        Number of rotations.
    spatial_dim : {2, 3}
        Dimension of the space.
    generator : torch.Generator, optional
        Source of randomness (default: torch's global generator); its device is where
        the numbers are drawn.
    dtype, device : optional
        Of the result (default: torch's default dtype, the generator's device).

    Returns
    -------
    torch.Tensor, shape=(n, spatial_dim, spatial_dim)
        Rotation matrices (det +1, dimensionless).  3-D: :func:`quaternion_rotation` of a
        standard normal 4-vector; 2-D: an angle uniform on [0, 2π).

    Raises
    ------
    ValueError
        For another ``spatial_dim``.
    """
    draw_device = generator.device if generator is not None else device
    dtype = dtype or torch.get_default_dtype()
    if spatial_dim == 3:
        q = torch.randn((n, 4), generator=generator, dtype=dtype, device=draw_device)
        return quaternion_rotation(q).to(device)
    if spatial_dim == 2:
        theta = 2 * math.pi * torch.rand((n,), generator=generator, dtype=dtype,
                                         device=draw_device)
        c, s = torch.cos(theta), torch.sin(theta)
        return torch.stack([c, -s, s, c], -1).reshape(n, 2, 2).to(device)
    raise ValueError(f"random rotations are implemented in 2-D and 3-D, not {spatial_dim}-D")

"""Geometry on batched torch positions: dihedrals, angles, angle wrapping, centring.

All functions are differentiable torch code and work on any leading batch shape.
Positions in any length unit (nm in the package); angles in radians.
"""
import math

import torch

__all__ = ["dihedral", "angle", "wrap_angle", "unit_vector", "remove_mean"]


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

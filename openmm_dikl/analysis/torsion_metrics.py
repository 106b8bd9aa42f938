"""Torsion-angle metrics: backbone dihedrals and KL divergences of their histograms.

The angle part of the protocol of ``docs/methods.md`` ("Metrics"):

* :func:`torsion_angles` — dihedral angles of given atom quadruples (the indices come
  from :attr:`openmm_dikl.systems.TargetSystem.torsions`, found once per system);
* :func:`phi_psi` — backbone (φ, ψ) of a dipeptide straight from a topology (mdtraj);
* :func:`dihedral_kl`, :func:`ramachandran_kl` — KL(reference ‖ model) between periodic
  1-D and 2-D histograms with a pseudo-probability per bin, optionally with per-sample
  weights on the model (e.g. MBAR weights of parallel-tempering replicas).

Angles are in radians (any branch; wrapped into [−π, π)), positions in nm, KL in nats.
"""
import mdtraj
import numpy as np
import torch

from ..geometry import dihedral
from ._checks import as_float_array
from ._checks import samples as _samples

__all__ = ["torsion_angles", "phi_psi", "dihedral_kl", "ramachandran_kl",
           "DEFAULT_ANGLE_BINS", "KL_PSEUDO_PROBABILITY"]

#: Bins per angle on [−π, π) for torsion KL (6° wide).
DEFAULT_ANGLE_BINS = 60
#: Probability added to every bin of both histograms before the KL (then renormalised).
KL_PSEUDO_PROBABILITY = 1e-10


def _angles(a, name, ncols):
    """Angles as float64 (n,) or (n, ncols), finite, wrapped into [−π, π)."""
    a = as_float_array(a)
    if ncols == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    expected = "(n_samples,)" if ncols == 1 else f"(n_samples, {ncols})"
    if (ncols == 1 and a.ndim != 1) or (ncols > 1 and (a.ndim != 2 or a.shape[1] != ncols)):
        raise ValueError(f"{name} must have shape {expected} (radians), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.mod(a + np.pi, 2.0 * np.pi) - np.pi     # wrap into [−π, π)


def _sample_weights(weights, n_samples):
    """Per-sample weights (n_samples,) normalised to sum 1, or None for equal weights."""
    if weights is None:
        return None
    w = as_float_array(weights)
    if w.shape != (n_samples,):
        raise ValueError(f"weights must have shape ({n_samples},) (one per model sample), got "
                         f"{w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero")
    return w / total


def _kl(p_counts, q_counts, pseudo):
    """Σ p log(p/q) of two histograms after adding ``pseudo`` to every normalised bin."""
    p = p_counts.ravel() / p_counts.sum()
    q = q_counts.ravel() / q_counts.sum()
    p = (p + pseudo) / (1.0 + pseudo * p.size)
    q = (q + pseudo) / (1.0 + pseudo * q.size)
    return float(np.sum(p * (np.log(p) - np.log(q))))


def dihedral_kl(phi_model, phi_ref, bins=DEFAULT_ANGLE_BINS, pseudo=KL_PSEUDO_PROBABILITY,
                weights=None):
    """KL(reference ‖ model) between periodic histograms of one torsion angle.

    Parameters
    ----------
    phi_model : array-like, shape=(n_samples,)
        Model angles in radians (any branch; wrapped into [−π, π)).
    phi_ref : array-like, shape=(n_reference,)
        Reference angles in radians.
    bins : int
        Equal bins on [−π, π); default 60 (6° bins — fine enough to resolve the ~30°-wide
        basins of alanine dipeptide, coarse enough that 10⁴–10⁵ samples fill every
        populated bin, so the estimator's bias stays small).
    pseudo : float
        Probability added to every bin of both normalised histograms, which are then
        renormalised (default 1e-10).  It keeps the KL finite when the model misses a bin
        the reference populates (that bin then costs about p_b · 23 nats) and leaves
        identical histograms at exactly 0.
    weights : array-like, shape=(n_samples,), optional
        Non-negative weights of the model samples (normalised here; e.g. MBAR weights);
        default: equal weights.  Integer weights k_i give the same KL as repeating sample
        i k_i times.

    Returns
    -------
    float
        Σ_b p_b log(p_b / q_b) in nats, p the reference and q the (weighted) model
        histogram.

    Raises
    ------
    ValueError
        Wrong shapes, NaN/inf angles, or negative, non-finite or all-zero weights.
    """
    a = _angles(phi_model, "phi_model", 1)
    b = _angles(phi_ref, "phi_ref", 1)
    w = _sample_weights(weights, len(a))
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    return _kl(np.histogram(b, edges)[0], np.histogram(a, edges, weights=w)[0], pseudo)


def ramachandran_kl(phi_psi_model, phi_psi_ref, bins=DEFAULT_ANGLE_BINS,
                    pseudo=KL_PSEUDO_PROBABILITY, weights=None):
    """KL(reference ‖ model) between 2-D periodic (φ, ψ) histograms.

    Parameters
    ----------
    phi_psi_model : array-like, shape=(n_samples, 2)
        Model (φ, ψ) in radians.
    phi_psi_ref : array-like, shape=(n_reference, 2)
        Reference (φ, ψ) in radians.
    bins : int
        Bins per angle on [−π, π): a ``bins × bins`` grid, default 60 × 60 (6°, the
        1-D resolution; 3600 cells, which a 10⁵–10⁶-sample reference fills well).
    pseudo : float
        Probability added to every cell before renormalising (see :func:`dihedral_kl`).
    weights : array-like, shape=(n_samples,), optional
        Non-negative weights of the model samples, normalised here (see
        :func:`dihedral_kl`).

    Returns
    -------
    float
        KL in nats.

    Raises
    ------
    ValueError
        Wrong shapes, NaN/inf angles, or invalid weights.

    Notes
    -----
    The plug-in estimate has a finite-sample floor: two independent samples of one
    distribution do not give 0, mostly because reference cells that the model sample
    happens to miss cost p_b · log(p_b / 1e-10) each.  Measured for a three-basin von
    Mises mixture (20° wide basins) on the 60 × 60 grid: 0.40 at 10⁴ samples per side,
    0.08 at 5·10⁴, 0.02 at 2·10⁵ (1-D φ: 0.009, 0.0015, 0.0003).  Compare models at
    equal sample sizes and report the floor (two halves of the reference) with them.
    """
    a = _angles(phi_psi_model, "phi_psi_model", 2)
    b = _angles(phi_psi_ref, "phi_psi_ref", 2)
    w = _sample_weights(weights, len(a))
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    h_ref = np.histogram2d(b[:, 0], b[:, 1], [edges, edges])[0]
    h_model = np.histogram2d(a[:, 0], a[:, 1], [edges, edges], weights=w)[0]
    return _kl(h_ref, h_model, pseudo)


def torsion_angles(x, indices):
    """Dihedral angles of atom quadruples in every configuration.

    Parameters
    ----------
    x : array-like or torch.Tensor, shape=(n_samples, n_atoms, 3)
        Positions in nm.
    indices : array-like of int, shape=(m, 4)
        Atom quadruples, e.g. ``target.torsions["phi"]``.

    Returns
    -------
    numpy.ndarray, shape=(n_samples, m)
        Angles in radians in (−π, π] (IUPAC / mdtraj convention).

    Raises
    ------
    ValueError
        Bad positions, an index array not of shape (m, 4), or indices out of range.
    """
    xyz = _samples(x, "positions")
    idx = np.asarray(indices, dtype=int)
    if idx.ndim != 2 or idx.shape[1] != 4:
        raise ValueError(f"indices must have shape (m, 4), got {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= xyz.shape[1]):
        raise ValueError(f"torsion indices out of range for {xyz.shape[1]} atoms")
    if xyz.shape[2] != 3:
        raise ValueError(f"torsions need 3-D positions, got shape {xyz.shape}")
    p = torch.as_tensor(xyz)[:, idx]                  # (n, m, 4, 3)
    return dihedral(p[..., 0, :], p[..., 1, :], p[..., 2, :], p[..., 3, :]).numpy()


def phi_psi(traj_or_xyz, topology=None):
    """Backbone (φ, ψ) of a dipeptide with mdtraj.

    Parameters
    ----------
    traj_or_xyz : mdtraj.Trajectory or array-like, shape=(n_frames, n_atoms, 3)
        A trajectory, or positions in nm (numpy, torch or Quantity).
    topology : openmm.app.Topology or mdtraj.Topology, optional
        Required with positions.

    Returns
    -------
    numpy.ndarray, shape=(n_frames, 2)
        (φ, ψ) in radians in [−π, π].

    Raises
    ------
    ValueError
        If the topology does not have exactly one φ and one ψ torsion (e.g. not a
        dipeptide), or positions do not match it.
    """
    if isinstance(traj_or_xyz, mdtraj.Trajectory):
        traj = traj_or_xyz
    else:
        if topology is None:
            raise ValueError("phi_psi needs a topology when given positions")
        if not isinstance(topology, mdtraj.Topology):
            topology = mdtraj.Topology.from_openmm(topology)
        xyz = _samples(traj_or_xyz, "positions")
        if xyz.shape[1:] != (topology.n_atoms, 3):
            raise ValueError(f"positions must have shape (n_frames, {topology.n_atoms}, 3) nm, "
                             f"got {xyz.shape}")
        traj = mdtraj.Trajectory(xyz, topology)
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    if phi.shape[1] != 1 or psi.shape[1] != 1:
        raise ValueError(f"expected exactly one phi and one psi torsion (a dipeptide), found "
                         f"{phi.shape[1]} and {psi.shape[1]}")
    return np.concatenate([phi, psi], axis=1).astype(np.float64)

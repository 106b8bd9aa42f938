"""Metrics on sets of configurations: W2, histogram TVDs, mode and basin weights.

Implements the sample-set part of the evaluation protocol of ``docs/methods.md``
("Metrics"):

* :func:`wasserstein2` — exact optimal-transport W2 between equal-size sample sets,
  configurations flattened and (optionally) centred, no rotation alignment;
* :func:`histogram_tvd`, :func:`energy_tvd`, :func:`distance_tvd` — total variation
  distance between histograms (200 bins spanning the reference) of reduced energies and
  of interatomic distances;
* mode metrics for mixtures (:func:`mode_weights`, :func:`mode_coverage`,
  :func:`mode_weight_error`) and the MW-32 basins (:func:`basin_weights`,
  :func:`basin_weight_error`);
* :func:`random_rotation_permutation` — the symmetrised noise floor's helper.

Positions are in nm, energies are reduced (units of kT).  Centring subtracts the
unweighted centroid of each configuration (the centre of mass for the equal-mass toy
and n-body particles).  Nothing here knows which system a sample set belongs to.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from ..units import as_nm
from ._checks import centred as _centred
from ._checks import samples as _samples
from ._checks import values as _values

__all__ = ["wasserstein2", "histogram_tvd", "energy_tvd", "pairwise_distances", "distance_tvd",
           "mode_weights", "mode_coverage", "mode_weight_error", "basin_weights",
           "basin_weight_error", "random_rotation_permutation", "DEFAULT_TVD_BINS"]

#: Histogram bins for energy and distance TVD (the papers' protocol).
DEFAULT_TVD_BINS = 200


# ---------------------------------------------------------------------- W2
def wasserstein2(x, y, centre=True):
    """Exact 2-Wasserstein distance between two equal-size sets of configurations.

    Parameters
    ----------
    x, y : array-like or torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Two sample sets of the same shape, positions in nm.
    centre : bool
        Subtract each configuration's centroid (centre of mass for equal masses) first.
        Use True for translation-invariant targets (DW-4, LJ-13), False for MW-32 and
        MoG-40.  No rotation alignment is done (the papers' protocol).

    Returns
    -------
    float
        W2 in nm: sqrt of the mean squared Euclidean distance (flattened configurations)
        under the optimal one-to-one assignment.

    Raises
    ------
    ValueError
        On shape mismatch, unequal sizes, empty input or NaN/inf.

    Notes
    -----
    With uniform weights on equal-size sets, the optimal transport plan is a
    permutation (Birkhoff–von Neumann), so the exact W2 is a linear assignment problem,
    solved with :func:`scipy.optimize.linear_sum_assignment` (O(N³); ~1 s for N = 2000).
    """
    x = _samples(x, "x")
    y = _samples(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape (equal sizes), got {x.shape} "
                         f"and {y.shape}")
    if centre:
        x, y = _centred(x), _centred(y)
    cost = cdist(x.reshape(len(x), -1), y.reshape(len(y), -1), metric="sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


# ---------------------------------------------------------------------- TVD
def histogram_tvd(values, reference, bins=DEFAULT_TVD_BINS, out_of_range="count"):
    """Total variation distance between histograms on a grid spanning the reference.

    Parameters
    ----------
    values : array-like, shape=(n_values,)
        Model values (any unit; ±inf allowed and treated as out of range).
    reference : array-like, shape=(n_reference,)
        Reference values (finite); the grid is ``bins`` equal bins on
        [min(reference), max(reference)].
    bins : int
        Number of bins.
    out_of_range : {"count", "clip", "drop"}
        Treatment of model values outside the reference range.

        * ``"count"`` (default): they fall in no bin but count in the normaliser, i.e.
          they form an extra "outside" bin in which the reference has zero mass, so they
          add their full fraction to the TVD.  A sampler cannot hide a tail.
        * ``"clip"``: they are moved to the first or last bin (the DiKL code's choice).
        * ``"drop"``: they are discarded and the model histogram is normalised by the
          in-range count (the iDEM / DEM evaluation code); TVD = 1 if none is in range.

    Returns
    -------
    float
        TVD = ½ Σ_b |p_b − q_b| in [0, 1] (including the outside bin for ``"count"``).

    Raises
    ------
    ValueError
        On NaN, empty input, an unknown ``out_of_range`` or ``bins`` < 1.
    """
    values = _values(values, "values", allow_inf=True)
    reference = _values(reference, "reference")
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if out_of_range not in ("count", "clip", "drop"):
        raise ValueError(f"out_of_range must be 'count', 'clip' or 'drop', got {out_of_range!r}")
    low, high = reference.min(), reference.max()
    if high == low:  # degenerate reference: one bin of zero width around the value
        high = low + 1e-12 * max(1.0, abs(low))
    edges = np.linspace(low, high, int(bins) + 1)
    p = np.histogram(reference, edges)[0] / len(reference)
    if out_of_range == "clip":
        values = np.clip(values, low, high)
    inside = (values >= low) & (values <= high)
    counts = np.histogram(values[inside], edges)[0].astype(np.float64)
    if out_of_range == "drop":
        if not inside.any():
            return 1.0
        q = counts / inside.sum()
        outside = 0.0
    else:
        q = counts / len(values)
        outside = 1.0 - inside.mean()
    return float(0.5 * (np.abs(p - q).sum() + outside))


def energy_tvd(u_model, u_ref, bins=DEFAULT_TVD_BINS, out_of_range="count"):
    """TVD between histograms of reduced energies (200 bins spanning the reference).

    Parameters
    ----------
    u_model : array-like or torch.Tensor, shape=(n_samples,)
        Reduced energies u = U/kT (dimensionless, units of kT) of model samples; +inf
        (e.g. overlapping LJ particles) counts as out of range.
    u_ref : array-like or torch.Tensor, shape=(n_reference,)
        Reduced energies of reference samples (finite).
    bins : int
        Number of equal bins on [min u_ref, max u_ref].
    out_of_range : {"count", "clip", "drop"}
        See :func:`histogram_tvd`.  Default ``"count"``: model energies outside the
        reference range add their fraction to the TVD (the DiKL code clips instead, which
        gives smaller or equal values).

    Returns
    -------
    float
        TVD in [0, 1].

    Raises
    ------
    ValueError
        On NaN, empty or non-1-D input.
    """
    return histogram_tvd(u_model, u_ref, bins=bins, out_of_range=out_of_range)


def pairwise_distances(x):
    """All interparticle distances r_ij, i < j.

    Parameters
    ----------
    x : array-like or torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Positions in nm (n_particles >= 2).

    Returns
    -------
    numpy.ndarray, shape=(n_samples, n_particles (n_particles − 1) / 2)
        Distances in nm, pairs in ``numpy.triu_indices`` order.
    """
    x = _samples(x, "x")
    if x.shape[1] < 2:
        raise ValueError(f"pairwise distances need at least 2 particles, got {x.shape[1]}")
    i, j = np.triu_indices(x.shape[1], k=1)
    return np.linalg.norm(x[:, i] - x[:, j], axis=-1)


def distance_tvd(x, y, bins=DEFAULT_TVD_BINS, out_of_range="count"):
    """TVD between histograms of interparticle distances (all pairs i < j pooled).

    Parameters
    ----------
    x : array-like or torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Model samples, positions in nm.
    y : array-like or torch.Tensor, shape=(n_reference, n_particles, spatial_dim)
        Reference samples, positions in nm (the bins span their distance range).
    bins : int
        Number of equal bins.
    out_of_range : {"count", "clip", "drop"}
        See :func:`histogram_tvd`.

    Returns
    -------
    float
        TVD in [0, 1].

    Raises
    ------
    ValueError
        On mismatched particle shapes, NaN/inf, or fewer than 2 particles.
    """
    x = _samples(x, "x")
    y = _samples(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must hold the same particles, got shapes {x.shape} "
                         f"and {y.shape}")
    return histogram_tvd(pairwise_distances(x).ravel(), pairwise_distances(y).ravel(),
                         bins=bins, out_of_range=out_of_range)


# ---------------------------------------------------------------------- modes
def _points(x, means):
    """Samples (N, D) and means (K, D) as float64, accepting (N, n, d) samples."""
    x = as_nm(x, "x")
    if x.ndim == 3:
        x = x.reshape(len(x), -1)
    means = np.asarray(as_nm(means, "means"), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n_samples, n_particles, spatial_dim) or "
                         f"(n_samples, dim), got {x.shape}")
    if means.ndim != 2 or means.shape[1] != x.shape[1]:
        raise ValueError(f"means must have shape (n_modes, {x.shape[1]}), got {means.shape}")
    if not (np.isfinite(x).all() and np.isfinite(means).all()):
        raise ValueError("x and means must be finite (no NaN or inf)")
    return x, means


def mode_weights(x, means):
    """Fraction of samples assigned to each mode (nearest mean).

    Parameters
    ----------
    x : array-like, shape=(n_samples, n_particles, spatial_dim) or (n_samples, dim)
        Samples in nm; MoG-40 samples are (n_samples, 1, 2).
    means : array-like, shape=(n_modes, dim)
        Mode centres in nm (dim = n_particles · spatial_dim).

    Returns
    -------
    numpy.ndarray, shape=(n_modes,)
        Empirical weights (sum to 1).
    """
    x, means = _points(x, means)
    nearest = np.argmin(cdist(x, means, metric="sqeuclidean"), axis=1)
    return np.bincount(nearest, minlength=len(means)) / len(x)


def mode_coverage(x, means, min_fraction=0.0):
    """Fraction of modes visited.

    Parameters
    ----------
    x, means
        As in :func:`mode_weights`.
    min_fraction : float
        A mode counts as visited if its weight is larger than this (0: one sample
        suffices).

    Returns
    -------
    float
        Visited modes / all modes, in [0, 1].
    """
    return float((mode_weights(x, means) > min_fraction).mean())


def mode_weight_error(x, means, weights=None):
    """Total variation between empirical and true mode weights.

    Parameters
    ----------
    x, means
        As in :func:`mode_weights`.
    weights : array-like, shape=(n_modes,), optional
        True weights (default: uniform, as in MoG-40).

    Returns
    -------
    float
        ½ Σ_k |ŵ_k − w_k| in [0, 1].  For exact sampling this is a sampling error of
        order sqrt(n_modes / n_samples) (overlapping components aside).
    """
    empirical = mode_weights(x, means)
    if weights is None:
        weights = np.full(len(empirical), 1.0 / len(empirical))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != empirical.shape or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"weights must have shape {empirical.shape} and sum to 1")
    return float(0.5 * np.abs(empirical - weights).sum())


def basin_weights(x):
    """Double-well basin weights: fraction of samples with x_k > 0, per particle.

    Parameters
    ----------
    x : array-like or torch.Tensor, shape=(n_samples, n_particles, 2)
        Samples in nm (particle k = (x_k, y_k)), e.g. of MW-32.

    Returns
    -------
    numpy.ndarray, shape=(n_particles,)
        P̂(x_k > 0).  For MW-32 the exact value is
        ``target.evaluation_data["positive_weight"]``.
    """
    x = _samples(x, "x")
    return (x[:, :, 0] > 0).mean(axis=0)


def basin_weight_error(x, positive_weight, reduce="mean"):
    """Absolute error of the basin weights P̂(x_k > 0) against the exact weight.

    Parameters
    ----------
    x : array-like or torch.Tensor, shape=(n_samples, n_particles, 2)
        Samples in nm.
    positive_weight : float or array-like, shape=(n_particles,)
        Exact P(x_k > 0), in [0, 1]; for MW-32
        ``target.evaluation_data["positive_weight"]`` (0.8443).
    reduce : {"mean", "max"}
        Average or worst error over the particles.

    Returns
    -------
    float
        mean_k (or max_k) |P̂(x_k > 0) − P(x_k > 0)|, in [0, 1].

    Raises
    ------
    ValueError
        A weight outside [0, 1], a wrong shape, or an unknown ``reduce``.
    """
    weights = basin_weights(x)
    exact = np.broadcast_to(np.asarray(positive_weight, dtype=np.float64), weights.shape)
    if not ((exact >= 0.0) & (exact <= 1.0)).all():
        raise ValueError(f"positive_weight must lie in [0, 1], got {positive_weight!r}")
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    errors = np.abs(weights - exact)
    return float(errors.mean() if reduce == "mean" else errors.max())


# ---------------------------------------------------------------------- symmetry
def random_rotation_permutation(x, seed=0):
    """Rotate every configuration by its own uniform random rotation and permute its particles.

    Parameters
    ----------
    x : array-like, shape=(n, n_particles, spatial_dim)
        Configurations (nm); each is centred on its centroid first.
    seed : int
        Random seed.

    Returns
    -------
    numpy.ndarray, shape=(n, n_particles, spatial_dim)
        Centred, randomly rotated (Haar measure on SO(d)) and permuted configurations, nm.
        The energies of an E(n)- and permutation-invariant target are unchanged.
    """
    x = _centred(_samples(x, "x"))
    rng = np.random.default_rng(seed)
    n, n_particles, dim = x.shape
    q, r = np.linalg.qr(rng.standard_normal((n, dim, dim)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar on O(d)
    flip = np.linalg.det(q) < 0
    q[flip, :, 0] *= -1  # restrict to SO(d)
    rotated = np.einsum("bij,bnj->bni", q, x)
    order = np.argsort(rng.random((n, n_particles)), axis=1)
    return np.take_along_axis(rotated, order[:, :, None], axis=1)



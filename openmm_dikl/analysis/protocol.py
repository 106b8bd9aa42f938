"""The 2,000-vs-2,000 comparison protocol against a reference set, and its noise floor.

:func:`evaluate_samples` repeats W2 / energy TVD / distance TVD between random subsets
of ``n_eval`` model and ``n_eval`` reference samples; :func:`noise_floor` scores two
disjoint reference subsets the same way (what an exact sampler reaches);
:func:`protocol_n_eval` scales the subset size down, with a warning, when fewer samples
exist than the protocol's 2,000.  See ``docs/methods.md`` ("Metrics").

Positions are in nm, energies reduced (kT).  Whether configurations are centred before
W2 follows :attr:`openmm_dikl.systems.TargetSystem.translation_invariant`.
"""
import logging

import numpy as np
import torch

from ._checks import samples as _samples
from .sample_metrics import (DEFAULT_TVD_BINS, distance_tvd, energy_tvd,
                             random_rotation_permutation, wasserstein2)

logger = logging.getLogger(__name__)

__all__ = ["evaluate_samples", "noise_floor", "protocol_n_eval", "PROTOCOL_N_EVAL",
           "reduced_energies"]

#: Samples per side in one comparison of the protocol (model vs reference, reference halves).
PROTOCOL_N_EVAL = 2000


def protocol_n_eval(n_samples, n_reference, n_eval=PROTOCOL_N_EVAL, name="samples"):
    """Subset size of the protocol for a given number of model and reference samples.

    Parameters
    ----------
    n_samples : int
        Model samples available (at least 2).
    n_reference : int
        Reference samples available; the noise floor needs two disjoint subsets, so at
        most ``n_reference // 2`` per side.
    n_eval : int
        The protocol's size (default 2,000).
    name : str
        What the samples are (e.g. the system name), for the warning.

    Returns
    -------
    int
        ``min(n_eval, n_samples, n_reference // 2)``.  When that is below ``n_eval``, a
        warning (``logging``) names the sizes used: the values are then not comparable
        with figures measured at the full size (W2 and TVD floors grow as sets shrink).

    Raises
    ------
    ValueError
        Fewer than 2 model samples or fewer than 4 reference samples.
    """
    n_samples, n_reference = int(n_samples), int(n_reference)
    if n_samples < 2:
        raise ValueError(f"{name}: need at least 2 samples to evaluate, got {n_samples}")
    if n_reference < 4:
        raise ValueError(f"{name}: need at least 4 reference samples, got {n_reference}")
    size = min(int(n_eval), n_samples, n_reference // 2)
    if size < n_eval:
        logger.warning(
            "%s: %d model and %d reference samples, fewer than the protocol's %d vs %d: W2 "
            "and TVDs compare %d model vs %d reference samples and the noise floor two "
            "disjoint sets of %d reference samples (not comparable with %d-sample figures)",
            name, n_samples, n_reference, n_eval, n_eval, size, size, size, n_eval)
    return size


def reduced_energies(target, x, batch=1000):
    """Reduced energies (n,) in kT of configurations x (n, N, d) nm, in batches, no autograd.

    No unit check: the samples were checked when read (generated ones may be broken and
    must still be scored)."""
    with torch.no_grad():
        return np.concatenate([
            target.reduced_energy(torch.as_tensor(x[i:i + batch]),
                                  check_length_scale=False).detach().cpu().numpy()
            for i in range(0, len(x), batch)])


def _compare(target, model, ref, u_model, u_ref, centre, bins, out_of_range):
    """One comparison: W2 (nm), energy TVD and (two or more particles) distance TVD."""
    result = {"w2": wasserstein2(model, ref, centre=centre),
              "energy_tvd": energy_tvd(u_model, u_ref, bins=bins, out_of_range=out_of_range)}
    if target.n_particles >= 2:
        result["distance_tvd"] = distance_tvd(model, ref, bins=bins, out_of_range=out_of_range)
    return result


def _summarise(rows, meta, return_values):
    """Means, sample stds (ddof=1) and optionally the values of per-repeat metric rows."""
    summary = dict(meta)
    for key in rows[0]:
        values = np.array([row[key] for row in rows])
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        if return_values:
            summary[f"{key}_values"] = values.tolist()
    return summary


def _check_protocol(n_eval, n_repeats):
    """Both must be positive integers (ValueError otherwise)."""
    for value, name in ((n_eval, "n_eval"), (n_repeats, "n_repeats")):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(n_eval), int(n_repeats)


def evaluate_samples(target, samples, n_eval=PROTOCOL_N_EVAL, n_repeats=5, seed=0, reference=None,
                     centre=None, bins=DEFAULT_TVD_BINS, out_of_range="count",
                     return_values=False):
    """W2, energy TVD and distance TVD of model samples against the target's reference.

    Each repeat draws ``n_eval`` model samples and ``n_eval`` reference samples without
    replacement (random subsets from ``numpy.random.default_rng(seed)``) and compares them.

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
        The target; supplies ``reduced_energy`` and, unless ``reference`` is given,
        ``reference_samples()``.
    samples : array-like or torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Model samples in nm, n_samples >= n_eval.
    n_eval : int
        Samples per side in each comparison (protocol: 2,000).
    n_repeats : int
        Number of random repeats.
    seed : int
        Seed of the subset selection.
    reference : array-like, shape=(n_reference, n_particles, spatial_dim), optional
        Reference samples in nm (default ``target.reference_samples()``).
    centre : bool, optional
        Centre configurations for W2; default ``target.translation_invariant``.
    bins : int
        Histogram bins for the TVDs (protocol: 200).
    out_of_range : {"count", "clip", "drop"}
        See :func:`~openmm_dikl.analysis.sample_metrics.histogram_tvd`.
    return_values : bool
        Also return the per-repeat values as lists ``<metric>_values``.

    Returns
    -------
    dict
        ``w2`` (nm), ``energy_tvd``, ``distance_tvd`` (omitted for one particle): float
        means over repeats; ``<metric>_std`` (sample std over repeats, ddof=1; 0 for one
        repeat); ``n_eval``, ``n_repeats`` (int) and ``centre`` (bool).

    Raises
    ------
    ValueError
        On bad shapes, NaN, or too few model or reference samples.
    NotImplementedError
        If the target has no reference samples and none are given.
    """
    n_eval, n_repeats = _check_protocol(n_eval, n_repeats)
    model = _samples(samples, "samples")
    ref = _reference(target, reference, n_eval)
    if model.shape[1:] != ref.shape[1:] or len(model) < n_eval:
        raise ValueError(f"need at least n_eval={n_eval} samples of shape (n, "
                         f"{target.n_particles}, {target.spatial_dim}), got {model.shape} "
                         "(protocol_n_eval scales n_eval down)")
    centre = target.translation_invariant if centre is None else centre
    rng = np.random.default_rng(seed)
    u_model_all, u_ref_all = reduced_energies(target, model), reduced_energies(target, ref)
    rows = []
    for _ in range(n_repeats):
        i = rng.choice(len(model), n_eval, replace=False)
        j = rng.choice(len(ref), n_eval, replace=False)
        rows.append(_compare(target, model[i], ref[j], u_model_all[i], u_ref_all[j], centre,
                             bins, out_of_range))
    return _summarise(rows, {"n_eval": n_eval, "n_repeats": n_repeats, "centre": bool(centre)},
                      return_values)


def _reference(target, reference, n_needed, rule="n_eval = "):
    """The reference set (n, n_particles, spatial_dim) nm, checked for shape and size."""
    ref = _samples(target.reference_samples() if reference is None else reference, "reference")
    if ref.shape[1:] != (target.n_particles, target.spatial_dim):
        raise ValueError(f"reference must have shape (n, {target.n_particles}, "
                         f"{target.spatial_dim}), got {ref.shape}")
    if len(ref) < n_needed:
        raise ValueError(f"need at least {rule}{n_needed} reference samples, got {len(ref)} "
                         "(protocol_n_eval scales n_eval down)")
    return ref


def noise_floor(target, n_eval=PROTOCOL_N_EVAL, n_repeats=5, seed=0, reference=None, centre=None,
                bins=DEFAULT_TVD_BINS, out_of_range="count", return_values=False,
                symmetrise=False):
    """The metrics of :func:`evaluate_samples` between two disjoint reference subsets.

    Each repeat permutes the reference set and compares its first ``n_eval`` samples
    with the next ``n_eval``: the value an exact sampler would score, to be reported
    next to every result.

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
        The target (supplies energies and, unless ``reference`` is given, the reference).
    n_eval, n_repeats, seed, reference, centre, bins, out_of_range, return_values
        As in :func:`evaluate_samples`; needs at least 2 · n_eval reference samples.
    symmetrise : bool
        Randomly rotate and permute the second subset (:func:`random_rotation_permutation`):
        the floor of an exactly rotation- and permutation-symmetric sampler (such as an
        EGNN generator) when the reference set itself is not symmetric, which makes W2
        without alignment larger; energy and distance TVDs are unaffected.

    Returns
    -------
    dict
        Same keys as :func:`evaluate_samples`.

    Notes
    -----
    Both halves come from one reference set, so correlations inside that set (an MCMC
    chain) make the floor slightly optimistic compared with two independent sets.
    """
    n_eval, n_repeats = _check_protocol(n_eval, n_repeats)
    ref = _reference(target, reference, 2 * n_eval, "2 * n_eval = ")
    centre = target.translation_invariant if centre is None else centre
    rng = np.random.default_rng(seed)
    u_all = reduced_energies(target, ref)
    rows = []
    for _ in range(n_repeats):
        order = rng.permutation(len(ref))
        a, b = order[:n_eval], order[n_eval:2 * n_eval]
        other = (random_rotation_permutation(ref[b], seed=int(rng.integers(2**31)))
                 if symmetrise else ref[b])
        rows.append(_compare(target, ref[a], other, u_all[a], u_all[b], centre, bins,
                             out_of_range))
    return _summarise(rows, {"n_eval": n_eval, "n_repeats": n_repeats, "centre": bool(centre)},
                      return_values)

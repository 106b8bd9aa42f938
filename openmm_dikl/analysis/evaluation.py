"""The per-system evaluation protocols: metric dicts, metric tables and PNG plots.

This is the engine of ``openmm-dikl evaluate`` and of the DiKL recipes' final metrics,
and the only place that decides which metrics a system gets.  A system names its
protocol in :attr:`~openmm_dikl.systems.TargetSystem.evaluation` and supplies what only
it knows in ``evaluation_data``; the protocol functions are registered under those
names with :func:`~openmm_dikl.analysis.registry.register_protocol` (as mdtraj registers
its file formats):

* ``"reference_set"`` (DW-4, LJ-13) — W2 (nm), energy TVD and interatomic-distance TVD
  of 2,000 vs 2,000 samples over repeats, beside the reference-vs-reference noise floor;
* ``"modes"`` (MoG-40) — modes visited, mode-weight error, mean log-density (nats);
* ``"basins"`` (MW-32) — worst and mean error of the basin weights P̂(x_k > 0);
* ``"backbone_dihedrals"`` (alanine dipeptide) — KL divergences of φ, ψ and the
  Ramachandran histogram (nats) against the shipped parallel-tempering reference, the
  φ > 0 population and energies;
* ``"energies"`` (systems without a reference, ``evaluation=None``) — the mean energy.

Every protocol returns an :class:`~openmm_dikl.analysis.registry.Evaluation`: a list of
:class:`~openmm_dikl.analysis.registry.Metric` (value, spread
over repeats, the noise floor — what an exact sampler scores on the same protocol — and
the reference value of a statistic of the target), notes, and the figures to draw.  The
protocol and the metric definitions are described in ``docs/methods.md``.

>>> from openmm_dikl.analysis import evaluation
>>> sorted(evaluation.PROTOCOLS)
['backbone_dihedrals', 'basins', 'energies', 'modes', 'reference_set']
"""
import os

import numpy as np

from ..io import read_samples
from ..systems import shipped_path
from ..units import as_kelvin, kt_kjmol
from . import plots
from ._checks import samples as _samples
from .protocol import (PROTOCOL_N_EVAL, evaluate_samples, noise_floor, protocol_n_eval,
                       reduced_energies)
from .registry import PROTOCOLS, Evaluation, Metric, get_protocol, register_protocol
from .sample_metrics import (basin_weights, energy_tvd, mode_coverage, mode_weight_error,
                             pairwise_distances)
from .torsion_metrics import DEFAULT_ANGLE_BINS, dihedral_kl, ramachandran_kl, torsion_angles

__all__ = ["Metric", "Evaluation", "PROTOCOLS", "register_protocol", "get_protocol",
           "evaluate", "evaluation_metrics", "evaluate_array", "evaluate_file",
           "dihedral_reference", "ala2_metrics", "backbone_angles"]

def _checked_samples(target, x):
    """Samples as float64 numpy (n, n_particles, spatial_dim) nm; at least 2, finite."""
    x = _samples(x, "samples")
    shape = (target.n_particles, target.spatial_dim)
    if x.shape[1:] != shape:
        raise ValueError(f"{target.name}: samples must have shape (n_samples, {shape[0]}, "
                         f"{shape[1]}) in nm, got {x.shape}")
    if len(x) < 2:
        raise ValueError(f"{target.name}: need at least 2 samples to evaluate, got {len(x)}")
    return x


def evaluate(target, x, n_repeats=5, seed=0, floors=True):
    """Run the target's registered protocol on samples ``x``.

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
        The target; ``target.evaluation`` names the protocol.
    x : array-like or torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Samples in nm, n_samples >= 2.
    n_repeats : int
        Repeats of random subset comparisons (protocols that draw subsets).
    seed : int
        Seed of those subsets and of exact reference draws.
    floors : bool
        Also compute the noise floors (False: skip them, e.g. while training).

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        Bad shapes, NaN/inf, or fewer than 2 samples.
    KeyError
        An unregistered protocol name.
    """
    protocol = get_protocol(target)
    return protocol(target, _checked_samples(target, x), n_repeats=n_repeats, seed=seed,
                    floors=floors)


def evaluation_metrics(target, x, n_repeats=5, seed=0, floors=True):
    """The target's metrics for samples ``x`` as a flat dict of str -> float.

    Parameters
    ----------
    target, x, n_repeats, seed, floors
        As in :func:`evaluate`; ``floors=False`` skips the reference-vs-reference
        comparisons (the ``_floor`` keys), which for reference sets cost as much again.

    Returns
    -------
    dict of str -> float
        Keys per protocol (``<key>_std``, ``<key>_floor`` and ``reference_<key>`` where
        the protocol has them):

        * ``reference_set``: ``w2`` (nm), ``energy_tvd``, ``distance_tvd`` (two or more
          particles), each with ``_std`` over repeats and ``_floor``;
        * ``modes``: ``mode_coverage``, ``mode_weight_error`` (with floors),
          ``mean_log_density`` (nats) and ``reference_mean_log_density``;
        * ``basins``: ``max_basin_weight_error``, ``mean_basin_weight_error`` (with
          floors);
        * ``backbone_dihedrals``: ``kl_phi``, ``kl_psi``, ``kl_ramachandran`` (nats, with
          floors), ``fraction_phi_positive`` and its reference, ``mean_energy_kjmol`` and
          ``reference_mean_energy_kjmol`` (kJ/mol), and ``energy_tvd`` /
          ``energy_tvd_floor`` where the reference energies belong to the target's
          potential;
        * ``energies``: ``mean_reduced_energy`` (kT).
    """
    return evaluate(target, x, n_repeats=n_repeats, seed=seed, floors=floors).as_dict()


def _default_title(target):
    """System name and temperature."""
    return f"{target.name}, {as_kelvin(target.temperature):g} K"


def evaluate_array(target, x, prefix=None, n_repeats=5, seed=0, title=None):
    """Metric table and plots for samples ``x``.

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
        The target (its registered protocol decides the metrics).
    x : array-like or torch.Tensor, shape=(n_samples, n_particles, spatial_dim)
        Samples in nm, n_samples >= 2.  With fewer samples than the 2,000 of the
        reference-set protocol, the protocol is scaled down with a logged warning.
    prefix : str, optional
        Write the protocol's PNGs as ``<prefix>_<name>.png`` (folder must exist).
    n_repeats, seed
        As in :func:`evaluate`.
    title : str, optional
        Figure title (e.g. "system, method, temperature, budget"); default: system name
        and temperature.

    Returns
    -------
    table : str
        The metric table (units in the metric names) with notes.
    plots : list of str
        PNG files written.
    """
    result = evaluate(target, x, n_repeats=n_repeats, seed=seed)
    written = []
    if prefix and result.figures is not None:
        for suffix, fig in result.figures(title or _default_title(target)):
            written.append(plots.save_figure(fig, prefix + suffix))
    return result.table(), written


def evaluate_file(target, path, top=None, prefix=None, n_repeats=5, seed=0, title=None):
    """Read samples from ``path`` (:func:`openmm_dikl.io.read_samples`) and evaluate them.

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
    path : str
        ``.npy`` (n_samples, n_particles, spatial_dim) in nm, or a trajectory mdtraj reads.
    top : str, optional
        Topology file for formats without one (DCD).
    prefix, n_repeats, seed, title
        As in :func:`evaluate_array`.

    Returns
    -------
    table : str
    plots : list of str
        As in :func:`evaluate_array`.

    Raises
    ------
    ValueError
        The plot folder does not exist, or the samples do not fit the target.
    """
    if prefix:
        folder = os.path.dirname(os.path.abspath(prefix))
        if not os.path.isdir(folder):
            raise ValueError(f"plot folder {folder} does not exist")
    x = read_samples(target, path, top)  # quiet: mdtraj's DCD plugin is silenced there
    return evaluate_array(target, x, prefix, n_repeats=n_repeats, seed=seed, title=title)


# ---------------------------------------------------------------------- helpers
def _energy_panel(u, u_ref=None):
    """Histogram panel of reduced energies (kT) of the samples and optionally a reference."""
    series = {"samples": u} if u_ref is None else {"samples": u, "reference": u_ref}
    return ("reduced energy (kT)", series)


# ---------------------------------------------------------------------- protocols
@register_protocol("reference_set")
def _reference_set(target, x, n_repeats=5, seed=0, floors=True):
    """W2 / energy TVD / distance TVD against the shipped reference set, with noise floors."""
    ref = _samples(target.reference_samples(), "reference")
    n_eval = protocol_n_eval(len(x), len(ref), name=target.name)
    result = evaluate_samples(target, x, n_eval=n_eval, n_repeats=n_repeats, seed=seed,
                              reference=ref)
    floor = (noise_floor(target, n_eval=n_eval, n_repeats=n_repeats, seed=seed, reference=ref)
             if floors else {})
    labels = {"w2": "W2 (nm)", "energy_tvd": "energy TVD", "distance_tvd": "distance TVD"}
    metrics = [Metric(key, label, result[key], std=result[key + "_std"], floor=floor.get(key))
               for key, label in labels.items() if key in result]
    notes = [f"{n_eval:,} model vs {n_eval:,} reference samples, {n_repeats} repeats "
             f"(protocol: {PROTOCOL_N_EVAL:,}), {'centred' if result['centre'] else 'not centred'}"
             f", 200 bins spanning the reference; noise floor: two disjoint reference subsets"]

    def figures(title):
        panels = [_energy_panel(reduced_energies(target, x), reduced_energies(target, ref))]
        if target.n_particles > 1:
            panels.append(("interatomic distance (nm)", {"samples": pairwise_distances(x),
                                                         "reference": pairwise_distances(ref)}))
        return [("_histograms.png", plots.histogram_figure(panels, title=title))]

    return Evaluation(metrics, notes, figures)


@register_protocol("modes")
def _modes(target, x, n_repeats=5, seed=0, floors=True):
    """Mode coverage and weight error (mixture means in ``evaluation_data``), log-density."""
    means = np.asarray(target.evaluation_data["mode_means"], dtype=np.float64)
    exact = target.reference_samples(len(x), seed=seed + 1).numpy()
    u, u_exact = reduced_energies(target, x), reduced_energies(target, exact)
    finite = u[np.isfinite(u)]
    metrics = [
        Metric("mode_coverage", "mode coverage (fraction)", mode_coverage(x, means),
               floor=mode_coverage(exact, means) if floors else None),
        Metric("mode_weight_error", "mode weight error (TVD)", mode_weight_error(x, means),
               floor=mode_weight_error(exact, means) if floors else None),
        Metric("mean_log_density", "mean log-density (nats)",
               float(-finite.mean()) if finite.size else -np.inf,
               reference=float(-u_exact.mean())),
    ]
    notes = [f"{len(x):,} samples, {len(means)} modes (nearest mean); noise floor and "
             f"reference: {len(x):,} exact samples"]

    def figures(title):
        return [("_histograms.png", plots.histogram_figure([_energy_panel(u, u_exact)],
                                                           title=title))]

    return Evaluation(metrics, notes, figures)


@register_protocol("basins")
def _basins(target, x, n_repeats=5, seed=0, floors=True):
    """Errors of the basin weights P̂(x_k > 0) against ``evaluation_data["positive_weight"]``."""
    exact_weight = float(target.evaluation_data["positive_weight"])
    errors = np.abs(basin_weights(x) - exact_weight)
    exact = target.reference_samples(len(x), seed=seed + 1).numpy()
    exact_errors = np.abs(basin_weights(exact) - exact_weight) if floors else None
    metrics = [
        Metric("max_basin_weight_error", "max basin weight error", float(errors.max()),
               floor=float(exact_errors.max()) if floors else None),
        Metric("mean_basin_weight_error", "mean basin weight error", float(errors.mean()),
               floor=float(exact_errors.mean()) if floors else None),
    ]
    notes = [f"{len(x):,} samples, |P̂(x_k > 0) − {exact_weight:.4f}| over {x.shape[1]} "
             f"coordinates; noise floor: {len(x):,} exact samples"]

    def figures(title):
        panels = [_energy_panel(reduced_energies(target, x), reduced_energies(target, exact)),
                  ("x_k (nm), all particles", {"samples": x[:, :, 0], "exact": exact[:, :, 0]})]
        return [("_histograms.png", plots.histogram_figure(panels, title=title))]

    return Evaluation(metrics, notes, figures)


@register_protocol("energies")
def _energies_only(target, x, n_repeats=5, seed=0, floors=True):
    """The mean reduced energy (no reference exists)."""
    u = reduced_energies(target, x)
    finite = u[np.isfinite(u)]
    metrics = [Metric("mean_reduced_energy", "mean reduced energy (kT)",
                      float(finite.mean()) if finite.size else np.inf)]
    notes = [f"{len(x):,} samples; {target.name} has no reference to compare with"]

    def figures(title):
        return [("_histograms.png", plots.histogram_figure([_energy_panel(u)], title=title))]

    return Evaluation(metrics, notes, figures)


# ---------------------------------------------------------------------- backbone dihedrals
def dihedral_reference(target):
    """The shipped reference of a ``backbone_dihedrals`` target (dict of numpy arrays).

    Reads ``target.evaluation_data["reference"]`` (an npz shipped with the package):
    ``phi``, ``psi`` in radians, shape (n_reference,) or (n_reference, m);
    ``energy_kjmol`` (kJ/mol), and what else the file holds.

    Raises
    ------
    ValueError
        If the target names no reference file.
    FileNotFoundError
        If the file is not shipped.
    """
    name = target.evaluation_data.get("reference")
    if not name:
        raise ValueError(f"{target.name}: evaluation_data names no 'reference' file")
    try:
        path = shipped_path(name)
    except FileNotFoundError:
        raise FileNotFoundError(f"the reference {name} of {target.name} is not shipped; for "
                                f"alanine dipeptide run benchmarks/ala2_reference.py") from None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def backbone_angles(target, x):
    """Backbone (φ, ψ) pairs of samples, from the target's torsion indices.

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
        A molecule with backbone torsions (:attr:`TargetSystem.torsions`, m residues).
    x : array-like or torch.Tensor, shape=(n_samples, n_atoms, 3)
        Positions in nm.

    Returns
    -------
    numpy.ndarray, shape=(n_samples · m, 2)
        (φ, ψ) in radians, residues pooled (sample-major).

    Raises
    ------
    ValueError
        If the target has no φ/ψ pairs.
    """
    phi, psi = target.torsions["phi"], target.torsions["psi"]
    if len(phi) == 0 or len(phi) != len(psi):
        raise ValueError(f"{target.name}: no backbone phi/psi pairs in the topology")
    return np.stack([torsion_angles(x, phi).ravel(), torsion_angles(x, psi).ravel()], axis=1)


def _kl_metrics(angles, ref_angles, floors):
    """KL φ, ψ, Ramachandran with pseudo-count 1/n and floors from two reference halves."""
    half = len(ref_angles) // 2
    # the second reference half thinned to the sample size, against the first half
    thinned = ref_angles[half:][np.linspace(0, half - 1, min(len(angles), half)).astype(int)]
    pseudo = 1.0 / len(angles)
    out = []
    for key, label, fn, cols in (("kl_phi", "KL phi (nats)", dihedral_kl, 0),
                                 ("kl_psi", "KL psi (nats)", dihedral_kl, 1),
                                 ("kl_ramachandran", "KL Ramachandran (nats)", ramachandran_kl,
                                  slice(0, 2))):
        floor = fn(thinned[:, cols], ref_angles[:half, cols], pseudo=pseudo) if floors else None
        out.append(Metric(key, label, fn(angles[:, cols], ref_angles[:, cols], pseudo=pseudo),
                          floor=floor))
    return out, len(thinned)


@register_protocol("backbone_dihedrals")
def _backbone_dihedrals(target, x, n_repeats=5, seed=0, floors=True):
    """Torsion KLs, p(φ > 0) and energies against the shipped parallel-tempering reference."""
    ref = dihedral_reference(target)
    angles = backbone_angles(target, x)
    m = len(target.torsions["phi"])
    ref_phi, ref_psi = (np.asarray(ref[k], dtype=np.float64).reshape(len(ref[k]), -1)
                        for k in ("phi", "psi"))
    if ref_phi.shape[1] != m:
        raise ValueError(f"{target.name}: the reference holds {ref_phi.shape[1]} phi torsions "
                         f"per frame, the topology {m}")
    ref_angles = np.stack([ref_phi.ravel(), ref_psi.ravel()], axis=1)
    metrics, n_thinned = _kl_metrics(angles, ref_angles, floors)
    metrics.append(Metric("fraction_phi_positive", "fraction phi > 0",
                          float(np.mean(angles[:, 0] > 0)),
                          reference=float(np.mean(ref_angles[:, 0] > 0))))
    kt = kt_kjmol(target.temperature)
    u = reduced_energies(target, x)
    energy = u[np.isfinite(u)] * kt
    ref_energy = np.asarray(ref["energy_kjmol"], dtype=np.float64)
    metrics.append(Metric("mean_energy_kjmol", "mean energy (kJ/mol)",
                          float(energy.mean()) if energy.size else np.inf,
                          reference=float(ref_energy.mean())))
    same_potential = bool(target.evaluation_data.get("reference_energies", False))
    if same_potential:
        u_ref, half = ref_energy / kt, len(ref_energy) // 2
        thin = np.linspace(0, half - 1, min(len(u), half)).astype(int)
        metrics.append(Metric("energy_tvd", "energy TVD", energy_tvd(u, u_ref),
                              floor=energy_tvd(u_ref[half:][thin], u_ref[:half])
                              if floors else None))
    notes = [f"KL(reference ‖ samples) on {DEFAULT_ANGLE_BINS} ({DEFAULT_ANGLE_BINS} × "
             f"{DEFAULT_ANGLE_BINS}) bins, pseudo-count 1/{len(angles):,} per bin; noise floor: "
             f"{n_thinned:,} frames of one reference half vs the other half",
             f"reference: {target.evaluation_data['reference']} ({len(ref_angles):,} frames)"
             + ("" if same_potential else "; its energies belong to another potential")]

    def figures(title):
        edges = plots.angle_bin_edges(DEFAULT_ANGLE_BINS)
        panels = [(f"{name} (degrees)", {"samples": np.degrees(angles[:, i]),
                                         "reference": np.degrees(ref_angles[:, i])}, edges)
                  for i, name in enumerate(("φ", "ψ"))]
        panels.append(_energy_panel(u, ref_energy / kt if same_potential else None))
        return [("_ramachandran.png", plots.ramachandran_figure(angles, reference=ref_angles,
                                                                title=title)),
                ("_marginals.png", plots.histogram_figure(panels, title=title, log_density=True))]

    return Evaluation(metrics, notes, figures)


def ala2_metrics(target, x):
    """The ``backbone_dihedrals`` metrics of alanine dipeptide samples (dict of floats).

    Same as :func:`evaluation_metrics` for a target with ``evaluation ==
    "backbone_dihedrals"``: ``kl_phi``, ``kl_psi``, ``kl_ramachandran`` (nats) with
    ``*_floor``, ``fraction_phi_positive`` and ``reference_fraction_phi_positive``,
    ``mean_energy_kjmol`` and ``reference_mean_energy_kjmol`` (kJ/mol), and
    ``energy_tvd`` / ``energy_tvd_floor`` where the reference energies belong to the
    target's potential (implicit solvent).

    Parameters
    ----------
    target : openmm_dikl.systems.TargetSystem
        An alanine dipeptide system.
    x : array-like or torch.Tensor, shape=(n_samples, 22, 3)
        Samples in nm.

    Raises
    ------
    ValueError
        If the target's protocol is not ``backbone_dihedrals``.
    """
    if target.evaluation != "backbone_dihedrals":
        raise ValueError(f"{target.name} is evaluated by {target.evaluation!r}, not by "
                         f"'backbone_dihedrals'; use evaluation_metrics")
    return evaluation_metrics(target, x)

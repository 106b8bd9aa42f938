"""Evaluate a sample file against a target's reference: metric tables and PNG plots.

This is the engine of ``openmm-dikl evaluate``.  Particle systems with a reference set
(DW-4, LJ-13) get W2 (nm), energy TVD and interatomic-distance TVD beside the
reference-vs-reference noise floor (``spec/methods.md`` protocol); MoG-40 and MW-32 get
their mode metrics; alanine dipeptide gets KL divergences of φ, ψ and the Ramachandran
histogram against the shipped parallel-tempering reference (60 bins per angle, a
pseudo-count of about one sample per bin, noise floor from two reference halves thinned
to the sample size).
"""
import json
import os

import numpy as np
import torch
from openmm import unit

from . import metrics
from ..io import read_samples
from .plots import plot_histograms, plot_ramachandran
from ..systems import many_well_positive_weight, shipped_path

__all__ = ["evaluate_file", "evaluate_array", "ala2_reference", "ala2_metrics"]

ALA2_REFERENCE = "ala2_implicit_reference.npz"


def ala2_reference():
    """The shipped alanine dipeptide PT reference (dict of arrays: phi, psi in rad, energy_kjmol)."""
    try:
        path = shipped_path(ALA2_REFERENCE)
    except FileNotFoundError:
        raise FileNotFoundError("the alanine dipeptide reference is not shipped yet; run "
                                "benchmarks/ala2_reference.py") from None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _row(name, value, floor=None, std=None):
    text = f"{name:<22s} {value:>10.4f}"
    text += f" ± {std:<8.4f}" if std is not None else " " * 11
    return text + (f" {floor:>12.4f}" if floor is not None else "")


def ala2_metrics(target, x):
    """φ/ψ/Ramachandran KLs and energy agreement of alanine dipeptide samples (dict of floats).

    Parameters
    ----------
    target : TargetSystem
        An ``alanine_dipeptide_*`` system (its energy is used for the energy metrics).
    x : torch.Tensor, shape=(n_samples, 22, 3)
        Samples in nm.

    Returns
    -------
    dict
        ``kl_phi``, ``kl_psi``, ``kl_ramachandran`` (nats, KL(reference ‖ samples) on 60
        (60×60) bins with a pseudo-count of one sample per bin, the protocol of
        :mod:`openmm_dikl.analysis.evaluation`), the same three for two halves of the reference
        thinned to the sample size (``*_floor``), ``fraction_phi_positive`` (and the
        reference's), ``energy_tvd`` (TVD of energy histograms, 200 bins spanning the
        reference, samples outside counted in full) with its floor ``energy_tvd_floor``,
        and the mean energies ``mean_energy_kjmol`` / ``reference_mean_energy_kjmol``
        (kJ/mol).  The reference is the shipped implicit-solvent PT run (300 K); for
        other alanine dipeptide variants the angle metrics still apply but the energy
        metrics compare different potentials and are reported only as means.
    """
    x = torch.as_tensor(x).detach().to(torch.float64)
    return _ala2_metrics(target, metrics.phi_psi(x.numpy(), target.topology),
                         target.reduced_energy(x).detach().numpy())


def _ala2_metrics(target, angles, u):
    """:func:`ala2_metrics` from φ/ψ (n, 2) in radians and reduced energies u (n,)."""
    ref = ala2_reference()
    ref_angles = np.stack([ref["phi"], ref["psi"]], axis=1).astype(np.float64)
    half = len(ref_angles) // 2
    # the second reference half thinned to the sample size, against the first half
    thin = np.linspace(0, half - 1, min(len(angles), half)).astype(int)
    thinned = ref_angles[half:][thin]
    pseudo = 1.0 / len(angles)
    out = {}
    for key, fn, cols in (("kl_phi", metrics.dihedral_kl, 0), ("kl_psi", metrics.dihedral_kl, 1),
                          ("kl_ramachandran", metrics.ramachandran_kl, slice(0, 2))):
        out[key] = float(fn(angles[:, cols], ref_angles[:, cols], pseudo=pseudo))
        out[key + "_floor"] = float(fn(thinned[:, cols], ref_angles[:half, cols], pseudo=pseudo))
    out["fraction_phi_positive"] = float(np.mean(angles[:, 0] > 0))
    out["reference_fraction_phi_positive"] = float(np.mean(ref_angles[:, 0] > 0))
    kt = target.kT.value_in_unit(unit.kilojoule_per_mole)
    energy = u * kt
    out["mean_energy_kjmol"] = float(np.mean(energy[np.isfinite(energy)]))
    out["reference_mean_energy_kjmol"] = float(np.mean(ref["energy_kjmol"]))
    if target.name == "alanine_dipeptide_implicit":
        u_ref = ref["energy_kjmol"] / kt
        out["energy_tvd"] = float(metrics.energy_tvd(u, u_ref))
        out["energy_tvd_floor"] = float(metrics.energy_tvd(u_ref[half:][thin], u_ref[:half]))
    return out


def evaluate_array(target, x, prefix=None, n_repeats=5, seed=0):
    """Metrics table (str) and written plot paths for samples ``x`` (n, N, d) in nm."""
    x = torch.as_tensor(x, dtype=torch.float64)
    lines = [f"{'metric':<22s} {'value':>10s} {'':11s} {'noise floor':>12s}"]
    plots = []
    u = target.reduced_energy(x).detach().numpy()
    if target.name.startswith("alanine_dipeptide"):
        ref = ala2_reference()
        angles = metrics.phi_psi(x.numpy(), target.topology)
        ref_angles = np.stack([ref["phi"], ref["psi"]], axis=1).astype(np.float64)
        m = _ala2_metrics(target, angles, u)
        for name, key in (("KL phi", "kl_phi"), ("KL psi", "kl_psi"),
                          ("KL Ramachandran", "kl_ramachandran")):
            lines.append(_row(name, m[key], m[key + "_floor"]))
        lines.append(_row("fraction phi > 0", m["fraction_phi_positive"],
                          m["reference_fraction_phi_positive"]))
        if "energy_tvd" in m:
            lines.append(_row("energy TVD", m["energy_tvd"], m["energy_tvd_floor"]))
        if prefix:
            kt = target.kT._value
            plots.append(plot_ramachandran(angles, prefix + "_ramachandran.png", reference=ref_angles))
            plots.append(plot_histograms([
                ("φ (degrees)", {"samples": np.degrees(angles[:, 0]), "reference": np.degrees(ref_angles[:, 0])}),
                ("ψ (degrees)", {"samples": np.degrees(angles[:, 1]), "reference": np.degrees(ref_angles[:, 1])}),
                ("reduced energy (kT)", {"samples": u, "reference": ref["energy_kjmol"] / kt}),
            ], prefix + "_marginals.png"))
        return "\n".join(lines), plots
    if target.name == "mog40":
        means = torch.as_tensor(json.load(open(shipped_path("mog40.json")))["means"])
        ref = target.reference_samples(len(x), seed=seed + 1)
        lines.append(_row("mode coverage", metrics.mode_coverage(x, means), metrics.mode_coverage(ref, means)))
        lines.append(_row("mode weight error", metrics.mode_weight_error(x, means),
                          metrics.mode_weight_error(ref, means)))
        lines.append(_row("mean log-density", float(-u.mean()), float(-target.reduced_energy(ref).mean())))
    elif target.name == "mw32":
        exact = many_well_positive_weight()
        ref = target.reference_samples(len(x), seed=seed + 1)
        lines.append(_row("max basin weight err", float(np.max(np.abs(metrics.basin_weights(x) - exact))),
                          float(np.max(np.abs(metrics.basin_weights(ref) - exact)))))
    else:
        result = metrics.evaluate_samples(target, x, n_repeats=n_repeats, seed=seed)
        floor = metrics.noise_floor(target, n_repeats=n_repeats, seed=seed)
        for key in ("w2", "energy_tvd", "distance_tvd"):
            if key in result:
                lines.append(_row(key + (" (nm)" if key == "w2" else ""), result[key], floor[key],
                                  result[key + "_std"]))
        ref = target.reference_samples()
    if prefix:
        u_ref = target.reduced_energy(ref).detach().numpy()
        panels = [("reduced energy (kT)", {"samples": u, "reference": u_ref})]
        if target.n_particles > 1:
            panels.append(("interatomic distance (nm)",
                           {"samples": metrics.pairwise_distances(x), "reference": metrics.pairwise_distances(ref)}))
        plots.append(plot_histograms(panels, prefix + "_histograms.png"))
    return "\n".join(lines), plots


def evaluate_file(target, path, top=None, prefix=None, n_repeats=5, seed=0):
    """Read samples from ``path`` (see :func:`openmm_dikl.io.read_samples`) and evaluate them.

    Returns
    -------
    table : str
        The metric table (units in the metric names; TVDs and KLs dimensionless).
    plots : list of str
        PNG files written (``<prefix>_*.png``).
    """
    if prefix:
        folder = os.path.dirname(os.path.abspath(prefix))
        if not os.path.isdir(folder):
            raise ValueError(f"plot folder {folder} does not exist")
    x = read_samples(target, path, top)
    return evaluate_array(target, x, prefix, n_repeats, seed)

"""Diagnostic plots written as PNG files (matplotlib, no display needed).

All angles are in radians on input and shown in degrees; energies are reduced (kT).
Files are written atomically (temporary file, then rename) so an interrupted run never
leaves a truncated PNG behind.
"""
import os

import numpy as np

__all__ = ["plot_ramachandran", "plot_histograms"]


def _figure(n_panels, width=4.2, height=3.6):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False,
                             layout="constrained")
    return plt, fig, axes[0]


def _save(plt, fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder} does not exist")
    tmp = os.path.join(folder, "." + os.path.basename(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_ramachandran(phi_psi, path, reference=None, labels=("sampler", "reference"), bins=60):
    """Ramachandran histogram(s) of (φ, ψ) pairs, the sampler beside an optional reference.

    Parameters
    ----------
    phi_psi : numpy.ndarray, shape=(n_samples, 2)
        Backbone dihedrals φ, ψ in radians.
    path : str
        Output PNG path.
    reference : numpy.ndarray, shape=(n_reference, 2), optional
        Reference (φ, ψ) in radians, drawn in a second panel with the same colour scale.
    labels : tuple of str
        Panel titles.
    bins : int
        Bins per angle on [−180°, 180°).

    Returns
    -------
    str
        ``path``.
    """
    sets = [np.asarray(phi_psi)] + ([np.asarray(reference)] if reference is not None else [])
    for data in sets:
        if data.ndim != 2 or data.shape[1] != 2 or len(data) == 0:
            raise ValueError(f"phi_psi must have shape (n_samples, 2) in radians, got {data.shape}")
    plt, fig, axes = _figure(len(sets))
    edges = np.linspace(-180, 180, bins + 1)
    for ax, data, label in zip(axes, sets, labels):
        hist, _, _ = np.histogram2d(*np.degrees(data).T, bins=[edges, edges], density=True)
        with np.errstate(divide="ignore"):
            free = -np.log(hist.T)
        image = ax.pcolormesh(edges, edges, free - np.nanmin(free[np.isfinite(free)]),
                              cmap="viridis", vmin=0, vmax=8)
        ax.set(xlabel="φ (degrees)", ylabel="ψ (degrees)", title=f"{label} (n = {len(data)})",
               xlim=(-180, 180), ylim=(-180, 180), aspect="equal")
    fig.colorbar(image, ax=list(axes), label="−log density (kT, shifted)")
    return _save(plt, fig, path)


def plot_histograms(panels, path, bins=100):
    """Overlaid 1-D histograms, one panel per quantity.

    Parameters
    ----------
    panels : list of (str, dict)
        ``(x_label, {series_label: values})``; values are 1-D arrays in the unit the
        label names (e.g. "reduced energy (kT)", "φ (degrees)").
    path : str
        Output PNG path.
    bins : int
        Number of bins spanning all series of a panel.
    """
    if not panels:
        raise ValueError("no panels to plot")
    plt, fig, axes = _figure(len(panels))
    for ax, (xlabel, series) in zip(axes, panels):
        values = [np.asarray(v, dtype=float).ravel() for v in series.values()]
        finite = np.concatenate([v[np.isfinite(v)] for v in values])
        if finite.size == 0:
            raise ValueError(f"panel {xlabel!r} has no finite values")
        edges = np.linspace(np.percentile(finite, 0.5), np.percentile(finite, 99.5), bins + 1)
        for label, v in zip(series, values):
            ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.5, label=label)
        ax.set(xlabel=xlabel, ylabel="density")
        ax.legend(frameon=False)
    return _save(plt, fig, path)

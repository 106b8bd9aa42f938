"""Diagnostic plots written as PNG files (matplotlib's Agg canvas, no display, no pyplot).

Figures are :class:`matplotlib.figure.Figure` objects drawn on a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, so no matplotlib backend is
selected for the process and nothing is registered with pyplot.  All angles are in
radians on input and shown in degrees over the full [−180°, 180°) range with fixed
bins; energies are reduced (kT).  Files are written atomically
(:func:`openmm_dikl.io.atomic_write`), so an interrupted run never leaves a truncated
PNG behind.
"""
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_write

__all__ = ["plot_ramachandran", "plot_histograms", "ramachandran_figure", "histogram_figure",
           "save_figure", "angle_bin_edges"]

#: Resolution of the written PNGs (dots per inch).
DPI = 110


def angle_bin_edges(bins=60):
    """Fixed bin edges over the full angle range, in degrees.

    Parameters
    ----------
    bins : int
        Number of bins (default 60: 6°, the bins of the torsion KL).

    Returns
    -------
    numpy.ndarray, shape=(bins + 1,)
        Edges from −180 to 180 degrees.
    """
    return np.linspace(-180.0, 180.0, int(bins) + 1)


def _figure(n_panels, title=None, width=4.2, height=3.6):
    """A Figure on an Agg canvas with ``n_panels`` axes in a row, and its axes."""
    fig = Figure(figsize=(width * n_panels, height + (0.3 if title else 0.0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    if title:
        fig.suptitle(title)
    return fig, axes


def save_figure(fig, path):
    """Write ``fig`` as a PNG to ``path`` atomically and return ``path``.

    Raises
    ------
    ValueError
        If the folder of ``path`` does not exist.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder} does not exist")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def ramachandran_figure(phi_psi, reference=None, labels=("sampler", "reference"), bins=60,
                        title=None):
    """Ramachandran free-energy histogram(s) of (φ, ψ), the sampler beside a reference.

    Parameters
    ----------
    phi_psi : numpy.ndarray, shape=(n_samples, 2)
        Backbone dihedrals φ, ψ in radians.
    reference : numpy.ndarray, shape=(n_reference, 2), optional
        Reference (φ, ψ) in radians, drawn in a second panel with the same colour scale.
    labels : tuple of str
        Panel titles (the sample count is appended).
    bins : int
        Bins per angle on [−180°, 180°).
    title : str, optional
        Figure title (e.g. system, method, temperature, budget).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If an angle array is not of shape (n, 2) or is empty.
    """
    sets = [np.asarray(phi_psi)] + ([np.asarray(reference)] if reference is not None else [])
    for data in sets:
        if data.ndim != 2 or data.shape[1] != 2 or len(data) == 0:
            raise ValueError(f"phi_psi must have shape (n_samples, 2) in radians, got {data.shape}")
    fig, axes = _figure(len(sets), title)
    edges = angle_bin_edges(bins)
    for ax, data, label in zip(axes, sets, labels):
        wrapped = np.mod(np.degrees(data) + 180.0, 360.0) - 180.0
        hist, _, _ = np.histogram2d(*wrapped.T, bins=[edges, edges], density=True)
        with np.errstate(divide="ignore"):
            free = -np.log(hist.T)
        image = ax.pcolormesh(edges, edges, free - np.nanmin(free[np.isfinite(free)]),
                              cmap="viridis", vmin=0, vmax=8)
        ax.set(xlabel="φ (degrees)", ylabel="ψ (degrees)", title=f"{label} (n = {len(data)})",
               xlim=(-180, 180), ylim=(-180, 180), aspect="equal")
    fig.colorbar(image, ax=list(axes), label="−log density (kT, shifted)")
    return fig


def _edges(values, bins):
    """Bin edges: ``bins`` if it is an array of edges, else equal bins over 0.5–99.5 %."""
    if np.ndim(bins) == 1:
        return np.asarray(bins, dtype=float)
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    low, high = np.percentile(finite, 0.5), np.percentile(finite, 99.5)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, int(bins) + 1)


def histogram_figure(panels, bins=100, title=None, log_density=False):
    """Overlaid 1-D histograms, one panel per quantity.

    Parameters
    ----------
    panels : list of tuple
        ``(x_label, {series_label: values})`` or ``(x_label, {series_label: values},
        edges)``; values are 1-D arrays in the unit the label names (e.g. "reduced
        energy (kT)", "φ (degrees)"), ``edges`` fixed bin edges in that unit (for angles
        :func:`angle_bin_edges`, the full ±180° range).
    bins : int
        Without edges: number of equal bins spanning the 0.5–99.5 % percentiles of all
        series of the panel (values outside are not drawn).
    title : str, optional
        Figure title.
    log_density : bool
        Logarithmic density axis (shows small basins, e.g. alanine dipeptide's φ > 0).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        No panels, or a panel without finite values.
    """
    if not panels:
        raise ValueError("no panels to plot")
    fig, axes = _figure(len(panels), title)
    for ax, panel in zip(axes, panels):
        xlabel, series = panel[0], panel[1]
        values = [np.asarray(v, dtype=float).ravel() for v in series.values()]
        if not any(np.isfinite(v).any() for v in values):
            raise ValueError(f"panel {xlabel!r} has no finite values")
        edges = _edges(values, panel[2] if len(panel) > 2 else bins)
        for label, v in zip(series, values):
            ax.hist(v[np.isfinite(v)], bins=edges, density=True, histtype="step",
                    linewidth=1.5, label=f"{label} (n = {len(v)})")
        ax.set(xlabel=xlabel, ylabel="density", xlim=(edges[0], edges[-1]),
               yscale="log" if log_density else "linear")
        ax.legend(frameon=False)
    return fig


def plot_ramachandran(phi_psi, path, reference=None, labels=("sampler", "reference"), bins=60,
                      title=None):
    """Write :func:`ramachandran_figure` of (φ, ψ) in radians to the PNG ``path``.

    Parameters
    ----------
    phi_psi : numpy.ndarray, shape=(n_samples, 2)
        Backbone dihedrals φ, ψ in radians.
    path : str
        Output PNG path (its folder must exist).
    reference, labels, bins, title
        As in :func:`ramachandran_figure`.

    Returns
    -------
    str
        ``path``.
    """
    return save_figure(ramachandran_figure(phi_psi, reference, labels, bins, title), path)


def plot_histograms(panels, path, bins=100, title=None, log_density=False):
    """Write :func:`histogram_figure` of ``panels`` to the PNG ``path``.

    Parameters
    ----------
    panels : list of tuple
        See :func:`histogram_figure`.
    path : str
        Output PNG path (its folder must exist).
    bins, title, log_density
        As in :func:`histogram_figure`.

    Returns
    -------
    str
        ``path``.
    """
    return save_figure(histogram_figure(panels, bins, title, log_density), path)

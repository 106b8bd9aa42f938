"""Reading and writing sample sets: numpy arrays and mdtraj trajectories, in nm.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a
failure never leaves a truncated output behind.
"""
import os

import mdtraj
import numpy as np

from .units import check_positions

__all__ = ["write_samples", "read_samples", "TRAJECTORY_FORMATS"]

#: Extensions written through mdtraj.
TRAJECTORY_FORMATS = (".pdb", ".dcd", ".h5")


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_samples(target, x, path):
    """Write samples of ``target`` to ``path`` by extension.

    Parameters
    ----------
    target : TargetSystem
    x : array-like, shape=(n_samples, n_particles, spatial_dim)
        Positions in nm.
    path : str
        ``.npy`` (float64 array, nm), ``.pdb``, ``.dcd`` (plus ``<stem>.pdb`` topology
        beside it) or ``.h5``.

    Returns
    -------
    list of str
        Paths written.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy",) + TRAJECTORY_FORMATS:
        raise ValueError(f"unsupported output format {ext!r}; use .npy, .pdb, .dcd or .h5")
    x = check_positions(x, target.n_particles, target.spatial_dim, name="samples")
    if ext == ".npy":
        return [_atomic(path, lambda tmp: np.save(tmp, x))]
    traj = target.to_mdtraj(x)
    written = [_atomic(path, traj.save)]
    if ext == ".dcd":
        topology = os.path.splitext(path)[0] + ".pdb"
        written.append(_atomic(topology, traj[0].save))
    return written


def read_samples(target, path, top=None):
    """Samples of ``target`` from ``.npy`` or an mdtraj-readable trajectory, shape (n, N, d), nm.

    For ``.dcd`` the topology is ``top`` or ``<stem>.pdb`` beside the file.  2-D targets
    drop z.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing or unreadable file, or samples that do not fit the target (wrong shape,
        NaN/inf, or bond lengths off the nm scale, e.g. a ``.npy`` saved in Å).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"samples file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"cannot read {path} as a numpy array: {err}") from err
        if x.ndim == 2 and x.shape[1] == target.n_particles * target.spatial_dim:
            x = x.reshape(len(x), target.n_particles, target.spatial_dim)
    else:
        kwargs = {}
        if ext == ".dcd":
            top = top or os.path.splitext(path)[0] + ".pdb"
            if not os.path.exists(top):
                raise FileNotFoundError(f"topology {top} for {path} does not exist (use --top)")
            kwargs["top"] = top
        try:
            traj = mdtraj.load(path, **kwargs)
        except Exception as err:  # mdtraj raises many types for unreadable files
            raise ValueError(f"cannot read trajectory {path}: {err}") from err
        if traj.n_atoms != target.n_particles:
            raise ValueError(f"{path} has {traj.n_atoms} atoms but system {target.name!r} has "
                             f"{target.n_particles}")
        x = traj.xyz.astype(np.float64)[..., :target.spatial_dim]
    x = check_positions(x, target.n_particles, target.spatial_dim, name=f"samples in {path}")
    if hasattr(target, "check_length_scale"):
        target.check_length_scale(x, name=f"samples in {path}")
    return x

"""Reading and writing sample sets: numpy arrays and mdtraj trajectories, in nm.

Writes are atomic (:func:`atomic_write`: a temporary file in the same folder, fsync,
then ``os.replace``), so a failure never leaves a truncated output behind.
"""
import contextlib
import os
import sys
import tempfile

import mdtraj
import numpy as np

from .units import check_positions

__all__ = ["write_samples", "read_samples", "TRAJECTORY_FORMATS", "atomic_write",
           "quiet_stderr"]

#: Extensions written through mdtraj.
TRAJECTORY_FORMATS = (".pdb", ".dcd", ".h5")


def atomic_write(path, write):
    """Create or replace ``path`` atomically: ``write(tmp)`` writes a temporary file in the
    same folder, which is fsync'ed and renamed onto ``path``.

    A failure (or Ctrl-C) inside ``write`` removes the temporary file and leaves an
    existing ``path`` untouched.  The temporary name keeps the extension of ``path``
    (writers that choose the format by extension work).

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{stem}-", suffix=ext)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_folder(folder)
    return path


def _fsync_folder(folder):
    """Make a rename durable (best effort; not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def quiet_stderr():
    """Silence writes to the process's stderr (file descriptor 2) inside the block.

    mdtraj's DCD reader (a C plugin) prints a line to stderr on every file it opens;
    Python-level redirection cannot catch it, so the descriptor itself is pointed at
    ``os.devnull`` for the duration and restored afterwards.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


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
        return [atomic_write(path, lambda tmp: np.save(tmp, x))]
    traj = target.to_mdtraj(x)
    written = [atomic_write(path, traj.save)]
    if ext == ".dcd":
        topology = os.path.splitext(path)[0] + ".pdb"
        written.append(atomic_write(topology, traj[0].save))
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
            with quiet_stderr():
                traj = mdtraj.load(path, **kwargs)
        except Exception as err:  # mdtraj raises many types for unreadable files
            raise ValueError(f"cannot read trajectory {path}: {err}") from err
        if traj.n_atoms != target.n_particles:
            raise ValueError(f"{path} has {traj.n_atoms} atoms but system {target.name!r} has "
                             f"{target.n_particles}")
        x = traj.xyz.astype(np.float64)[..., :target.spatial_dim]
    x = check_positions(x, target.n_particles, target.spatial_dim, name=f"samples in {path}")
    target.check_length_scale(x, name=f"samples in {path}")
    return x

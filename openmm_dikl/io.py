"""Reading and writing sample sets: numpy arrays and mdtraj trajectories, in nm.

Writes are atomic (:func:`atomic_write`: a temporary file in the same folder, fsync,
then ``os.replace``), so a failure never leaves a truncated output behind.
"""
import contextlib
import ctypes
import os
import sys
import tempfile

import mdtraj
import numpy as np

from .units import check_positions

__all__ = ["write_samples", "read_samples", "TRAJECTORY_FORMATS", "atomic_write",
           "quiet_native_output"]

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


def _flush_c_stdio():
    """Flush the C library's stdio buffers (what native code printed but not yet wrote)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library handle on this platform
        pass


@contextlib.contextmanager
def quiet_native_output():
    """Silence what native code writes to the process's stdout and stderr inside the block.

    mdtraj's DCD reader (a C plugin) prints two lines per file it opens, through C stdio
    on standard output; Python-level redirection cannot catch them, so file descriptors
    1 and 2 point at ``os.devnull`` for the duration (C buffers are flushed before they
    are restored).  Python's own ``sys.stdout`` / ``sys.stderr`` are flushed first.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced streams
            pass
    streams = []
    for fd in (1, 2):  # the descriptors native code writes to, whatever sys.stdout is now
        try:
            os.fstat(fd)
            streams.append(fd)
        except OSError:  # not open in this process
            pass
    _flush_c_stdio()
    saved = [os.dup(fd) for fd in streams]
    try:
        with open(os.devnull, "w") as devnull:
            for fd in streams:
                os.dup2(devnull.fileno(), fd)
            yield
            _flush_c_stdio()
    finally:
        for fd, copy in zip(streams, saved):
            os.dup2(copy, fd)
            os.close(copy)


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
            with quiet_native_output():
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

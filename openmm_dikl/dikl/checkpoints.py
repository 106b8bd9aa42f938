"""Checkpoint files of DiKL training and trained one-shot samplers.

:func:`save_sampler` / :func:`load_sampler` write and read small generator-only files
(``sampler.pt``; the shipped ``systems/checkpoints/<name>.pt``) and also read full
training checkpoints written by :class:`~openmm_dikl.dikl.DiKLTrainer`.  Every file is
written atomically (temporary file, fsync, rename) and checked on reading: a truncated or
foreign file, or one for another system, raises :class:`CheckpointError` naming the file.
Positions are in nm.
"""
import os
import secrets
import tempfile
import time

import torch

from .. import systems
from ..geometry import remove_mean
from ..nn import build_model

__all__ = ["CheckpointError", "NeuralSampler", "save_sampler", "load_sampler",
           "BUNDLED_SAMPLERS", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "openmm_dikl.dikl/1"
#: Systems for which a trained sampler is meant to ship in ``systems/checkpoints/``.
BUNDLED_SAMPLERS = ("dw4", "lj13", "mw32", "mog40")


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of the wrong kind or for another system."""


#: Fault-injection hook for tests/test_faults.py: with this variable set to K, the K-th
#: checkpoint write of the process leaves a half-written temporary file and hangs (until
#: killed), so a test can SIGKILL training deterministically in the middle of a write.
_HANG_IN_SAVE_ENV = "OPENMM_DIKL_TEST_HANG_IN_SAVE"
_save_calls = 0


def _maybe_hang_in_save(handle):
    global _save_calls
    _save_calls += 1
    if os.environ.get(_HANG_IN_SAVE_ENV) == str(_save_calls):
        handle.flush()
        handle.truncate(max(1, handle.tell() // 2))
        handle.flush()
        while True:
            time.sleep(1.0)


def _atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            _maybe_hang_in_save(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _load_file(path, kinds=("trainer", "sampler")):
    """Load and sanity-check an openmm_dikl checkpoint file (dict) on the CPU."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(f"checkpoint file {path!r} is truncated or corrupt "
                              f"({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"file {path!r} is not an openmm_dikl DiKL checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    if obj.get("kind") not in kinds:
        raise CheckpointError(f"checkpoint file {path!r} holds a {obj.get('kind')!r}, "
                              f"expected one of {kinds}")
    return obj


def _check_target(obj, path, name, n_particles, spatial_dim):
    found = (obj.get("target_name"), obj.get("n_particles"), obj.get("spatial_dim"))
    if found != (name, n_particles, spatial_dim):
        raise CheckpointError(f"checkpoint file {path!r} is for system {found[0]!r} "
                              f"({found[1]} particles, {found[2]}-D), not for {name!r} "
                              f"({n_particles} particles, {spatial_dim}-D)")


def _load_state(module, state, what, path):
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"the {what} in checkpoint file {path!r} does not fit the "
                              f"model: {err}") from err


class NeuralSampler:
    """A trained one-shot generator: ``sample(n)`` costs one network call per batch.

    Parameters
    ----------
    generator : torch.nn.Module
        With ``sample(n, generator=torch.Generator)`` -> (n, n_particles, spatial_dim), nm.
    target_name : str
        Name of the system it was trained on.
    metadata : dict, optional
    centre : bool
        Remove the centre of mass of the samples (runs in the centred subspace).
    source : str, optional
        File it was loaded from.
    """

    def __init__(self, generator, target_name, metadata=None, centre=False, source=None):
        self.generator = generator.eval()
        self.target_name = target_name
        self.metadata = dict(metadata or {})
        self.centre = bool(centre)
        self.source = source
        self.n_particles = generator.n_particles
        self.spatial_dim = generator.spatial_dim

    def __repr__(self):
        return (f"NeuralSampler({self.target_name!r}, n_particles={self.n_particles}, "
                f"spatial_dim={self.spatial_dim}, source={self.source!r})")

    def sample(self, n, seed=None, batch_size=10000):
        """Draw ``n`` configurations.

        Parameters
        ----------
        n : int
            Number of samples (≥ 1).
        seed : int, optional
            Seed of the torch.Generator used (None: fresh entropy); the global RNG is
            never used.
        batch_size : int
            Samples per generator call.

        Returns
        -------
        torch.Tensor, shape=(n, n_particles, spatial_dim), dtype=float64
            Positions in nm.
        """
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        gen = torch.Generator().manual_seed(secrets.randbits(62) if seed is None else int(seed))
        chunks = []
        with torch.no_grad():
            for start in range(0, int(n), int(batch_size)):
                m = min(int(batch_size), int(n) - start)
                x = self.generator.sample(m, generator=gen).to(torch.float64)
                chunks.append(remove_mean(x) if self.centre else x)
        return torch.cat(chunks)

    def to_mdtraj(self, n, seed=None):
        """``n`` samples as an :class:`mdtraj.Trajectory` of the bundled system (nm).

        Raises
        ------
        ValueError
            If ``target_name`` is not a bundled system (no topology is known).
        """
        try:
            target = systems.get(self.target_name)
        except KeyError as err:
            raise ValueError(f"sampler was trained on {self.target_name!r}, which is not a "
                             f"bundled system; use sample() and your own topology") from err
        return target.to_mdtraj(self.sample(n, seed).numpy())


def save_sampler(path, target_name, generator, metadata=None, centre=False):
    """Write a small generator-only file that :func:`load_sampler` reads.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (written atomically).
    target_name : str
        System the generator samples.
    generator : torch.nn.Module
        Needs ``config`` (a dict accepted by ``openmm_dikl.nn.build_model``),
        ``n_particles`` and ``spatial_dim``.
    metadata : dict, optional
        Plain Python values (numbers, strings, lists, dicts) to keep with the model.
    centre : bool
        Whether samples are to be centred on their centre of mass.

    Raises
    ------
    ValueError
        If the generator has no ``config`` to rebuild it from.
    """
    config = getattr(generator, "config", None)
    if config is None:
        raise ValueError("generator has no `config` dict, so load_sampler could not rebuild "
                         "it; build it with openmm_dikl.nn")
    _atomic_save({"format": CHECKPOINT_FORMAT, "kind": "sampler", "target_name": target_name,
                  "n_particles": generator.n_particles, "spatial_dim": generator.spatial_dim,
                  "generator_config": config, "generator_state": generator.state_dict(),
                  "metadata": dict(metadata or {}), "centre": bool(centre)}, os.fspath(path))


def load_sampler(name_or_path, target=None):
    """Load a trained generator as a :class:`NeuralSampler`.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A bundled name (``"dw4"``, ``"lj13"``, ``"mw32"``, ``"mog40"``: the file
        ``systems/checkpoints/<name>.pt``) or the path of a file written by
        :func:`save_sampler` or :meth:`DiKLTrainer.save_checkpoint`.
    target : str or TargetSystem, optional
        If given, the checkpoint must have been trained on this system.

    Returns
    -------
    NeuralSampler

    Raises
    ------
    FileNotFoundError
        Unknown name, missing file, or a bundled checkpoint that is not shipped.
    CheckpointError
        Corrupt/truncated file, a file that is not a DiKL checkpoint, weights that do not
        fit the stored architecture, or a checkpoint for another system than ``target``.
    """
    name_or_path = os.fspath(name_or_path)
    if name_or_path in BUNDLED_SAMPLERS and not os.path.exists(name_or_path):
        try:
            path = shipped_path(f"checkpoints/{name_or_path}.pt")
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"no trained sampler is bundled for {name_or_path!r}: "
                f"systems/checkpoints/{name_or_path}.pt is missing from this installation "
                f"(train one with DiKLTrainer and pass its path)") from err
    elif os.path.exists(name_or_path):
        path = name_or_path
    else:
        raise FileNotFoundError(f"{name_or_path!r} is neither a bundled sampler "
                                f"({', '.join(BUNDLED_SAMPLERS)}) nor an existing checkpoint file")
    obj = _load_file(path)
    if target is not None:
        name = target if isinstance(target, str) else target.name
        if obj.get("target_name") != name:
            raise CheckpointError(f"checkpoint file {path!r} is for system "
                                  f"{obj.get('target_name')!r}, not {name!r}")
    if obj.get("generator_config") is None:
        raise CheckpointError(f"checkpoint file {path!r} has no generator config, so the "
                              "generator cannot be rebuilt")
    try:
        generator = build_model(obj["generator_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path!r} holds a generator config that "
                              f"openmm_dikl.nn cannot build: {err}") from err
    # a trainer checkpoint with a weight average samples from the average
    state = obj.get("generator_ema_state") or obj["generator_state"]
    _load_state(generator, state, "generator", path)
    if (generator.n_particles, generator.spatial_dim) != (obj["n_particles"], obj["spatial_dim"]):
        raise CheckpointError(f"checkpoint file {path!r}: the generator shape does not match "
                              f"the stored system shape")
    metadata = obj.get("metadata") or {"iteration": obj.get("iteration")}
    return NeuralSampler(generator, obj["target_name"], metadata, obj.get("centre", False),
                         source=path)

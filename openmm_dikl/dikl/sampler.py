"""Trained one-shot samplers: :class:`NeuralSampler`, :func:`save_sampler`, :func:`load_sampler`.

A trained DiKL generator draws a configuration with one network call.  It is stored in a
small generator-only checkpoint (``sampler.pt``; the shipped
``systems/checkpoints/<name>.pt`` of :data:`BUNDLED_SAMPLERS`); :func:`load_sampler` also
reads the generator (its weight average, if kept) out of a full training checkpoint.
The file format is that of :mod:`openmm_dikl.dikl.checkpoints`.  Positions are in nm.
"""
import os
import secrets

import torch

from .. import systems
from ..geometry import remove_mean
from ..nn import build_model
from .checkpoints import (CHECKPOINT_FORMAT, CheckpointError, load_states, read_checkpoint,
                          write_checkpoint)

__all__ = ["NeuralSampler", "save_sampler", "load_sampler", "BUNDLED_SAMPLERS"]

#: Systems whose trained sampler ships as ``systems/checkpoints/<name>.pt``.
BUNDLED_SAMPLERS = ("dw4", "lj13", "mw32", "mog40", "alanine_dipeptide_implicit")


class NeuralSampler:
    """A trained one-shot generator: ``sample(n)`` costs one network call per batch.

    Parameters
    ----------
    generator : torch.nn.Module
        With ``sample(n, generator=torch.Generator)`` -> (n, n_particles, spatial_dim), nm.
    target_name : str
        Name of the system it was trained on.
    metadata : dict, optional
        Plain values stored with the model (e.g. the iteration and settings of its run).
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
        if isinstance(n, bool) or int(n) != n or n < 1:
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
        Needs ``config`` (a dict accepted by :func:`openmm_dikl.nn.build_model`),
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
    write_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "kind": "sampler", "target_name": target_name,
        "n_particles": generator.n_particles, "spatial_dim": generator.spatial_dim,
        "generator_config": config, "generator_state": generator.state_dict(),
        "metadata": dict(metadata or {}), "centre": bool(centre)})


def _resolve(name_or_path):
    """The file of a bundled sampler name, or the given path if it exists."""
    name_or_path = os.fspath(name_or_path)
    if name_or_path in BUNDLED_SAMPLERS and not os.path.exists(name_or_path):
        try:
            return systems.shipped_path(f"checkpoints/{name_or_path}.pt")
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"no trained sampler is bundled for {name_or_path!r}: "
                f"systems/checkpoints/{name_or_path}.pt is missing from this installation "
                f"(train one with DiKLTrainer and pass its path)") from err
    if os.path.exists(name_or_path):
        return name_or_path
    raise FileNotFoundError(f"{name_or_path!r} is neither a bundled sampler "
                            f"({', '.join(BUNDLED_SAMPLERS)}) nor an existing checkpoint file")


def load_sampler(name_or_path, target=None):
    """Load a trained generator as a :class:`NeuralSampler`.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A bundled name (one of :data:`BUNDLED_SAMPLERS`: the file
        ``systems/checkpoints/<name>.pt``) or the path of a file written by
        :func:`save_sampler` or :meth:`DiKLTrainer.save_checkpoint` (whose weight
        average, if kept, is the generator then).
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
    path = _resolve(name_or_path)
    obj = read_checkpoint(path)
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
    state = obj.get("generator_ema_state") or obj["generator_state"]
    load_states([(generator, state, "generator")], path)
    if (generator.n_particles, generator.spatial_dim) != (obj["n_particles"], obj["spatial_dim"]):
        raise CheckpointError(f"checkpoint file {path!r}: the generator shape does not match "
                              f"the stored system shape")
    metadata = obj.get("metadata") or {"iteration": obj.get("iteration")}
    return NeuralSampler(generator, obj["target_name"], metadata, obj.get("centre", False),
                         source=path)

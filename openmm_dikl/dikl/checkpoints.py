"""The checkpoint file format of DiKL: writing, reading, checking and migrating.

Two kinds of file share one format, a ``torch.save``'d dict with ``"format"`` and
``"kind"`` keys:

* ``"trainer"`` — the full training state of a :class:`~openmm_dikl.dikl.DiKLTrainer`
  (``OUT/checkpoint.pt``): networks, weight average, optimisers, random states, MALA
  step sizes, iteration and the run's :class:`~openmm_dikl.dikl.DiKLConfig`;
* ``"sampler"`` — a generator only (``sampler.pt``, the shipped
  ``systems/checkpoints/<name>.pt``), read by :func:`~openmm_dikl.dikl.load_sampler`.

Files are written atomically (:func:`openmm_dikl.io.atomic_write`: temporary file in the
same folder, fsync, rename), so an interrupted write never leaves a torn file, and are
checked on reading: a missing, truncated or foreign file, or one for another system,
raises ``FileNotFoundError`` or :class:`CheckpointError` naming the file.

Format history: ``openmm_dikl.dikl/1`` stored the trainer's settings as one flat dict
(and ``centre: None`` when it was chosen automatically); ``openmm_dikl.dikl/2`` stores
the nested :meth:`DiKLConfig.to_dict` with the resolved centring.  Format-1 files are
migrated when read (:func:`migrate`), so both kinds written by earlier versions, the
shipped samplers included, stay loadable.
"""
import copy
import os

import torch

from ..io import atomic_write
from .config import DiKLConfig

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "READABLE_FORMATS", "write_checkpoint",
           "read_checkpoint", "check_checkpoint", "migrate", "stored_config", "check_target",
           "load_states", "trainer_state", "read_trainer_checkpoint", "load_networks",
           "check_settings", "load_generator", "load_starting_networks"]

#: Format written by this version.
CHECKPOINT_FORMAT = "openmm_dikl.dikl/2"
#: Formats read by this version (older ones are migrated, see :func:`migrate`).
READABLE_FORMATS = ("openmm_dikl.dikl/1", CHECKPOINT_FORMAT)


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of the wrong kind or for another system."""


def write_checkpoint(path, state):
    """Write ``state`` (a dict of tensors and plain values) to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; an existing file is replaced only once the new one is complete.
    state : dict
        Must hold ``"format"`` and ``"kind"``.

    Returns
    -------
    str
        ``path``.
    """
    return atomic_write(os.fspath(path), lambda tmp: torch.save(state, tmp))


def read_checkpoint(path, kinds=("trainer", "sampler")):
    """Load, check and migrate an openmm_dikl checkpoint file (on the CPU).

    Parameters
    ----------
    path : str or os.PathLike
    kinds : tuple of str
        Accepted kinds (``"trainer"``, ``"sampler"``).

    Returns
    -------
    dict
        The content in the current format (:data:`CHECKPOINT_FORMAT`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    CheckpointError
        If it is truncated or corrupt, not an openmm_dikl checkpoint, of another kind, or
        holds settings that cannot be read.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(f"checkpoint file {path!r} is truncated or corrupt "
                              f"({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict) or obj.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"file {path!r} is not an openmm_dikl DiKL checkpoint "
                              f"(expected format {' or '.join(map(repr, READABLE_FORMATS))})")
    if obj.get("kind") not in kinds:
        raise CheckpointError(f"checkpoint file {path!r} holds a {obj.get('kind')!r}, "
                              f"expected one of {tuple(kinds)}")
    return migrate(obj, path)


def check_checkpoint(path, kinds=("trainer",)):
    """Check that ``path`` is a readable checkpoint of one of ``kinds`` (before writing
    anything that depends on it, e.g. ``openmm-dikl train --resume``).

    Raises
    ------
    FileNotFoundError, CheckpointError
        As :func:`read_checkpoint`; the message names the file.
    """
    read_checkpoint(path, kinds)


def migrate(obj, path="<checkpoint>"):
    """The content of a checkpoint of any readable format in the current format.

    Format 1 → 2: a trainer checkpoint's flat settings become the nested
    :meth:`DiKLConfig.to_dict` (settings added after format 1 was fixed,
    ``coordinate_scale`` and ``score_clip``, get their defaults, which are the behaviour
    from before), and an automatic centring (``centre: None``) becomes the centring the
    run used (the stored ``"centre"``).  Sampler files need no change.

    Raises
    ------
    CheckpointError
        If the stored settings are not valid DiKL settings.
    """
    if obj["format"] == CHECKPOINT_FORMAT:
        return obj
    obj = dict(obj, format=CHECKPOINT_FORMAT)
    if obj["kind"] == "trainer":
        config = stored_config(obj, path)
        if config.schedule.centre is None:
            config = config.replace(centre=bool(obj["centre"]))
        obj["config"] = config.to_dict()
    return obj


def stored_config(obj, path="<checkpoint>"):
    """The :class:`DiKLConfig` stored in a trainer checkpoint (either layout).

    Raises
    ------
    CheckpointError
        If it is missing or invalid.
    """
    try:
        return DiKLConfig.from_dict(dict(obj["config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path!r} holds settings this version cannot "
                              f"read: {err}") from err


def check_target(obj, path, target):
    """Refuse a checkpoint written for another system than ``target``.

    Parameters
    ----------
    obj : dict
        Checkpoint content.
    path : str
        Its file (for the message).
    target : TargetSystem or target-like
        Needs ``name``, ``n_particles`` and ``spatial_dim``.

    Raises
    ------
    CheckpointError
    """
    found = (obj.get("target_name"), obj.get("n_particles"), obj.get("spatial_dim"))
    wanted = (target.name, target.n_particles, target.spatial_dim)
    if found != wanted:
        raise CheckpointError(f"checkpoint file {path!r} is for system {found[0]!r} "
                              f"({found[1]} particles, {found[2]}-D), not for {wanted[0]!r} "
                              f"({wanted[1]} particles, {wanted[2]}-D)")


def load_states(loads, path):
    """Load state dicts into modules and optimisers, all or nothing.

    Parameters
    ----------
    loads : list of (object, dict, str)
        ``(module_or_optimizer, state, what)``; ``what`` names it in the message.
    path : str
        The file the states come from (for the message).

    Raises
    ------
    CheckpointError
        If a state does not fit; every object then keeps the state it had.
    """
    before = [copy.deepcopy(target.state_dict()) for target, _, _ in loads]
    done = []
    try:
        for target, state, what in loads:
            done.append(target)
            try:
                target.load_state_dict(state)
            except (RuntimeError, KeyError, TypeError, ValueError) as err:
                raise CheckpointError(f"the {what} in checkpoint file {path!r} does not fit "
                                      f"the model: {err}") from err
    except CheckpointError:
        for target, state in zip(done, before):
            target.load_state_dict(state)
        raise


# ---------------------------------------------------------------------- trainer state
def trainer_state(trainer, rng_states):
    """The content of a trainer checkpoint: everything to continue a run bit for bit.

    Parameters
    ----------
    trainer : DiKLTrainer
    rng_states : list of torch.Tensor
        The torch.Generator state of every rank (rank 0's first).

    Returns
    -------
    dict
        ``format``, ``kind`` ("trainer"), the system (``target_name``, ``n_particles``,
        ``spatial_dim``), progress (``iteration``, ``wall_time`` in s,
        ``skipped_steps``), ``config`` (:meth:`DiKLConfig.to_dict`), ``centre``, the
        architectures and states of the generator, its weight average (or None), the
        score network and both Adam optimisers, ``rng_state`` (rank 0) and
        ``rng_states``, ``world_size``, the per-level MALA ``step_sizes`` (nm²),
        ``init_from`` and ``selection_best`` (the best ``run.select_checkpoint`` result
        so far, a dict of plain values, or None).
    """
    ema = trainer.generator_ema
    return {"format": CHECKPOINT_FORMAT, "kind": "trainer",
            "target_name": trainer.target.name, "n_particles": trainer.target.n_particles,
            "spatial_dim": trainer.target.spatial_dim, "iteration": trainer.iteration,
            "wall_time": trainer.wall_time, "skipped_steps": trainer.skipped_steps,
            "config": trainer.config.to_dict(), "centre": trainer.centre,
            "generator_config": getattr(trainer.generator, "config", None),
            "score_config": getattr(trainer.score_model, "config", None),
            "generator_state": trainer.generator.state_dict(),
            "generator_ema_state": None if ema is None else ema.state_dict(),
            "score_state": trainer.score_model.state_dict(),
            "opt_generator_state": trainer.opt_generator.state_dict(),
            "opt_score_state": trainer.opt_score.state_dict(),
            "rng_state": rng_states[0], "rng_states": list(rng_states),
            "world_size": trainer.world_size, "step_sizes": trainer.step_sizes.clone(),
            "init_from": trainer.init_from,
            "selection_best": copy.deepcopy(getattr(trainer, "selection_best", None))}


def read_trainer_checkpoint(path, target, config, resume):
    """Read a trainer checkpoint and check that it fits a run on ``target`` with ``config``.

    Parameters
    ----------
    path : str or os.PathLike
    target : TargetSystem or target-like
    config : DiKLConfig
        The settings of the run that wants the checkpoint.
    resume : bool
        True: to resume the run (every setting outside ``run`` must be equal); False: to
        start a new run from its networks (the ``schedule`` section must be equal).

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError, CheckpointError
        A missing or unreadable file, another kind or system, or other settings.
    """
    obj = read_checkpoint(path, kinds=("trainer",))
    check_target(obj, path, target)
    check_settings(obj, path, config, resume)
    return obj


def check_settings(obj, path, config, resume):
    """Refuse a trainer checkpoint whose settings do not allow resuming (``resume``) or
    fine-tuning with ``config`` (see :func:`read_trainer_checkpoint`).

    Raises
    ------
    CheckpointError
    """
    theirs = stored_config(obj, path)
    if resume:
        changed = config.resume_differences(theirs)
        what = "was written with different settings: "
    else:
        changed = config.fine_tune_differences(theirs)
        what = "holds a score network for other settings: "
    if changed:
        raise CheckpointError(f"checkpoint file {path!r} {what}" + ", ".join(changed))


def load_starting_networks(trainer, path):
    """Load the networks of a trainer checkpoint, or the generator of a sampler
    checkpoint, into a fresh run's ``trainer`` (see ``DiKLTrainer.load_weights``).

    Returns
    -------
    bool
        Whether a score network was loaded (False for a sampler checkpoint).

    Raises
    ------
    FileNotFoundError, CheckpointError
        As :func:`read_checkpoint`, :func:`check_target`, :func:`check_settings`,
        :func:`load_networks` and :func:`load_generator`; nothing is loaded then.
    """
    obj = read_checkpoint(path)
    check_target(obj, path, trainer.target)
    if obj["kind"] == "sampler":
        load_generator(trainer, obj, path)
        return False
    check_settings(obj, path, trainer.config, resume=False)
    load_networks(trainer, obj, path, optimisers=False)
    return True


def _check_architecture(obj, path, what, model):
    """Refuse a checkpoint whose ``what`` ("generator" / "score") network was built with
    another config than ``model`` (models without a config are not checked)."""
    config = getattr(model, "config", None)
    stored = obj.get(f"{what}_config")
    if config is not None and stored not in (None, config):
        raise CheckpointError(f"checkpoint file {path!r} holds a {what} built with "
                              f"{stored}, not {config}")


def load_generator(trainer, obj, path):
    """Load the generator of a sampler checkpoint into ``trainer``'s generator and its
    weight average (if kept), all or nothing; the score network is left as it is.

    Raises
    ------
    CheckpointError
        Another generator architecture or centring, or a state that does not fit.
    """
    _check_architecture(obj, path, "generator", trainer.generator)
    if bool(obj.get("centre", trainer.centre)) != bool(trainer.centre):
        raise CheckpointError(f"checkpoint file {path!r} holds a generator trained with "
                              f"centre={obj['centre']}, this run has centre={trainer.centre}")
    loads = [(trainer.generator, obj["generator_state"], "generator"),
             (trainer.generator_ema, obj["generator_state"], "generator average")]
    load_states([load for load in loads if load[0] is not None], path)


def load_networks(trainer, obj, path, optimisers):
    """Load the networks (and with ``optimisers`` the Adam states) of a trainer checkpoint
    into ``trainer``, all or nothing.

    Without ``optimisers`` (fine-tuning) a checkpoint of a run that kept no weight
    average starts the trainer's average at the generator's weights.

    Raises
    ------
    CheckpointError
        Other architectures, a missing weight average, or states that do not fit.
    """
    for what, model in (("generator", trainer.generator), ("score", trainer.score_model)):
        _check_architecture(obj, path, what, model)
    ema_state = obj.get("generator_ema_state")
    if ema_state is None and not optimisers:
        ema_state = obj["generator_state"]
    if trainer.generator_ema is not None and ema_state is None:
        raise CheckpointError(f"checkpoint file {path!r} has no generator average")
    loads = [(trainer.generator, obj["generator_state"], "generator"),
             (trainer.generator_ema, ema_state, "generator average"),
             (trainer.score_model, obj["score_state"], "score network")]
    if optimisers:
        loads += [(trainer.opt_generator, obj["opt_generator_state"], "generator optimiser"),
                  (trainer.opt_score, obj["opt_score_state"], "score optimiser")]
    load_states([load for load in loads if load[0] is not None], path)

"""DiKL training recipes: JSON files that fully describe a training run.

A recipe is ``{"system": name, "generator": model config, "score_model": model config,
"dikl": DiKL settings, "notes": text}``; model configs are those of
:func:`openmm_dikl.nn.build_model`, the settings those of
:meth:`~openmm_dikl.dikl.config.DiKLConfig.from_dict` (flat, as in the bundled recipes,
or nested by section).  Bundled recipes live in ``systems/configs/``.
:func:`train_from_recipe` is what ``openmm-dikl train`` runs: it trains, writes the
sampler and a ``result.json`` (command, seed, wall time, final metrics) beside it.
"""
import json
import os
import resource
import sys
import time

from ..analysis.evaluation import evaluation_metrics
from ..io import atomic_write
from ..nn import build_model
from ..systems import get as get_system
from ..systems import shipped_path
from . import distributed
from .config import DiKLConfig
from .sampler import load_sampler
from .trainer import DiKLTrainer

__all__ = ["load_recipe", "train_from_recipe", "evaluate_generator", "RECIPE_KEYS"]

#: Keys every recipe has (``"notes"`` is optional).
RECIPE_KEYS = {"system", "generator", "score_model", "dikl"}


def load_recipe(system_name, path=None):
    """The recipe for ``system_name``: from ``path`` or the bundled ``configs/<name>.json``.

    Raises
    ------
    FileNotFoundError
        If no recipe file exists.
    ValueError
        If the file is not valid JSON, misses keys, is for another system or holds
        invalid DiKL settings.
    """
    if path is None:
        try:
            path = shipped_path(os.path.join("configs", f"{system_name}.json"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no bundled DiKL recipe for system {system_name!r}; "
                                    "pass --config FILE") from None
    try:
        with open(path) as handle:
            recipe = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"recipe {path} is not valid JSON: {err}") from err
    if not isinstance(recipe, dict) or not RECIPE_KEYS <= set(recipe):
        raise ValueError(f"recipe {path} must be a JSON object with keys "
                         f"{sorted(RECIPE_KEYS)}")
    if recipe["system"] != system_name:
        raise ValueError(f"recipe {path} is for system {recipe['system']!r}, not {system_name!r}")
    try:
        DiKLConfig.from_dict(recipe["dikl"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"recipe {path}: {err}") from err
    return recipe


def evaluate_generator(target, sampler, n_samples=10000, seed=0):
    """Metrics of a trained sampler against what is known of the target (dict of floats).

    ``n_samples`` samples drawn with ``seed`` are scored by
    :func:`openmm_dikl.analysis.evaluation.evaluation_metrics` (without noise floors),
    which applies the evaluation protocol registered on the system (reference-set
    distances, mode or basin weights, backbone dihedrals).
    """
    return evaluation_metrics(target, sampler.sample(n_samples, seed=seed), floors=False)


def _cpu_seconds():
    """CPU time (user + system, s) of this process and its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _previous_cpu_seconds(out_dir):
    """CPU time recorded by an earlier (finished) invocation in ``out_dir``, else 0."""
    try:
        with open(os.path.join(out_dir, "result.json")) as handle:
            return float(json.load(handle).get("cpu_time_s", 0.0))
    except (OSError, ValueError):
        return 0.0


def train_from_recipe(system_name, recipe, out_dir, resume=False, progress=True,
                      n_iterations=None, init_from=None, command=None):
    """Train a DiKL generator as ``recipe`` says and write ``out_dir/result.json``.

    Parameters
    ----------
    system_name : str
        Bundled system (``recipe["system"]``).
    recipe : dict
        Recipe (see :func:`load_recipe`).
    out_dir : str or os.PathLike
        Output folder: ``recipe.json``, ``checkpoint.pt``, ``log.csv``, ``sampler.pt``,
        ``result.json`` (and ``best_sampler.pt``, ``eval.csv`` with
        ``run.select_checkpoint``).
    resume : bool
        Continue from ``out_dir/checkpoint.pt``.
    progress : bool
        Show a tqdm progress bar.
    n_iterations : int, optional
        Total iterations to reach (default: the recipe's).
    init_from : str or os.PathLike, optional
        Trainer checkpoint of another run whose networks a new run starts from
        (:meth:`~openmm_dikl.dikl.DiKLTrainer.load_weights`); ignored when resuming.
    command : list of str, optional
        Recorded as the command that trained; default ``openmm-dikl`` followed by this
        process's arguments.

    Returns
    -------
    dict
        The result record (command, seed, wall time and CPU time in s, iterations, final
        metrics, ``init_from`` if the run started from another run's networks — also after
        a resume; with ``run.select_checkpoint`` also ``selection``: the rule, score and
        iteration of ``best_sampler.pt`` and its final metrics).  CPU time (user + system
        of this process and its bridge workers) is the cost measure that does not depend
        on how busy a shared machine was.

    Raises
    ------
    FileNotFoundError, CheckpointError
        A missing or unfitting checkpoint to resume or to start from; nothing is written.
    """
    target = get_system(system_name)
    config = DiKLConfig.from_dict(recipe["dikl"])
    trainer = DiKLTrainer(target, build_model(recipe["generator"]),
                          build_model(recipe["score_model"]), config)
    try:
        # a checkpoint that does not fit fails before anything is written
        if resume:
            trainer.load_checkpoint(os.path.join(out_dir, "checkpoint.pt"))
        elif init_from is not None:
            trainer.load_weights(init_from)
        os.makedirs(out_dir, exist_ok=True)
        cpu_before = _cpu_seconds()
        previous_cpu = _previous_cpu_seconds(out_dir) if resume else 0.0
        _write_json(os.path.join(out_dir, "recipe.json"), recipe)
        trainer.train(n_iterations=n_iterations, out_dir=out_dir, resume=resume, progress=progress)
    finally:
        trainer.close()
    sampler = load_sampler(os.path.join(out_dir, "sampler.pt"), target=target)
    final_metrics = evaluate_generator(target, sampler)
    # CPU time of training and of this final evaluation (the whole `train` command)
    result = {"system": system_name, "command": " ".join(_command(command)),
              "processes": distributed.world_size(),
              "seed": config.seed, "iterations": trainer.iteration,
              "wall_time_s": round(trainer.wall_time, 1),
              "cpu_time_s": round(previous_cpu + _cpu_seconds() - cpu_before, 2),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "metrics": final_metrics}
    if trainer.init_from is not None:  # the run's starting networks (kept by its checkpoints)
        result["init_from"] = trainer.init_from
    best_path = os.path.join(out_dir, "best_sampler.pt")
    if trainer.selection_best is not None and os.path.exists(best_path):
        best = load_sampler(best_path, target=target)
        result["selection"] = dict(trainer.selection_best,
                                   metrics=evaluate_generator(target, best))
    _write_json(os.path.join(out_dir, "result.json"), result)
    return result


def _command(command):
    """The command line to record: ``command``, or ``openmm-dikl`` and this process's
    arguments, with ``--nproc N`` added under torchrun."""
    command = list(command) if command is not None else ["openmm-dikl"] + sys.argv[1:]
    if distributed.world_size() > 1 and "--nproc" not in command:
        command += ["--nproc", str(distributed.world_size())]
    return command


def _write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    def write(tmp):
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=1)
    atomic_write(path, write)

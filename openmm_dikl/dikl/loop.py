"""The loop of :meth:`DiKLTrainer.train <openmm_dikl.dikl.DiKLTrainer.train>` and its
output folder.

:func:`run_iterations` calls ``trainer.step()`` until the total is reached, appends
every row to ``log.csv``, evaluates every ``run.eval_every`` iterations (``eval.csv``),
writes ``checkpoint.pt`` every ``run.checkpoint_every`` iterations and at the end, and
then the generator (its weight average, if kept) to ``sampler.pt``.  With
``run.select_checkpoint`` every evaluation also scores the generator
(:mod:`openmm_dikl.dikl.selection`; ``selection_score`` in ``eval.csv`` and in the
rows) and writes the best one so far to ``best_sampler.pt``, whose metadata hold its
``selection`` record (rule, score, iteration).  It uses only the trainer's public
methods and attributes.  Distributed: every process runs the loop (checkpointing is
collective); only rank 0 writes files and evaluates.
"""
import os

from tqdm.auto import tqdm

from .sampler import save_sampler
from .selection import update_selection
from .training_log import LOG_COLUMNS, CSVLog

__all__ = ["RunFolder", "run_iterations"]


class RunFolder:
    """The files of a training run in one folder (created if missing).

    Attributes
    ----------
    checkpoint, sampler, best_sampler : str
        Paths of ``checkpoint.pt`` (full training state), ``sampler.pt`` (generator) and
        ``best_sampler.pt`` (the generator selected by ``run.select_checkpoint``).
    log, eval : CSVLog
        ``log.csv`` (:data:`LOG_COLUMNS`) and ``eval.csv`` (``iteration`` and the
        evaluation metrics).
    """

    def __init__(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        self.checkpoint = os.path.join(out_dir, "checkpoint.pt")
        self.sampler = os.path.join(out_dir, "sampler.pt")
        self.best_sampler = os.path.join(out_dir, "best_sampler.pt")
        self.log = CSVLog(os.path.join(out_dir, "log.csv"), LOG_COLUMNS)
        self.eval = CSVLog(os.path.join(out_dir, "eval.csv"))

    def restart_logs(self, last_iteration):
        """Drop the log rows after ``last_iteration`` (every row and file when 0; a fresh
        run also removes the ``best_sampler.pt`` of an earlier run in the folder)."""
        self.log.truncate(last_iteration)
        self.eval.truncate(last_iteration)
        if last_iteration <= 0 and os.path.exists(self.best_sampler):
            os.remove(self.best_sampler)


def run_iterations(trainer, total, folder=None, progress=True):
    """Train until ``trainer.iteration == total``, writing the run's files.

    Parameters
    ----------
    trainer : DiKLTrainer
    total : int
        Iteration count to reach.
    folder : RunFolder, optional
        Where to write; None: nothing is written.
    progress : bool
        Show a tqdm progress bar (rank 0 only).

    Returns
    -------
    list of dict
        The log rows of the iterations run (with the evaluation metrics where evaluated).
    """
    main = trainer.rank == 0
    rows = []
    bar = tqdm(total=total, initial=min(trainer.iteration, total),
               disable=not (progress and main), desc=f"DiKL {trainer.target.name}")
    try:
        while trainer.iteration < total:
            row = trainer.step()
            _record(trainer, row, folder, main)
            rows.append(row)
            bar.update(1)
            bar.set_postfix(gap=f"{row['score_gap']:.3g}", acc=f"{row['acceptance']:.2f}")
    finally:
        bar.close()
    if folder is not None:
        trainer.save_checkpoint(folder.checkpoint)
        if main and getattr(trainer.generator, "config", None) is not None:
            _save_sampler(trainer, folder.sampler)
    return rows


def _save_sampler(trainer, path, **metadata):
    save_sampler(path, trainer.target.name, trainer.sampling_generator,
                 {"iteration": trainer.iteration, "config": trainer.config.to_dict(),
                  **metadata}, centre=trainer.centre)


def _evaluate(trainer, folder):
    """Evaluation metrics and, with ``run.select_checkpoint``, the selection score of the
    current sampling generator (writing ``best_sampler.pt`` when it is the best)."""
    samples = trainer.evaluation_samples()
    metrics = trainer.evaluate(samples)
    if trainer.config.run.select_checkpoint is not None:
        score, improved = update_selection(trainer, samples)
        best = trainer.selection_best
        metrics.update(selection_score=score, selection_best_score=best["score"],
                       selection_best_iteration=best["iteration"])
        if improved and folder is not None and getattr(trainer.generator, "config", None):
            _save_sampler(trainer, folder.best_sampler, selection=dict(best))
    return metrics


def _record(trainer, row, folder, main):
    """Log ``row``, evaluate and checkpoint when their periods come round."""
    run, iteration = trainer.config.run, trainer.iteration
    if folder is not None and main:
        folder.log.append(row)
    evaluating = trainer.eval_fn is not None or run.select_checkpoint is not None
    if run.eval_every and iteration % run.eval_every == 0 and evaluating and main:
        metrics = _evaluate(trainer, folder)
        if folder is not None:
            folder.eval.append({"iteration": iteration, **metrics})
        row.update(metrics)
    if folder is not None and run.checkpoint_every and iteration % run.checkpoint_every == 0:
        trainer.save_checkpoint(folder.checkpoint)

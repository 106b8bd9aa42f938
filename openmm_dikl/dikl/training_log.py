"""The CSV files of a DiKL run: ``log.csv`` (one row per iteration) and ``eval.csv``.

Rows are appended (and flushed) as the run goes; a resumed run first drops the rows
after its checkpoint's iteration, which an interrupted run had already written, so that
every iteration appears once.

``log.csv`` columns (:data:`LOG_COLUMNS`): ``iteration``; ``dsm_loss`` (mean DSM loss of
the iteration, dimensionless); ``score_gap`` (mean w(t)·|s_model − s_target|², in units
of the diffused coordinates⁻²); ``acceptance`` (posterior MALA acceptance);
``step_size_min``/``step_size_max`` (adapted MALA step sizes over the levels, in units
of the diffused coordinates²); ``ess_fraction`` (importance-sampling ESS / K);
``energy_evaluations`` (target evaluations of the iteration); ``n_dropped`` (samples
with non-finite scores); ``skipped_steps`` (optimiser steps skipped so far because of
non-finite gradients); ``wall_time_s`` (training time so far, s).
"""
import csv
import os

__all__ = ["LOG_COLUMNS", "CSVLog"]

#: Columns of ``log.csv``, in order.
LOG_COLUMNS = ("iteration", "dsm_loss", "score_gap", "acceptance", "step_size_min",
               "step_size_max", "ess_fraction", "energy_evaluations", "n_dropped",
               "skipped_steps", "wall_time_s")


class CSVLog:
    """One CSV file with an ``iteration`` column, appended to row by row.

    Parameters
    ----------
    path : str or os.PathLike
    columns : sequence of str, optional
        Header; default: ``iteration`` followed by the sorted keys of the first row
        appended (a new file) or the existing header.
    """

    def __init__(self, path, columns=None):
        self.path = os.fspath(path)
        self.columns = None if columns is None else list(columns)

    def truncate(self, last_iteration):
        """Keep the header and the rows with ``iteration <= last_iteration``; with
        ``last_iteration <= 0`` remove the file."""
        if not os.path.exists(self.path):
            return
        if last_iteration <= 0:
            os.remove(self.path)
            return
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames
            # a row cut by a kill misses fields (DictReader fills them with None)
            kept = [row for row in reader if None not in row.values()
                    and int(float(row["iteration"])) <= last_iteration]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)

    def append(self, row):
        """Append ``row`` (dict; keys outside the columns are ignored), writing the header
        first if the file is new."""
        new = not os.path.exists(self.path)
        if self.columns is None:
            self.columns = (["iteration"] + sorted(k for k in row if k != "iteration")
                            if new else _header(self.path))
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def _header(path):
    with open(path, newline="") as handle:
        return next(csv.reader(handle), [])

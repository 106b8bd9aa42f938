"""What a sampling run writes: DCD frames, a topology PDB and a CSV log, flushed per frame.

The CSV has one row per frame: ``step``, ``chain``, ``method``, ``force_evaluations``
(all chains so far), ``potential_energy_kJ_per_mol``, ``reduced_energy_kT`` and one numeric column
per statistic of the sampler (``init_acceptance_0`` for level 0 of DiGS, ``acceptance``
for MALA / HMC, ``exchange_acceptance_0`` for the first replica pair of parallel
tempering; ``nan`` before a statistic is counted).
"""
import csv
import os
import shutil

import numpy as np
from mdtraj.formats import DCDTrajectoryFile
from openmm import app, unit

from ..io import quiet_native_output
from .base import SamplingError

__all__ = ["TrajectoryWriter", "output_paths", "merge_chains", "check_writable"]

_FIXED_COLUMNS = ["step", "chain", "method", "force_evaluations", "potential_energy_kJ_per_mol",
                  "reduced_energy_kT"]


def output_paths(out):
    """``{"trajectory", "topology", "log"}``: ``out`` and ``<stem>.pdb``, ``<stem>.csv``."""
    stem = os.path.splitext(out)[0]
    return {"trajectory": out, "topology": stem + ".pdb", "log": stem + ".csv"}


def check_writable(out):
    """Refuse an output path whose folder is missing or read-only (ValueError)."""
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"output folder {folder} is not writable")


def _statistic_columns(stats):
    """(name, value) pairs, one per number: arrays of size k give name_0 … name_{k-1}."""
    for key, value in stats.items():
        array = np.ravel(np.asarray(value, dtype=np.float64))
        if np.ndim(value) == 0:
            yield key, float(array[0])
        else:
            for i, v in enumerate(array):
                yield f"{key}_{i}", float(v)


class TrajectoryWriter:
    """DCD frames + PDB topology + CSV log of one run, flushed after every frame.

    Parameters
    ----------
    target : TargetSystem
        The sampled system (its topology and kT).
    out : str
        Trajectory path (``.dcd``); the PDB and CSV go beside it (:func:`output_paths`).
    interval : int
        Steps between frames (DCD header metadata).
    method : str
        Method name, used in error messages.
    """

    def __init__(self, target, out, interval, method):
        self.paths = output_paths(out)
        self.target, self.method, self._frames = target, method, 0
        self.kt = target.kT.value_in_unit(unit.kilojoule_per_mole)
        self._columns = None
        self._dcd_handle = open(out, "wb")
        self._dcd = app.DCDFile(self._dcd_handle, target.topology, 0.001 * unit.picosecond,
                                interval=interval)
        self._log_handle = open(self.paths["log"], "w", newline="")
        self._log = csv.writer(self._log_handle)

    @property
    def frames(self):
        """Frames written so far (int)."""
        return self._frames

    def write_topology(self, positions):
        """Write the PDB (topology + ``positions``, an OpenMM Quantity)."""
        with open(self.paths["topology"], "w") as handle:
            app.PDBFile.writeFile(self.target.topology, positions, handle)

    def check_finite(self, step, reduced_energies):
        """SamplingError naming ``step`` if any reduced energy (kT) is NaN or infinite."""
        values = np.atleast_1d(np.asarray(reduced_energies, dtype=np.float64))
        bad = values[~np.isfinite(values)]
        if bad.size:
            raise SamplingError(
                f"{self.method} on {self.target.name}: energy became {bad[0]} at step "
                f"{step}; the {self.frames} frames before it are in {self.paths['trajectory']}")

    def write(self, step, evaluations, positions_nm, reduced_energy, stats, chain=0):
        """One frame (positions (n, d) nm) and its CSV row; SamplingError on a blow-up."""
        self.check_finite(step, reduced_energy)
        values = list(_statistic_columns(stats))
        if self._columns is None:
            self._columns = [name for name, _ in values]
            self._log.writerow(_FIXED_COLUMNS + self._columns)
        xyz = np.asarray(positions_nm, dtype=np.float64)
        if xyz.shape[-1] == 2:
            xyz = np.concatenate([xyz, np.zeros(xyz.shape[:-1] + (1,))], axis=-1)
        self._dcd.writeModel(xyz * unit.nanometer)
        self._dcd_handle.flush()
        self._frames += 1
        self._log.writerow([step, chain, self.method, int(evaluations),
                            f"{reduced_energy * self.kt:.6f}",
                            f"{reduced_energy:.6f}"] + [f"{v:.6g}" for _, v in values])
        self._log_handle.flush()

    def close(self):
        """Close the DCD and CSV files (every frame written is already on disk)."""
        self._dcd_handle.close()
        self._log_handle.close()


def merge_chains(target, chain_outs, out):
    """Interleave the chains' DCD frames and CSV rows into ``out`` (and its PDB, CSV).

    Frame ``i * n_chains + k`` of the result is chain k at report i; the CSV's
    ``force_evaluations`` counts all chains.

    Returns
    -------
    dict
        The paths written (:func:`output_paths`).
    """
    paths = output_paths(out)
    n_chains = len(chain_outs)
    frames, rows = [], []
    for path in chain_outs:
        with quiet_native_output(), DCDTrajectoryFile(path) as handle:
            frames.append(handle.read()[0])  # (n_frames, n_atoms, 3) float32, Å
        with open(os.path.splitext(path)[0] + ".csv", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows.append(list(reader))
    n_reports = len(rows[0])
    if any(len(r) != n_reports or len(f) != n_reports for r, f in zip(rows, frames)):
        raise RuntimeError("the chains wrote different numbers of frames")
    shutil.copyfile(os.path.splitext(chain_outs[0])[0] + ".pdb", paths["topology"])
    interval = max(1, int(rows[0][0][0]))  # steps between reports (first report's step)
    column = {name: i for i, name in enumerate(header)}
    with open(out, "wb") as dcd_handle, open(paths["log"], "w", newline="") as log_handle:
        dcd = app.DCDFile(dcd_handle, target.topology, 0.001 * unit.picosecond,
                          interval=interval)
        log = csv.writer(log_handle)
        log.writerow(header)
        for i in range(n_reports):
            total = sum(int(rows[k][i][column["force_evaluations"]]) for k in range(n_chains))
            for k in range(n_chains):
                # float32 Å -> nm and back by DCDFile is exact
                dcd.writeModel(frames[k][i].astype(np.float64) / 10.0 * unit.nanometer)
                row = list(rows[k][i])
                row[column["chain"]] = str(k)
                row[column["force_evaluations"]] = str(total)
                log.writerow(row)
    return paths

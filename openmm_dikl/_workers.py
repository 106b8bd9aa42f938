"""Private evaluation backends of :class:`openmm_dikl.bridge.OpenMMBridge`.

Two backends share one interface (``compute``, ``restart``, ``close``, ``worker_pids``,
``closed``):

* :class:`_SerialBackend` holds one OpenMM Context in the calling process;
* :class:`_ProcessPoolBackend` holds ``n_workers`` processes started with the
  multiprocessing *spawn* method, each with its own Context built from the
  XmlSerializer-serialized System.  No Context ever exists in the parent, and no process
  holding a Context is ever forked (openmm/openmm#2602).

Both take positions as a C-contiguous float64 numpy array of shape (batch, n_particles, 3)
in nm and return potential energies in kJ/mol, shape (batch,), and forces in kJ/mol/nm,
shape (batch, n_particles, 3).  Unit conversion, padding and validation live in
:mod:`openmm_dikl.bridge`.
"""
import copy
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import traceback
import weakref

import numpy as np
import openmm

__all__ = ["_SerialBackend", "_ProcessPoolBackend", "evaluate_batch", "make_context"]

logger = logging.getLogger(__name__)

#: Seconds a worker gets to exit after the shutdown message before it is terminated.
_SHUTDOWN_GRACE_S = 5.0

# The public Context.setPositions / getState / State.getForces wrappers cost more than
# OpenMM's Reference platform itself for small molecules (unit handling, a Quantity per
# call, a fresh numpy array per state).  The SWIG-level functions they wrap take plain
# numpy arrays and can write forces into a preallocated buffer; use them when present and
# fall back to the public API otherwise.
try:
    from openmm import _openmm

    _SET_POSITIONS = _openmm.Context_setPositions
    _GET_STATE = _openmm.Context_getState
    _GET_ENERGY = _openmm.State_getPotentialEnergy
    _FAST_PATH = hasattr(openmm.State, "_getVectorAsNumpy")
except (ImportError, AttributeError):  # pragma: no cover - depends on the OpenMM build
    _FAST_PATH = False

_ENERGY_AND_FORCES = openmm.State.Energy + openmm.State.Forces


def make_context(system, platform_name, properties):
    """Build an OpenMM Context for energy/force evaluation only.

    Parameters
    ----------
    system : openmm.System
        The System; positions are set per configuration, the box is the System's default.
    platform_name : str
        OpenMM platform name, e.g. "Reference" or "CPU".
    properties : dict of str to str or None
        Platform properties, e.g. ``{"Threads": "1"}`` for the CPU platform.

    Returns
    -------
    openmm.Context
        A Context with a never-stepped VerletIntegrator (it keeps a reference to it).
    """
    integrator = openmm.VerletIntegrator(0.001)  # ps; never stepped
    platform = openmm.Platform.getPlatformByName(platform_name)
    if properties:
        return openmm.Context(system, integrator, platform, dict(properties))
    return openmm.Context(system, integrator, platform)


def evaluate_batch(context, positions, energies, forces):
    """Evaluate energies and forces of a batch of configurations in one Context.

    Parameters
    ----------
    context : openmm.Context
        Context of the System with ``n_particles`` particles.
    positions : numpy.ndarray, shape=(batch, n_particles, 3), dtype=float64
        C-contiguous positions in nm.
    energies : numpy.ndarray, shape=(batch,), dtype=float64
        Output: potential energies in kJ/mol (written in place).
    forces : numpy.ndarray, shape=(batch, n_particles, 3), dtype=float64
        Output, C-contiguous: forces in kJ/mol/nm (written in place).
    """
    if _FAST_PATH:
        for b in range(positions.shape[0]):
            _SET_POSITIONS(context, positions[b])
            state = _GET_STATE(context, _ENERGY_AND_FORCES, False, -1)
            energies[b] = _GET_ENERGY(state)
            state._getVectorAsNumpy(openmm.State.Forces, forces[b])
        return
    for b in range(positions.shape[0]):  # pragma: no cover - public-API fallback
        context.setPositions(positions[b])
        state = context.getState(energy=True, forces=True)
        energies[b] = state.getPotentialEnergy()._value
        forces[b] = state.getForces(asNumpy=True)._value


class _SerialBackend:
    """One Context in the calling process.

    Parameters
    ----------
    system : openmm.System
        Copied at construction: later changes to the caller's System are not seen.
    platform_name : str
        OpenMM platform name.
    properties : dict of str to str or None
        Platform properties.
    """

    def __init__(self, system, platform_name, properties):
        self._system = copy.deepcopy(system)
        self._platform_name = platform_name
        self._properties = properties
        self._lock = threading.Lock()
        self._context = None
        self.start()

    @property
    def closed(self):
        """True after :meth:`close` (until :meth:`restart`)."""
        return self._context is None

    @property
    def worker_pids(self):
        """Process ids of worker processes: always empty (evaluation is in-process)."""
        return []

    def start(self):
        """Create the Context."""
        self._context = make_context(self._system, self._platform_name, self._properties)

    def restart(self):
        """Drop the Context and build a fresh one."""
        with self._lock:
            self._context = None
            self.start()

    def close(self):
        """Release the Context (idempotent)."""
        with self._lock:
            self._context = None

    def compute(self, positions):
        """Energies (kJ/mol, (batch,)) and forces (kJ/mol/nm, (batch, n, 3)) of positions (nm)."""
        with self._lock:
            if self._context is None:
                raise RuntimeError("the OpenMMBridge is closed; call restart() to reopen it")
            energies = np.empty(positions.shape[0])
            forces = np.empty(positions.shape)
            evaluate_batch(self._context, positions, energies, forces)
            return energies, forces


# ---------------------------------------------------------------------- process pool
class _WorkerDied(Exception):
    """A worker process ended while the parent was talking to it."""


class _Worker:
    """Parent-side handle of one worker: the process and the parent's pipe end."""

    __slots__ = ("index", "process", "conn")

    def __init__(self, index, process, conn):
        self.index = index
        self.process = process
        self.conn = conn

    def describe_death(self):
        """Text saying which worker died and how (exit code or signal)."""
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        if code is None:
            how = "stopped responding (its pipe closed)"
        elif code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"bridge worker {self.index} (pid {self.process.pid}) {how}"


def _worker_main(conn, system_xml, platform_name, properties):
    """Entry point of a spawned worker: build a Context, then serve batches until told to stop.

    Protocol (all messages pickled through ``conn``): the worker first sends
    ``("ready", pid)`` or ``("error", traceback_text)``; then for every received positions
    array (batch, n, 3) in nm it replies ``("ok", energies_kjmol, forces_kjmol_nm)`` or
    ``("error", "ExceptionType: message" + traceback_text)``.  ``None`` or a closed pipe
    ends the worker.
    """
    # Ctrl-C in a terminal reaches the whole process group: let the parent handle it
    # and shut the workers down, instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        system = openmm.XmlSerializer.deserialize(system_xml)
        context = make_context(system, platform_name, properties)
    except Exception:  # noqa: BLE001 - reported to the parent verbatim
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            positions = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if positions is None:  # orderly shutdown: nothing to clean up, skip interpreter teardown
            conn.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            energies = np.empty(positions.shape[0])
            forces = np.empty(positions.shape)
            evaluate_batch(context, np.ascontiguousarray(positions), energies, forces)
            reply = ("ok", energies, forces)
        except Exception as err:  # noqa: BLE001 - reported to the parent verbatim
            reply = ("error", f"{type(err).__name__}: {err}\nworker traceback:\n"
                              f"{traceback.format_exc()}")
        try:
            conn.send(reply)
        except OSError:
            return


def _shutdown_workers(workers):
    """Stop worker processes: polite message, then terminate, then kill.  Idempotent.

    A module-level function (not a method) so that ``weakref.finalize`` can call it at
    garbage collection and at interpreter exit without keeping the backend alive.
    """
    for worker in workers:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
    for worker in workers:
        process = worker.process
        process.join(timeout=_SHUTDOWN_GRACE_S)
        if process.is_alive():
            process.terminate()
            process.join(timeout=1.0)
        if process.is_alive():
            process.kill()
            process.join(timeout=1.0)
        try:
            worker.conn.close()
        except OSError:
            pass
    workers.clear()


class _ProcessPoolBackend:
    """``n_workers`` spawned processes, one OpenMM Context each.

    Parameters
    ----------
    system : openmm.System
        Serialized with :class:`openmm.XmlSerializer` at construction (a snapshot).
    platform_name : str
        OpenMM platform name used in every worker.
    properties : dict of str to str or None
        Platform properties used in every worker (e.g. ``{"Threads": "1"}``).
    n_workers : int
        Number of worker processes (>= 2 in normal use).

    Notes
    -----
    A batch is split into ``min(batch, n_workers)`` contiguous chunks, chunk k goes to
    worker k, and the results are written back in order, so they equal a single-Context
    evaluation exactly on deterministic platforms.  The parent waits on each worker's pipe
    *and* its process sentinel, so a worker that dies is reported at once as a
    RuntimeError; the pool is then shut down and the next :meth:`compute` starts a fresh
    one.  The workers are daemonic and a ``weakref.finalize`` stops them at garbage
    collection and at interpreter exit.
    """

    def __init__(self, system, platform_name, properties, n_workers):
        self._system_xml = openmm.XmlSerializer.serialize(system)
        self._platform_name = platform_name
        self._properties = dict(properties) if properties else None
        self.n_workers = int(n_workers)
        self._lock = threading.RLock()
        self._workers = []
        self._finalizer = None
        self._closed = True
        self._broken = False
        self.start()

    @property
    def closed(self):
        """True after :meth:`close` (until :meth:`restart`)."""
        return self._closed

    @property
    def worker_pids(self):
        """Process ids of the running workers (list of int, in chunk order)."""
        return [worker.process.pid for worker in self._workers]

    def start(self):
        """Spawn the workers and wait until every one has built its Context.

        Raises
        ------
        RuntimeError
            If a worker cannot build its Context or dies while starting.
        """
        with self._lock:
            mp_context = multiprocessing.get_context("spawn")
            workers = []
            self._finalizer = weakref.finalize(self, _shutdown_workers, workers)
            try:
                for index in range(self.n_workers):
                    parent_conn, child_conn = mp_context.Pipe(duplex=True)
                    process = mp_context.Process(
                        target=_worker_main, name=f"openmm_dikl-bridge-{index}", daemon=True,
                        args=(child_conn, self._system_xml, self._platform_name,
                              self._properties))
                    process.start()
                    child_conn.close()
                    workers.append(_Worker(index, process, parent_conn))
                for worker in workers:
                    status, payload = self._receive(worker, "while starting")
                    if status != "ready":
                        raise RuntimeError(f"bridge worker {worker.index} could not build its "
                                           f"OpenMM Context:\n{payload}")
            except _WorkerDied as err:
                self._finalizer()
                raise RuntimeError(
                    f"{err}.  If this happened at start-up in a script, guard the script's "
                    "entry point with `if __name__ == '__main__':` (worker processes are "
                    "spawned and re-import the main module).") from None
            except BaseException:
                self._finalizer()
                raise
            self._workers = workers
            self._closed = False
            self._broken = False
            logger.debug("started %d bridge workers (pids %s) on platform %s", self.n_workers,
                         self.worker_pids, self._platform_name)

    def _stop(self):
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown_workers once, then is dead
        self._workers = []

    def restart(self):
        """Stop all workers (if any) and spawn a fresh pool."""
        with self._lock:
            self._stop()
            self._closed = True
            self.start()

    def close(self):
        """Stop all workers (idempotent)."""
        with self._lock:
            self._stop()
            self._closed = True

    @staticmethod
    def _receive(worker, what):
        """Next message from ``worker``; raises _WorkerDied if its process ended instead."""
        ready = multiprocessing.connection.wait([worker.conn, worker.process.sentinel])
        if worker.conn in ready:
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                pass
        raise _WorkerDied(f"{worker.describe_death()} {what}")

    def compute(self, positions):
        """Energies (kJ/mol, (batch,)) and forces (kJ/mol/nm, (batch, n, 3)) of positions (nm).

        Raises
        ------
        RuntimeError
            If the pool is closed, a worker died (the pool is then shut down and the next
            call restarts it), or a worker raised while evaluating (message included).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the OpenMMBridge is closed; call restart() to reopen it")
            if self._broken:
                logger.warning("restarting the OpenMMBridge worker pool after a worker failure")
                self.restart()
            n_samples = positions.shape[0]
            n_active = min(n_samples, self.n_workers)
            bounds = [n_samples * k // n_active for k in range(n_active + 1)]
            energies = np.empty(n_samples)
            forces = np.empty(positions.shape)
            failures = []
            try:
                for k in range(n_active):
                    worker = self._workers[k]
                    try:
                        worker.conn.send(positions[bounds[k]:bounds[k + 1]])
                    except (OSError, ValueError):
                        raise _WorkerDied(f"{worker.describe_death()} before receiving its "
                                          "batch") from None
                for k in range(n_active):
                    worker = self._workers[k]
                    status, *payload = self._receive(worker, "while evaluating its batch")
                    if status == "ok":
                        energies[bounds[k]:bounds[k + 1]] = payload[0]
                        forces[bounds[k]:bounds[k + 1]] = payload[1]
                    else:
                        failures.append(f"bridge worker {k} raised {payload[0]}")
            except _WorkerDied as err:
                self._broken = True
                self._stop()
                raise RuntimeError(f"{err}; the worker pool was shut down and will be "
                                   "restarted on the next call") from None
            except BaseException:
                # e.g. KeyboardInterrupt half way: replies may be left in the pipes, so the
                # protocol is out of step; start over on the next call.
                self._broken = True
                self._stop()
                raise
            if failures:
                raise RuntimeError("\n".join(failures))
            return energies, forces

"""Private evaluation backends of :class:`openmm_dikl.bridge.OpenMMBridge`.

Two backends share one interface (``compute``, ``restart``, ``close``, ``worker_pids``,
``closed``):

* :class:`_SerialBackend` holds one OpenMM Context in the calling process;
* :class:`_ProcessPoolBackend` holds ``n_workers`` processes started with the
  multiprocessing *spawn* method, each with its own Context built from the
  XmlSerializer-serialized System.  No Context ever exists in the parent, and no process
  holding a Context is ever forked (openmm/openmm#2602).  Positions, energies and forces
  travel through one shared-memory block per pool; the pipes carry only row bounds.

Both take C-contiguous float64 positions (batch, n_particles, 3) in nm and return energies
(batch,) in kJ/mol and forces (batch, n_particles, 3) in kJ/mol/nm; unit conversion,
padding and validation live in :mod:`openmm_dikl.bridge`.
"""
import copy
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import sys
import threading
import traceback
import weakref
from multiprocessing import shared_memory

import numpy as np
import openmm

__all__ = ["_SerialBackend", "_ProcessPoolBackend", "evaluate_batch", "make_context"]

logger = logging.getLogger(__name__)

#: Seconds a worker gets to exit after the shutdown message before it is terminated.
_SHUTDOWN_GRACE_S = 5.0
#: Largest shared-memory block of a pool (bytes); larger batches are evaluated in rounds.
_MAX_SHARED_BYTES = 256 * 2**20
#: Chunks per worker a batch is cut into (workers pulling chunks even out uneven load) ...
_CHUNKS_PER_WORKER = 8
#: ... but none smaller than this many configurations.
_MIN_CHUNK = 16

# The public setPositions / getState / getForces wrappers cost more than the Reference
# platform itself for small molecules (units, a Quantity and a new array per call); the
# SWIG functions they wrap take numpy arrays and write forces into a given buffer.
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


# ---------------------------------------------------------------------- shared memory
class _SharedBlock:
    """A float64 shared-memory block: views ``positions`` (nm) and ``forces`` (kJ/mol/nm),
    shape (capacity, n_particles, 3), and ``energies`` (kJ/mol), shape (capacity,).

    The parent creates it (``name=None``; named ``omdikl_<pid>_<random>``, in /dev/shm on
    Linux) and :meth:`release` unlinks it, after the workers are gone (so none can attach
    and register it with multiprocessing's resource tracker after the unlink; if the
    parent is killed, the tracker unlinks it).  Workers attach by ``name``, only close.
    """

    def __init__(self, n_particles, capacity, name=None):
        rows = capacity * n_particles * 3
        owner = name is None
        if owner:
            name = f"omdikl_{os.getpid()}_{secrets.token_hex(4)}"
        self._shm = shared_memory.SharedMemory(name=name, create=owner,
                                               size=8 * (2 * rows + capacity) if owner else 0)
        self.name, self.capacity, self._owner = self._shm.name, int(capacity), owner
        buf = self._shm.buf
        self.positions = np.ndarray((capacity, n_particles, 3), np.float64, buf, 0)
        self.forces = np.ndarray((capacity, n_particles, 3), np.float64, buf, 8 * rows)
        self.energies = np.ndarray((capacity,), np.float64, buf, 16 * rows)

    def release(self):
        """Drop the views and close the block; the creator also unlinks it (idempotent)."""
        if self._shm is None:
            return
        self.positions = self.forces = self.energies = None
        shm, self._shm = self._shm, None
        try:
            shm.close()
        except BufferError:  # a view is still referenced: the mapping goes with it
            pass
        if self._owner:
            try:
                shm.unlink()
            except FileNotFoundError:  # already removed (e.g. by the resource tracker)
                pass


def _shared_memory_limit(n_particles):
    """Most configurations (>= 1) a block may hold: :data:`_MAX_SHARED_BYTES`, and half the
    free space of /dev/shm (tmpfs raises SIGBUS on writes beyond its size)."""
    limit = _MAX_SHARED_BYTES
    try:
        stat = os.statvfs("/dev/shm")
        limit = min(limit, stat.f_bavail * stat.f_frsize // 2)
    except (OSError, AttributeError):
        pass
    return max(1, limit // (8 * (6 * n_particles + 1)))


def _chunks(n_samples, n_workers):
    """Contiguous chunks (start, stop): about :data:`_CHUNKS_PER_WORKER` per worker, none
    under :data:`_MIN_CHUNK` rows unless the batch is small (then one per worker)."""
    size = max(-(-n_samples // (n_workers * _CHUNKS_PER_WORKER)),
               min(_MIN_CHUNK, -(-n_samples // n_workers)))
    return [(start, min(start + size, n_samples)) for start in range(0, n_samples, size)]


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
            names = {int(sig): sig.name for sig in signal.Signals}
            how = f"was killed by signal {names.get(-code, -code)}"
        else:
            how = f"exited with code {code}"
        return f"bridge worker {self.index} (pid {self.process.pid}) {how}"


def _serve_batch(context, block, message, next_row):
    """Worker side of one batch: evaluate the first chunk, then pull chunks until none is left.

    ``message`` starts with ``(start, stop, n_rows, chunk_size)``; ``next_row`` is the
    pool's shared ``(counter, lock)``: the first row no worker has taken yet.  Returns
    the reply.
    """
    start, stop, n_rows, size = message[:4]
    counter, lock = next_row
    while True:
        try:
            evaluate_batch(context, block.positions[start:stop], block.energies[start:stop],
                           block.forces[start:stop])
        except Exception as err:  # noqa: BLE001 - reported to the parent verbatim
            with lock:
                counter.value = n_rows  # the other workers stop after their chunk
            return ("error", f"{type(err).__name__}: {err}", traceback.format_exc(), start,
                    stop)
        with lock:
            start = counter.value
            if start >= n_rows:
                return ("ok",)
            stop = counter.value = min(start + size, n_rows)


def _worker_main(conn, system_xml, platform_name, properties, next_row):
    """Entry point of a spawned worker: build a Context, then serve batches until told to stop.

    Protocol (small pickled messages through ``conn``; the data live in shared memory):
    the worker first sends ``("ready", pid)`` or ``("error", head, traceback_text)``.  For
    every ``(start, stop, n_rows, chunk_size, block_name, capacity)`` it evaluates rows
    ``start:stop`` of the block's positions (nm), writes energies (kJ/mol) and forces
    (kJ/mol/nm) into the same rows, then takes further chunks of ``chunk_size`` rows from
    the shared counter ``next_row`` until ``n_rows`` are taken, and replies ``("ok",)``
    or ``("error", "ExceptionType: message", traceback_text, start, stop)``.  ``None`` or
    a closed pipe ends the worker.
    """
    # Ctrl-C in a terminal reaches the whole process group: let the parent handle it
    # and shut the workers down, instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        system = openmm.XmlSerializer.deserialize(system_xml)
        context = make_context(system, platform_name, properties)
    except Exception as err:  # noqa: BLE001 - reported to the parent verbatim
        conn.send(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))
        conn.close()
        return
    block = None
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:  # orderly shutdown: nothing to clean up, skip interpreter teardown
            conn.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            name, capacity = message[4:]
            if block is None or block.name != name:  # a new (larger) block: re-attach
                if block is not None:
                    block.release()
                block = None
                block = _SharedBlock(system.getNumParticles(), capacity, name)
            reply = _serve_batch(context, block, message, next_row)
        except Exception as err:  # noqa: BLE001 - reported to the parent verbatim
            reply = ("error", f"{type(err).__name__}: {err}", traceback.format_exc(),
                     *message[:2])
        try:
            conn.send(reply)
        except OSError:
            return


def _shutdown_workers(workers, blocks):
    """Stop the workers (message, then terminate, then kill), then unlink the pool's
    :class:`_SharedBlock` s in ``blocks``.  Idempotent; a module-level function so that
    ``weakref.finalize`` can call it without keeping the backend alive."""
    for worker in workers:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
    for worker in workers:
        process = worker.process
        process.join(timeout=_SHUTDOWN_GRACE_S)
        for end in (process.terminate, process.kill):
            if process.is_alive():
                end()
                process.join(timeout=1.0)
        try:
            worker.conn.close()
        except OSError:
            pass
    workers.clear()
    while blocks:
        blocks.pop().release()


class _ProcessPoolBackend:
    """``n_workers`` spawned processes, one OpenMM Context each, fed through shared memory.

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
    *Data path.*  One shared-memory block per pool holds the positions (nm) going in and
    the energies (kJ/mol) and forces (kJ/mol/nm) coming out; the first :meth:`compute`
    creates it and a larger batch replaces it by a larger one (up to
    :func:`_shared_memory_limit`; beyond that, rounds).  Pipes carry only row bounds.

    *Scheduling.*  A batch is cut into contiguous chunks (:func:`_chunks`); worker k starts
    with chunk k and then takes the next untaken chunk from a shared counter, so a worker
    slowed down by other load takes fewer chunks, without a round trip to the parent.
    Every configuration is evaluated on its own, so the results equal a single-Context
    evaluation exactly on deterministic platforms, whichever worker computed them.

    *Failures.*  The parent waits on the busy workers' pipes *and* process sentinels: a
    worker that dies is reported at once as a RuntimeError, the survivors are terminated,
    the block is unlinked and the next :meth:`compute` starts a fresh pool.  A worker that
    raises makes the others stop after their chunk; all replies are collected, so the same
    workers serve the next call.  Workers are daemonic, and a ``weakref.finalize`` stops
    them and unlinks the block at garbage collection and at interpreter exit.
    """

    def __init__(self, system, platform_name, properties, n_workers):
        self._system_xml = openmm.XmlSerializer.serialize(system)
        self._n_particles = system.getNumParticles()
        self._platform_name = platform_name
        self._properties = dict(properties) if properties else None
        self.n_workers = int(n_workers)
        self._lock = threading.RLock()
        self._workers = []
        self._blocks = []  # the current _SharedBlock (0 or 1), shared with the finalizer
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

    @property
    def shared_memory_names(self):
        """Names of the shared-memory blocks the pool holds now (list of str, 0 or 1)."""
        return [block.name for block in self._blocks]

    def start(self):
        """Spawn the workers and wait until every one has built its Context.

        Raises
        ------
        RuntimeError
            If a worker cannot build its Context or dies while starting.
        """
        with self._lock:
            mp_context = multiprocessing.get_context("spawn")
            workers, blocks = [], []
            self._next_row = (mp_context.RawValue("q", 0), mp_context.Lock())
            self._finalizer = weakref.finalize(self, _shutdown_workers, workers, blocks)
            try:
                for index in range(self.n_workers):
                    parent_conn, child_conn = mp_context.Pipe(duplex=True)
                    process = mp_context.Process(
                        target=_worker_main, name=f"openmm_dikl-bridge-{index}", daemon=True,
                        args=(child_conn, self._system_xml, self._platform_name,
                              self._properties, self._next_row))
                    process.start()
                    child_conn.close()
                    workers.append(_Worker(index, process, parent_conn))
                for worker in workers:
                    status, *payload = self._receive(worker, "while starting")
                    if status != "ready":
                        raise RuntimeError(f"bridge worker {worker.index} could not build its "
                                           f"OpenMM Context: {payload[0]}\n{payload[1]}")
            except _WorkerDied as err:
                self._finalizer()
                raise RuntimeError(
                    f"{err}.  If this happened at start-up in a script, guard the script's "
                    "entry point with `if __name__ == '__main__':` (worker processes are "
                    "spawned and re-import the main module).") from None
            except BaseException:
                self._finalizer()
                raise
            self._workers, self._blocks = workers, blocks
            self._closed = False
            self._broken = False
            logger.debug("started %d bridge workers (pids %s) on platform %s", self.n_workers,
                         self.worker_pids, self._platform_name)

    def _stop(self):  # stop the workers and unlink the block
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown_workers once, then is dead
        self._workers, self._blocks = [], []

    def restart(self):
        """Stop all workers (if any) and spawn a fresh pool."""
        with self._lock:
            self._stop()
            self._closed = True
            self.start()

    def close(self):
        """Stop all workers and unlink the shared block (idempotent)."""
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

    def _shared_block(self, n_samples):
        """The pool's shared block, replaced by a larger one if it holds < n_samples rows."""
        limit = _shared_memory_limit(self._n_particles)
        wanted = min(n_samples, limit)
        if self._blocks and self._blocks[0].capacity >= wanted:
            return self._blocks[0]
        capacity = min(limit, max(wanted, 2 * self._blocks[0].capacity if self._blocks
                                  else wanted))
        if self._blocks:
            # workers that used the old block registered it with the resource tracker
            # before replying, so unlinking it now cannot race with their registration
            self._blocks.pop().release()
        self._blocks.append(_SharedBlock(self._n_particles, capacity))
        return self._blocks[0]

    def _run_chunks(self, block, n_rows, offset):
        """Evaluate rows 0:n_rows of ``block`` on the workers; error texts of failed chunks.

        Worker k starts with chunk k (so small batches split evenly and deterministically)
        and then pulls further chunks from the shared counter, without the parent.
        ``offset`` (the rows' position in the caller's batch) only labels error messages.
        Raises _WorkerDied if a busy worker's process ends.
        """
        chunks = _chunks(n_rows, len(self._workers))
        active = self._workers[:len(chunks)]
        counter, _ = self._next_row
        counter.value = chunks[len(active) - 1][1]  # no worker is running: no lock needed
        size = chunks[0][1] - chunks[0][0]
        for worker, (start, stop) in zip(active, chunks):
            try:
                worker.conn.send((start, stop, n_rows, size, block.name, block.capacity))
            except (OSError, ValueError):
                raise _WorkerDied(f"{worker.describe_death()} before receiving its "
                                  "batch") from None
        busy, failures = {worker.conn: worker for worker in active}, []
        while busy:
            sentinels = {worker.process.sentinel: worker for worker in busy.values()}
            ready = multiprocessing.connection.wait(list(busy) + list(sentinels))
            for conn in [c for c in ready if c in busy]:
                worker = busy.pop(conn)
                try:
                    status, *payload = conn.recv()
                except (EOFError, OSError):
                    raise _WorkerDied(f"{worker.describe_death()} while evaluating its "
                                      "batch") from None
                if status != "ok":
                    head, text, start, stop = payload
                    failures.append(f"bridge worker {worker.index} raised {head} (samples "
                                    f"{offset + start} to {offset + stop - 1})\nworker "
                                    f"traceback:\n{text}")
            for sentinel in ready:
                worker = sentinels.get(sentinel)
                if worker is not None and worker.conn in busy:
                    raise _WorkerDied(f"{worker.describe_death()} while evaluating its batch")
        return failures

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
            energies = np.empty(n_samples)
            forces = np.empty(positions.shape)
            failures = []
            try:
                block = self._shared_block(n_samples)
                for low in range(0, n_samples, block.capacity):
                    high = min(n_samples, low + block.capacity)
                    block.positions[:high - low] = positions[low:high]
                    failures = self._run_chunks(block, high - low, low)
                    if failures:
                        break
                    energies[low:high] = block.energies[:high - low]
                    forces[low:high] = block.forces[:high - low]
            except _WorkerDied as err:
                self._broken = True
                for worker in self._workers:  # the survivors' chunks are not worth waiting for
                    if worker.process.is_alive():
                        worker.process.terminate()
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

"""Shared test settings."""
import functools
import importlib.util
import os
import subprocess
import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run every test with one torch thread (deterministic, and fair on a 2-core CI box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def load_benchmark():
    """``load(name)``: the script ``benchmarks/<name>.py`` imported as a module (to call its
    ``main(argv)`` and helpers in-process)."""
    def load(name):
        path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


#: The OpenMM platforms that ``openmm_platforms`` runs a test on, in order.
OPENMM_PLATFORMS = ("Reference", "CPU", "OpenCL")
#: Skip reason when OpenCL cannot be used (PoCL runs it on the CPU where no GPU driver is).
OPENCL_MISSING = ("OpenCL platform not available "
                  "(install pocl-opencl-icd and ocl-icd-libopencl1)")
#: Platforms probed in this process; others in a child, since a broken OpenCL driver may crash.
_PROBED_IN_PROCESS = ("Reference", "CPU")
#: A 2-particle harmonic bond evaluated on the platform ``name`` (a global of the code).
_PROBE = """
import openmm
system = openmm.System()
system.addParticle(1.0)
system.addParticle(1.0)
bond = openmm.HarmonicBondForce()
bond.addBond(0, 1, 0.1, 1000.0)
system.addForce(bond)
context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName(name))
context.setPositions([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]])
context.getState(getEnergy=True).getPotentialEnergy()
"""


@functools.lru_cache(maxsize=None)
def openmm_platform_problem(name):
    """Why the OpenMM platform ``name`` cannot be used here, or None when it can.

    Parameters
    ----------
    name : str
        Platform name, e.g. "Reference", "CPU" or "OpenCL".

    Returns
    -------
    str or None
        None if ``openmm.Platform.getPlatformByName(name)`` works and a tiny Context on the
        platform evaluates an energy; otherwise a one-line description of what failed.

    Notes
    -----
    Platforms other than Reference and CPU are probed in a child process, so that a driver
    that crashes (rather than raising) skips the tests instead of ending the session.
    """
    import openmm
    try:
        openmm.Platform.getPlatformByName(name)
    except Exception as error:  # OpenMMException: no such platform
        return f"getPlatformByName({name!r}) raised: {error}"
    if name in _PROBED_IN_PROCESS:
        try:
            exec(compile(_PROBE, "<platform probe>", "exec"), {"name": name})
        except Exception as error:
            return f"a tiny Context on {name} failed: {error}"
        return None
    try:
        probe = subprocess.run([sys.executable, "-c", f"name = {name!r}\n{_PROBE}"],
                               capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"a tiny Context on {name} did not finish in 300 s"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"a tiny Context on {name} failed (exit status {probe.returncode}): {last}"
    return None


@pytest.fixture(params=OPENMM_PLATFORMS)
def openmm_platforms(request):
    """Each OpenMM platform name in turn: "Reference", "CPU", then "OpenCL".

    A platform that :func:`openmm_platform_problem` finds unusable is skipped; for OpenCL the
    reason is :data:`OPENCL_MISSING` (followed by what failed).

    Yields
    ------
    str
        The platform name, for ``openmm.Platform.getPlatformByName``.
    """
    name = request.param
    problem = openmm_platform_problem(name)
    if problem is not None:
        pytest.skip(f"{OPENCL_MISSING}: {problem}" if name == "OpenCL"
                    else f"OpenMM platform {name} not available: {problem}")
    yield name

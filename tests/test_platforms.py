"""OpenMM platforms: every Context the project makes names its platform, the CI script keeps
implicit Contexts off OpenCL, and the Reference, CPU and OpenCL platforms agree on an energy.

Once PoCL is installed OpenMM picks OpenCL for a Context made without a platform, and
``Modeller.addHydrogens`` (its minimisation) segfaults there; naming the platform everywhere
keeps the project's results independent of which OpenMM platforms a machine has.
"""
import ast
import doctest
import pathlib

import numpy as np
import openmm
import pytest
from conftest import OPENCL_MISSING, OPENMM_PLATFORMS, openmm_platform_problem
from openmm import unit

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Source trees scanned: the package, its examples, benchmarks and tests.
SCANNED = ("openmm_dikl", "examples", "benchmarks", "tests")
#: Callables that create an OpenMM Context (directly or inside), and the position of their
#: ``platform`` argument (0-based, receiver excluded): a call names the platform with that
#: keyword or with at least position + 1 positional arguments.
PLATFORM_ARGUMENT = {
    "Context": 2,         # openmm.Context(system, integrator, platform, properties)
    "Simulation": 3,      # app.Simulation(topology, system, integrator, platform, ...)
    "ContextCache": 0,    # openmmtools.cache.ContextCache(platform=None, ...)
    "addHydrogens": 3,    # app.Modeller.addHydrogens(forcefield, pH, variants, platform)
    "create_context": 1,  # openmmtools ThermodynamicState.create_context(integrator, platform)
}
#: Relative energy tolerance against Reference: OpenCL computes in single precision (PoCL
#: also warns that it is an unsupported implementation).
ENERGY_RTOL = 1e-5


def _callee(call):
    """Name of the called function or attribute (``openmm.Context`` -> "Context"), or None."""
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _names_platform(call, position):
    """Whether ``call`` passes a platform: by keyword, by position, or through ``*``/``**``.

    Unpacked arguments (``Context(system, integrator, *args)``, ``**kwargs``) cannot be
    checked statically and are trusted to carry the platform.
    """
    if any(keyword.arg in ("platform", None) for keyword in call.keywords):  # None: **kwargs
        return True
    return (any(isinstance(a, ast.Starred) for a in call.args)
            or len(call.args) > position)


def _doctest_sources(tree):
    """(line, source) of the doctests in the module's, classes' and functions' docstrings."""
    parser = doctest.DocTestParser()
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    for node in nodes:
        docstring = ast.get_docstring(node, clean=False)
        if docstring and ">>>" in docstring:
            yield (getattr(node, "lineno", 1),
                   "".join(example.source for example in parser.get_examples(docstring)))


def unnamed_platform_calls(source, label="<source>"):
    """Calls in ``source`` (and its doctests) that create a Context without naming a platform.

    Parameters
    ----------
    source : str
        Python source code.
    label : str
        Prefix of each reported location (e.g. the file's path).

    Returns
    -------
    tuple of (list of str, int)
        ``"label:line: call"`` for each offending call, and the number of Context-creating
        calls seen (so a scan that sees nothing is noticed).
    """
    offenders, seen = [], 0
    tree = ast.parse(source)
    trees = [(tree, "")]
    for line, example in _doctest_sources(tree):
        try:
            trees.append((ast.parse(example), f" (doctest of the definition at line {line})"))
        except SyntaxError:  # a doctest fragment that is not a complete program
            continue
    for scanned, where in trees:
        for node in ast.walk(scanned):
            if not isinstance(node, ast.Call) or _callee(node) not in PLATFORM_ARGUMENT:
                continue
            seen += 1
            if not _names_platform(node, PLATFORM_ARGUMENT[_callee(node)]):
                offenders.append(f"{label}:{node.lineno}{where}: {ast.unparse(node)[:100]}")
    return offenders, seen


def _scanned_files():
    return sorted(p for tree in SCANNED for p in (ROOT / tree).rglob("*.py"))


def test_the_scan_finds_calls_without_a_platform():
    offenders, seen = unnamed_platform_calls(
        "import openmm\n"
        "openmm.Context(system, integrator)\n"
        "openmm.Context(system, integrator, platform)\n"
        "app.Simulation(topology, system, integrator, platform=platform)\n"
        "app.Simulation(topology, system, integrator)\n"
        "cache.ContextCache()\n"
        "modeller.addHydrogens(forcefield, platform=cpu)\n"
        "modeller.addHydrogens(forcefield)\n"
        "openmm.Context(system, integrator, *arguments)\n"
        "def f():\n"
        "    '''\n"
        "    >>> cache.ContextCache(capacity=2)\n"
        "    '''\n", label="x.py")
    assert seen == 9
    assert [o.split(":")[1] for o in offenders] == [
        "2", "5", "6", "8", "1 (doctest of the definition at line 10)"]


def test_every_context_names_its_platform():
    offenders, seen = [], 0
    for path in _scanned_files():
        found, count = unnamed_platform_calls(path.read_text(), str(path.relative_to(ROOT)))
        offenders += found
        seen += count
    assert not offenders, offenders
    assert seen > 30  # the scan did see the project's Contexts


def test_ci_runs_the_readme_command_with_cpu_as_the_default_platform():
    readme = (ROOT / "README.md").read_text().splitlines()
    marker = next(i for i, line in enumerate(readme) if "exactly what `.ci/run` does" in line)
    command = next(line for line in readme[marker:] if line.startswith("python -m venv"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci
    assert "export OPENMM_DEFAULT_PLATFORM=CPU" in ci[:ci.index(command)]
    assert "pocl-opencl-icd ocl-icd-libopencl1" in "\n".join(ci)


def test_an_unknown_platform_is_reported_not_raised():
    problem = openmm_platform_problem("NoSuchPlatform")
    assert problem and "NoSuchPlatform" in problem
    assert OPENCL_MISSING.startswith("OpenCL platform not available")
    assert OPENMM_PLATFORMS == ("Reference", "CPU", "OpenCL")


def _bond_energy(platform_name):
    """Energy (kJ/mol) of a 2-particle harmonic bond stretched by 0.05 nm on a platform."""
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, 1000.0)
    system.addForce(bond)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(platform_name))
    assert context.getPlatform().getName() == platform_name
    context.setPositions(np.array([[0.0, 0.0, 0.0], [0.12, 0.09, 0.0]]) * unit.nanometer)
    energy = context.getState(getEnergy=True).getPotentialEnergy()
    return energy.value_in_unit(unit.kilojoule_per_mole)


def test_platforms_agree_on_a_harmonic_bond(openmm_platforms):
    expected = 0.5 * 1000.0 * (0.15 - 0.1) ** 2  # |r| = 0.15 nm
    reference = _bond_energy("Reference")
    assert reference == pytest.approx(expected, rel=1e-12)
    assert _bond_energy(openmm_platforms) == pytest.approx(reference, rel=ENERGY_RTOL)

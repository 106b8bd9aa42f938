"""The package's structure: layers without cycles, module and function sizes, no switches on
system names outside systems/, no test hooks in library code."""
import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "openmm_dikl"

#: Layers, lowest first: a module may import only from its own layer or lower ones.
LAYERS = [
    {"units", "geometry", "seeding"},
    {"_workers", "bridge", "io", "internal"},
    {"systems"},
    {"energy"},
    {"analysis", "nn", "samplers"},
    {"dikl"},
    {"cli"},
]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: CustomIntegrator program builders may be longer (the style guide's one exception).
LONG_FUNCTIONS_ALLOWED = {("samplers/integrators.py", "__init__")}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _name(path):
    """Dotted module name below the package, e.g. 'samplers.digs' or 'samplers'."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _component(name):
    return name.split(".")[0] if name else ""


def _layer(component):
    for index, layer in enumerate(LAYERS):
        if component in layer:
            return index
    raise AssertionError(f"module group {component!r} is in no layer of {LAYERS}")


def _imports(path):
    """Package-internal modules imported by ``path`` (resolved dotted names), anywhere in it."""
    tree = ast.parse(path.read_text())
    own = _name(path).split(".") if _name(path) else []
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import a, b
                    found.update(".".join(base + [a.name]) for a in node.names)
                else:
                    found.add(target)
            elif node.module and node.module.startswith("openmm_dikl"):
                found.add(node.module[len("openmm_dikl."):] if "." in node.module else "")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("openmm_dikl."):
                    found.add(alias.name[len("openmm_dikl."):])
    return {f.strip(".") for f in found}


def test_layers_are_respected_and_have_no_cycles():
    graph = {_name(p): _imports(p) for p in _modules()}
    upward = []
    for module, imported in graph.items():
        if module == "":  # the package __init__ re-exports lazily (importlib), no imports
            continue
        for target in imported:
            if _layer(_component(target)) > _layer(_component(module)):
                upward.append(f"{module} -> {target}")
    assert not upward, upward
    # no cycle between module groups (a subpackage's modules may import each other)
    groups = {}
    for module, imported in graph.items():
        groups.setdefault(_component(module), set()).update(
            _component(t) for t in imported if _component(t) != _component(module))
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", "import cycle: " + " -> ".join(trail + [node])
        state[node] = "active"
        for nxt in groups.get(node, ()):
            visit(nxt, trail + [node])
        state[node] = "done"

    for node in groups:
        visit(node, [])
    assert len(graph) > 30  # the walk did see the package


def test_package_init_imports_nothing_eagerly():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    eager = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
             and not (isinstance(n, ast.Import) and n.names[0].name == "importlib")]
    assert not eager


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{len(lines)} lines"
    rel = str(path.relative_to(PACKAGE))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            if not body:
                continue
            length = node.end_lineno - body[0].lineno + 1  # code lines, docstring excluded
            if (rel, node.name) not in LONG_FUNCTIONS_ALLOWED:
                assert length <= MAX_FUNCTION_LINES, f"{node.name}: {length} lines"


def test_no_switch_on_system_names_outside_systems():
    pattern = re.compile(r"\bname\s*(==|!=|in)\s*[\"'(\[]|\.name\.startswith\(|"
                         r"\bname\s+in\s+\(")
    offenders = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "systems":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "target.name" in line and pattern.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_no_test_hooks_or_global_side_effects_in_library_code():
    offenders = []
    for path in _modules():
        text = path.read_text()
        rel = path.relative_to(PACKAGE)
        for needle in ("OPENMM_DIKL_TEST", "matplotlib.use(", "set_default_dtype(",
                       "torch.manual_seed(", "np.random.seed("):
            if needle in text:
                offenders.append(f"{rel}: {needle}")
        if rel.name != "cli.py" and re.search(r"getLogger\([\"'](?!__name__)\w+[\"']\)\.set", text):
            offenders.append(f"{rel}: configures a foreign logger")
    assert not offenders, offenders


def test_docs_cite_the_projects_own_files():
    root = PACKAGE.parent
    offenders = []
    for path in list(_modules()) + [root / "README.md"] + sorted((root / "benchmarks").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bspec/\w+\.md|\.\./shared", line):
                offenders.append(f"{path.name}:{number}")
    assert not offenders, offenders


def test_public_api_resolves_and_importing_has_no_side_effects():
    import subprocess
    import sys
    code = ("import logging, openmm_dikl as o; before = logging.getLogger('pymbar').level; "
            "names = [getattr(o, n) for n in o.__all__]; "
            "from openmm_dikl import NeuralSampler, CheckpointError, SamplingError, ChainResult; "
            "assert issubclass(CheckpointError, ValueError) and issubclass(SamplingError, RuntimeError); "
            "print(before, logging.getLogger('pymbar').level, len(names))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after, n = result.stdout.split()
    assert before == after == "0" and int(n) > 30  # pymbar's logger untouched (NOTSET)


def test_counters_are_properties():
    from openmm_dikl.samplers import (HMC, MALA, DiffusiveGibbsIntegrator, DiffusiveGibbsMove,
                                      DiGSSampler, Sampler)
    for cls, names in ((Sampler, ("force_evaluations", "force_evaluations_per_step",
                                  "statistics")),
                       (MALA, ("force_evaluations_per_step",)), (HMC, ("force_evaluations_per_step",)),
                       (DiGSSampler, ("force_evaluations_per_step", "statistics")),
                       (DiffusiveGibbsIntegrator, ("acceptance_counts", "acceptance_rates",
                                                   "force_evaluations_per_step")),
                       (DiffusiveGibbsMove, ("acceptance_rates", "statistics"))):
        for name in names:
            assert isinstance(getattr(cls, name), property), f"{cls.__name__}.{name}"

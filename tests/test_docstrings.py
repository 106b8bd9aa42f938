"""Every public name has a docstring, and the doctests in the package run."""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import openmm_dikl

MODULES = sorted(m.name for m in pkgutil.walk_packages(openmm_dikl.__path__, "openmm_dikl.")
                 if not m.name.startswith("openmm_dikl._shipped"))


@pytest.mark.parametrize("name", MODULES)
def test_public_names_documented(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    for public in getattr(module, "__all__", []):
        obj = getattr(module, public)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{public} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{public}.{attr} has no docstring"


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0

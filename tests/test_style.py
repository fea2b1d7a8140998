"""Mechanical checks of STYLE.md: every module declares __all__ (R8), stays within the
600-line budget (R8), public callables take no **kwargs (R3), and the model layer does not
import the layers above it (DESIGN.md)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import volsr

PACKAGE = Path(volsr.__file__).parent
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="volsr.")
    if not info.name.rsplit(".", 1)[-1].startswith("__")
)
LOWER_LAYERS = ("volsr.models", "volsr.metrics", "volsr.degrade", "volsr.geometry", "volsr.volume")
FORBIDDEN_ABOVE = ("volsr.train", "volsr.engine", "volsr.cli", "volsr.commands", "volsr.data")


def _path(name: str) -> Path:
    module = importlib.import_module(name)
    return Path(module.__file__)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_all_and_stays_small(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{name} has no __all__"
    lines = _path(name).read_text().count("\n")
    assert lines <= 600, f"{name} has {lines} lines (budget 600)"


@pytest.mark.parametrize("name", MODULES)
def test_public_callables_take_no_var_keyword(name):
    module = importlib.import_module(name)
    for attribute in getattr(module, "__all__", ()):
        value = getattr(module, attribute)
        if not callable(value) or getattr(value, "__module__", name) != name:
            continue
        if inspect.isclass(value) and "__init__" not in vars(value):
            continue  # inherited constructor (exceptions, dataclasses' generated ones are own)
        target = value.__init__ if inspect.isclass(value) else value
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        kinds = [p.kind for p in signature.parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{name}.{attribute} takes **kwargs"


@pytest.mark.parametrize("name", [m for m in MODULES if m.startswith(LOWER_LAYERS)])
def test_lower_layers_do_not_import_upper_layers(name):
    tree = ast.parse(_path(name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    bad = sorted(m for m in imported if m.startswith(FORBIDDEN_ABOVE))
    assert not bad, f"{name} imports {bad} from a layer above it"

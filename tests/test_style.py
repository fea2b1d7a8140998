"""Mechanical checks of STYLE.md: every module declares __all__ (R8), stays within the
600-line budget (R8), public callables take no **kwargs (R3), no function takes more than 12
parameters (options objects instead), and every import points down the layers of DESIGN.md
(a module-level or function-level import alike)."""

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
#: DESIGN.md's layers, deepest first: a module may import its own package and anything on a
#: lower row, nothing on its own row or above (the longest matching prefix names the row).
LAYERS = (
    ("volsr.errors",),
    ("volsr.geometry",),
    ("volsr.volume",),
    ("volsr.io", "volsr.noise", "volsr.resample", "volsr.metrics", "volsr.intensity", "volsr.datasets",
     "volsr.bids.layout"),  # reading a BIDS JSON sidecar is file reading (volsr.acquisition needs it)
    ("volsr.degrade",),
    ("volsr.acquisition", "volsr.uncertainty"),
    ("volsr.consistency",),
    ("volsr.models",),
    ("volsr.data",),
    ("volsr.engine",),
    ("volsr.train",),
    ("volsr.adaptation", "volsr.bids"),
    ("volsr.demo",),
    ("volsr.commands",),
    ("volsr.cli",),
    ("volsr",),  # the package root (its lazy attributes reach every layer)
)


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


#: Most parameters of any function (``self``/``cls`` not counted): beyond, an options dataclass.
MAX_PARAMETERS = 12


def _wide_functions(source: str) -> list[str]:
    """``name (count)`` of the functions in ``source`` with more than MAX_PARAMETERS parameters."""
    wide = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + ([a.vararg.arg] if a.vararg else [])
            count = len([n for n in names if n not in ("self", "cls")])
            if count > MAX_PARAMETERS:
                wide.append(f"{node.name} ({count})")
    return wide


@pytest.mark.parametrize("name", MODULES)
def test_no_function_takes_more_than_twelve_parameters(name):
    assert _wide_functions(_path(name).read_text()) == []


def test_the_parameter_count_is_checked():
    thirteen = "def f(a, b, c, d, *, e, f, g, h, i, j, k, l, m): pass"
    assert _wide_functions(thirteen) == ["f (13)"]
    assert _wide_functions("class A:\n    def g(self, a, b, c, d, e, f, g, h, i, j, k, l): pass") == []


def _layer(name: str) -> tuple[int, str]:
    """(row, prefix) of a module in LAYERS: its longest matching prefix."""
    matches = [(len(p), row, p) for row, prefixes in enumerate(LAYERS) for p in prefixes
               if name == p or name.startswith(p + ".")]
    _, row, prefix = max(matches)
    return row, prefix


def _package(name: str) -> str:
    """The top-level piece of volsr a module belongs to (``volsr.engine``, ``volsr.cli``)."""
    return ".".join(name.split(".")[:2])


def _upward_imports(name: str, source: str) -> list[str]:
    """The volsr modules that ``source`` (module ``name``) imports from its own layer or above."""
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
            if node.module == "volsr":  # `from volsr import io` imports volsr.io
                imported.update(f"volsr.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    row, _ = _layer(name)
    return sorted(m for m in imported if m.startswith("volsr.") and _package(m) != _package(name)
                  and _layer(m)[0] >= row)


@pytest.mark.parametrize("name", MODULES)
def test_imports_point_down_the_layers(name):
    bad = _upward_imports(name, _path(name).read_text())
    assert not bad, f"{name} (layer {_layer(name)[0]}) imports {bad} from its own layer or above (see LAYERS)"


def test_the_layer_check_catches_leaks():
    source = ("import numpy\nfrom volsr.io import load\nfrom volsr import engine, geometry\n"
              "def f():\n    from volsr.train.config import TrainConfig\n    import volsr.noise\n")
    assert _upward_imports("volsr.models.fake", source) == ["volsr.engine", "volsr.train.config"]
    assert _upward_imports("volsr.degrade", "from volsr.acquisition import AcquisitionModel") == ["volsr.acquisition"]
    assert _upward_imports("volsr.engine.fake", "from volsr.engine.plan import plan") == []

"""YAML mappings checked into frozen dataclasses: types, ranges, unknown and missing keys.

The schema's machinery, kept apart from the schema (:mod:`volsr.train.config`): a section
is a frozen dataclass; its field types say what a value may be (``int``, ``float``,
``str``, ``bool``, ``Literal``, fixed or variable tuples, optionals, nested sections), and
a table of range checks (``"Class.field" -> (predicate, wording)``) what it must satisfy.
Every refusal names the key path and the value received.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["Checks", "section"]

#: Range checks: ``"Class.field" -> (predicate, wording)``.
Checks = Mapping[str, tuple[Callable[[Any], bool], str]]


def _fail(where: str, expected: str, value: Any) -> typing.NoReturn:
    raise ValueError(f"config key {where!r} must be {expected}, got {value!r}")


def _scalar(kind: type, value: Any, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            _fail(where, "true or false", value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, "an integer", value)
        return value
    if kind is float:
        # YAML 1.1 reads "1e-4" as a string: accept numeric strings for floats only.
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            _fail(where, "a number", value)
        if not math.isfinite(number):
            _fail(where, "a finite number", value)
        return number
    if kind is str:
        if not isinstance(value, str) or not value:
            _fail(where, "a non-empty string", value)
        return value
    raise TypeError(f"unsupported schema type {kind!r} at {where!r}")


def _convert(hint: Any, value: Any, where: str, checks: Checks) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            _fail(where, f"a value of type {hint}", value)
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, checks)
    if origin is Literal:
        if value not in args:
            _fail(where, f"one of {list(args)}", value)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(where, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]", checks) for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(where, f"a list of {len(args)} values", value)
        return tuple(_convert(a, v, f"{where}[{i}]", checks) for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(hint):
        return section(hint, value, where, checks)
    return _scalar(hint, value, where)


def section(cls: type, mapping: Any, where: str, checks: Checks) -> Any:
    """Validate ``mapping`` into the frozen dataclass ``cls`` (nested sections recursively).

    Parameters
    ----------
    cls : type
        A dataclass whose field types are scalars, ``Literal``, tuples, optionals or dataclasses.
    mapping : mapping
        The parsed YAML section.
    where : str
        Its key path for messages (``""`` at the top).
    checks : dict
        ``"Class.field" -> (predicate, wording)`` range checks.

    Returns
    -------
    object
        A ``cls`` instance; omitted keys take the dataclass defaults.

    Raises
    ------
    ValueError
        On an unknown key (named, with the allowed ones), a missing required key, or a value
        of the wrong type or range (named, with the value received).

    Examples
    --------
    >>> @dataclasses.dataclass(frozen=True)
    ... class Box:
    ...     size: int = 1
    >>> section(Box, {"size": 3}, "box", {"Box.size": (lambda v: v > 0, "> 0")})
    Box(size=3)
    >>> section(Box, {"size": 0}, "box", {"Box.size": (lambda v: v > 0, "> 0")})
    Traceback (most recent call last):
    ...
    ValueError: config key 'box.size' must be > 0, got 0
    """
    if not isinstance(mapping, Mapping):
        _fail(where, "a mapping of keys to values", mapping)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in mapping:
        if key not in fields:
            name = f"{where}.{key}" if where else str(key)
            raise ValueError(f"unknown config key {name!r} (allowed here: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in mapping:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"config key {path!r} is required")
            continue
        values[name] = _convert(hints[name], mapping[name], path, checks)
        check = checks.get(f"{cls.__name__}.{name}")
        if check is not None and values[name] is not None and not check[0](values[name]):
            _fail(path, check[1], mapping[name])
    return cls(**values)

"""Shared helper of the engine tests: one run's keyword arguments with some engine options changed."""

from __future__ import annotations

import dataclasses
from typing import Any

from volsr.engine import EngineOptions


def with_engine(kwargs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``kwargs`` (for ``upsample_to_store``) whose ``options`` have ``changes`` applied."""
    options = kwargs.get("options") or EngineOptions()
    return {**kwargs, "options": dataclasses.replace(options, **changes)}

"""Plans: a spec expanded over its inputs into tasks with rendered commands and ids.

``build_plan(spec, overrides, blob_lister)`` is the entry point; the result (:class:`Plan`) is
what the engine and every backend consume.
"""

from __future__ import annotations

from .build import build_plan, parse_overrides
from .inputs import BlobLister, EmptyInputError, PlanError
from .model import InputFile, Plan, PlannedTask

__all__ = [
    "BlobLister",
    "EmptyInputError",
    "InputFile",
    "Plan",
    "PlanError",
    "PlannedTask",
    "build_plan",
    "parse_overrides",
]

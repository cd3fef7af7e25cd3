"""Plans: a spec expanded over its inputs into tasks with rendered commands and ids.

``build_plan(spec, overrides, blob_lister)`` is the entry point; the result (:class:`Plan`) is
what the engine and every backend consume.
"""

from __future__ import annotations

from .build import OutputIndex, Planner, build_plan, parse_overrides, resolve_params
from .inputs import BlobLister, EmptyInputError, PlanError
from .model import InputFile, Output, Plan, PlannedPool, PlannedStartTask, PlannedTask, StagePlan

__all__ = [
    "BlobLister",
    "EmptyInputError",
    "InputFile",
    "Output",
    "OutputIndex",
    "Plan",
    "PlanError",
    "PlannedPool",
    "PlannedStartTask",
    "PlannedTask",
    "Planner",
    "StagePlan",
    "build_plan",
    "parse_overrides",
    "resolve_params",
]

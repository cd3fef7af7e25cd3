"""Plans: a spec expanded over its inputs into tasks with rendered commands and ids, stage by stage.

``build_plan(spec, overrides, blob_lister)`` is the entry point; the result (:class:`Plan`) is
what the engine and every backend consume. The engine keeps the :class:`Planner` to expand the
later stages of a multi-stage spec as the files they read become known; :mod:`.deps` says how
a task's wait for others is expressed as Batch task dependencies.
"""

from __future__ import annotations

from .build import OutputIndex, Planner, build_plan, gc_paused, parse_overrides, resolve_params
from .inputs import BlobLister, EmptyInputError, PlanError
from .model import (
    InputFile,
    Output,
    Plan,
    PlannedContainer,
    PlannedPool,
    PlannedPoolContainers,
    PlannedStartTask,
    PlannedTask,
    StagePlan,
)

__all__ = [
    "BlobLister",
    "EmptyInputError",
    "InputFile",
    "Output",
    "OutputIndex",
    "Plan",
    "PlanError",
    "PlannedContainer",
    "PlannedPool",
    "PlannedPoolContainers",
    "PlannedStartTask",
    "PlannedTask",
    "Planner",
    "StagePlan",
    "build_plan",
    "gc_paused",
    "parse_overrides",
    "resolve_params",
]

"""Specs: load a YAML/JSON file, validate it, and build the typed model.

``load_spec(path)`` is the one entry point the rest of batchspec uses; ``validate_file`` and
``discover`` serve ``batchspec validate``.
"""

from __future__ import annotations

from pathlib import Path

from .build import MERGE_STAGE, TASK_STAGE, build_spec
from .model import (
    Autoscale,
    Axis,
    Cleanup,
    FileSource,
    Image,
    Inputs,
    Job,
    OutputRule,
    Outputs,
    Param,
    Pool,
    Scalar,
    Spec,
    Stage,
    StartTask,
    TaskBody,
)
from .validate import discover, load_document, schema, validate_file, validate_files


def load_spec(path: Path) -> Spec:
    """Load, validate and model the spec at ``path``; raises SpecError listing every problem."""
    return build_spec(load_document(path), path)


__all__ = [
    "MERGE_STAGE",
    "TASK_STAGE",
    "Autoscale",
    "Axis",
    "Cleanup",
    "FileSource",
    "Image",
    "Inputs",
    "Job",
    "OutputRule",
    "Outputs",
    "Param",
    "Pool",
    "Scalar",
    "Spec",
    "Stage",
    "StartTask",
    "TaskBody",
    "build_spec",
    "discover",
    "load_spec",
    "schema",
    "validate_file",
    "validate_files",
]

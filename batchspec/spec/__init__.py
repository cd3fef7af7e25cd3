"""Specs: load a YAML/JSON file, validate it, and build the typed model.

``load_spec(path)`` is the one entry point the rest of batchspec uses; ``validate_file`` and
``discover`` serve ``batchspec validate``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .validate import discover, schema, validate_file, validate_files

#: Where each name lives: imported on first use, so `batchspec validate` never loads the model.
_HOMES = {"MERGE_STAGE": "build", "TASK_STAGE": "build", "build_spec": "build", "discover": "validate",
          "schema": "validate", "validate_file": "validate", "validate_files": "validate"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name, "model")
    if name.startswith("_") or (home == "model" and name not in __all__):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def load_spec(path: Path) -> Spec:
    """Load, validate and model the spec at ``path``; raises SpecError listing every problem."""
    from .build import build_spec
    from .validate import load_document

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

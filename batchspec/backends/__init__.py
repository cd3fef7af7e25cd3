"""The backend registry: names to implementations, and the ``auto`` choice.

Implementations are imported lazily so ``batchspec run`` on the local backend never pays for
importing the Azure SDKs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ..errors import BatchspecError
from .base import Backend, LogChunk, LogRef, RunContext, RunOptions, Wave

#: name -> "module:Class"
REGISTRY: dict[str, str] = {
    "local": "batchspec.backends.local:LocalBackend",
    "azure": "batchspec.backends.azure:AzureBackend",
}

_AZURE_MARKERS = ("AZURE_BATCH_ENDPOINT", "AZURE_BATCH_ACCOUNT")


def choose(name: str, env: Mapping[str, str]) -> tuple[str, str]:
    """Resolve ``auto``; returns the backend name and the reason, for the first line of output."""
    if name != "auto":
        if name not in REGISTRY:
            raise BatchspecError(f"unknown backend '{name}'; choose one of: auto, {', '.join(REGISTRY)}")
        return name, "chosen with --backend"
    for marker in _AZURE_MARKERS:
        if env.get(marker):
            return "azure", f"{marker} is set"
    return "local", "no Azure Batch account configured (AZURE_BATCH_ENDPOINT / AZURE_BATCH_ACCOUNT unset)"


def create(name: str, options: RunOptions) -> Backend:
    module_name, _, class_name = REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(options)
    return backend


__all__ = ["REGISTRY", "Backend", "LogChunk", "LogRef", "RunContext", "RunOptions", "Wave", "choose", "create"]

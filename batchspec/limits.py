"""The limits batchspec holds every spec and plan to, in one place (README: "Limits").

A spec may come from anyone (``batchspec validate`` runs in other people's CI), so reading,
validating and planning one takes bounded time and memory whatever it holds; each limit is
checked as early as it can be, from counts, before the work it bounds is done.
"""

from __future__ import annotations

from .sandbox import MAX_INT_BITS, MAX_PLAN_STEPS, MAX_STEPS, MAX_TEXT

# The spec file's own limits (size, YAML nodes, nesting) are in batchspec.spec.document.

#: Tasks in one plan: inputs times matrix combinations (and the tasks of later stages).
MAX_TASKS = 100_000

__all__ = ["MAX_INT_BITS", "MAX_PLAN_STEPS", "MAX_STEPS", "MAX_TASKS", "MAX_TEXT"]

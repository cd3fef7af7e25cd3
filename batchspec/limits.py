"""The limits batchspec holds every spec and plan to, in one place (README: "Limits").

A spec may come from anyone (``batchspec validate`` runs in other people's CI), so reading,
validating and planning one takes bounded time and memory whatever it holds; each limit is
checked as early as it can be, from counts, before the work it bounds is done.

The numbers and the work budget are plain Python, apart from the Jinja sandbox that enforces
them inside templates (:mod:`batchspec.sandbox`): checking a spec whose templates are text and
lookups, or planning one, never imports Jinja.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The spec file's own limits (size, YAML nodes, nesting) are in batchspec.spec.document.

#: Tasks in one plan: inputs times matrix combinations (and the tasks of later stages).
MAX_TASKS = 100_000
#: Nodes of one kind in a pool: Batch's target node counts are 32-bit integers (the schema's
#: maximum for pool.nodes.dedicated and .spot says the same).
MAX_NODE_COUNT = 2**31 - 1

#: The longest value (characters of text, items of a list) a template may make, and the longest
#: rendered template: Linux's MAX_ARG_STRLEN, the most one argument to a program can be.
MAX_TEXT = 128 * 1024
#: The largest integer a template may make, in bits (about 1,200 decimal digits).
MAX_INT_BITS = 4096
#: Steps of work in one render: loop iterations, calls, filters, operators, and one per 64
#: characters of text made.
MAX_STEPS = 1_000_000
#: Steps of work of all the renders of one plan together.
MAX_PLAN_STEPS = 10_000_000


class LimitError(Exception):
    """A template went past one of the limits; the message names it."""


def _too_long(size: int, what: str) -> LimitError:
    return LimitError(f"{what} would be {size:,} characters or items long, more than the limit of {MAX_TEXT:,} "
                      "(the longest value or rendered template: 128 KiB, what Linux passes as one argument)")


def need(size: int, what: str = "the result") -> None:
    """Refuse a value of ``size`` characters or items before it is made."""
    if size > MAX_TEXT:
        raise _too_long(size, what)


# --- the work budget -----------------------------------------------------------------------


class _Budget(threading.local):
    active = False  # inside budget(): outside one (validation's own bookkeeping), nothing is counted
    left = MAX_STEPS
    plan_left: int | None = None  # inside plan_budget(): what the plan's renders have left together


_budget = _Budget()


def charge(steps: int = 1) -> None:
    """Spend ``steps`` of the current render's budget."""
    state = _budget
    if not state.active:
        return
    state.left -= steps
    if state.left < 0:
        state.left = 0
        if state.plan_left is not None and state.plan_left < MAX_STEPS:
            raise LimitError(f"the templates of this plan do more than {MAX_PLAN_STEPS:,} steps of work in all "
                             "(loop iterations, calls, filters, operators), the limit for one plan")
        raise LimitError(f"the template does more than {MAX_STEPS:,} steps of work in one render (loop "
                         "iterations, calls, filters, operators), the limit for one template")


@contextmanager
def budget(*, fresh: bool = True) -> Iterator[None]:
    """A budget of :data:`MAX_STEPS` (less what the plan has left) for what runs inside: one
    render. With ``fresh=False`` a budget already open is shared instead (validation opens one
    for a whole spec)."""
    state = _budget
    if state.active and not fresh:
        yield
        return
    outer = (state.active, state.left)
    start = MAX_STEPS if state.plan_left is None else min(MAX_STEPS, state.plan_left)
    state.active, state.left = True, start
    try:
        yield
    finally:
        if state.plan_left is not None:
            state.plan_left -= start - state.left
        state.active, state.left = outer


@contextmanager
def plan_budget() -> Iterator[None]:
    """One budget of :data:`MAX_PLAN_STEPS` shared by every render inside (a plan's tasks)."""
    state = _budget
    outer = state.plan_left
    state.plan_left = MAX_PLAN_STEPS
    try:
        yield
    finally:
        state.plan_left = outer


__all__ = ["MAX_INT_BITS", "MAX_NODE_COUNT", "MAX_PLAN_STEPS", "MAX_STEPS", "MAX_TASKS", "MAX_TEXT", "LimitError",
           "budget", "charge", "need", "plan_budget"]

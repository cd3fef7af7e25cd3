"""``batchspec validate --inputs``: plan each valid spec against the input files present.

What validation knows from the spec alone it says itself; what depends on the files (names
that clash once rendered, more tasks than the limit, a pattern that matches nothing) only a plan
shows. Planning has no side effects, so CI can run it on any spec.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BatchspecError, Diagnostic
from ..spec import load_spec
from .build import build_plan

_LOCATED = re.compile(r"(?P<file>.+?):(?P<line>[0-9]+)(?::(?P<column>[0-9]+))?: (?P<rest>.*)", re.DOTALL)


def plan_problems(path: Path, display: str) -> list[Diagnostic]:
    """The problems planning ``path`` against its inputs finds (none when it plans)."""
    try:
        build_plan(load_spec(path))
    except BatchspecError as exc:
        message = exc.message
        line = column = 0
        if (match := _LOCATED.match(message)) and match["file"] == str(path):
            line, column, message = int(match["line"]), int(match["column"] or 1), match["rest"]
        field, _, rest = message.partition(": ")
        if field.startswith("$") and rest:
            return [Diagnostic(display, line, column, field.split(" ")[0], f"planning: {rest}")]
        return [Diagnostic(display, line, column, "$", f"planning: {message}")]
    return []

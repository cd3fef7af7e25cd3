"""The engine: runs a plan on a backend from the registry, stage after stage (:mod:`.run`).

``run`` is what ``batchspec run`` calls, ``make_plan`` what ``batchspec plan`` calls and
``remove`` what ``batchspec cleanup`` calls; ``make_reporter`` chooses how progress is shown.
"""

from __future__ import annotations

from .reporters import make_reporter
from .run import make_plan, remove, run

__all__ = ["make_plan", "make_reporter", "remove", "run"]

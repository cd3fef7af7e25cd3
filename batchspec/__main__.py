"""``python -m batchspec``: the same as the ``batchspec`` command."""

from __future__ import annotations

from .cli import main

main()

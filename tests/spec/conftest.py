"""Fixtures for spec validation tests: a valid spec as text, and helpers to break it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from batchspec.errors import Diagnostic
from batchspec.spec import validate_file

# Line numbers matter: the tests assert positions in this text.
VALID = """\
batchspec: 1
name: demo
params:
  bitrate: 192k
pool:
  id: demo-pool
  vm_size: standard_a1_v2
  image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server}
  node_agent_sku: batch.node.ubuntu 24.04
  nodes: {dedicated: 0, spot: 2}
inputs:
  path: inputs/*.mp4
task:
  command: ffmpeg -i <<input>> -b:a <<params.bitrate>> <<stem>>.mp3
  outputs: ["<<stem>>.mp3"]
  timeout: 30m
"""

Problem = tuple[int, int, str, str]  # line, column, JSON path, message
Check = Callable[..., list[Diagnostic]]


def edit(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced (fails loudly if it is not unique)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the ``occurrence``-th ``needle`` in ``text``."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


@pytest.fixture
def check(tmp_path: Path) -> Check:
    """Write ``text`` to a spec file and return every diagnostic for it."""

    def run(text: str | bytes, name: str = "spec.yaml") -> list[Diagnostic]:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return validate_file(path, name)[1]

    return run


def problems(diagnostics: list[Diagnostic]) -> list[Problem]:
    return [(d.line, d.column, d.path, d.message) for d in diagnostics]

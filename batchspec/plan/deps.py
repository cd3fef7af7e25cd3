"""How a task's wait for other tasks is expressed as Azure Batch task dependencies.

Batch caps the combined length of ``dependsOn.taskIds`` at 64,000 characters as it stores them
(the ids with a separator between each two; longer lists are refused with
``TaskDependencyListTooLong``), so a merge after 10,000 tasks cannot list them all. The three
forms, in order of preference:

* ``taskIds``: the ids themselves, when they fit;
* ``taskIdRanges``: when every id is a whole number (``task.id: "<<index>>"``), as ranges;
* ``gates``: otherwise a few gate tasks (a command that does nothing) each wait for a slice
  of the ids that fits, and the task waits for the gates (in as many levels as needed).

The plan shows which form each stage uses (``batchspec plan``); the Azure backend builds it.
Locally a task simply starts when the tasks it waits for have succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import PlannedTask

#: The service's limit on the combined length of dependsOn.taskIds.
MAX_TASK_IDS_CHARS = 64_000
#: What a gate task runs: nothing, successfully.
GATE_COMMAND = "true"


@dataclass(frozen=True)
class Gate:
    """A task that only waits: for ``task_ids`` (and ``ranges``)."""

    id: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Dependencies:
    """What a task's ``dependsOn`` holds, and the gate tasks it needs (added before it)."""

    form: str  # taskIds | taskIdRanges | gates
    task_ids: tuple[str, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()
    gates: tuple[Gate, ...] = ()
    count: int = 0  # how many tasks it waits for, in all
    chars: int = 0  # their ids' combined length

    def describe(self) -> str:
        if self.form == "taskIdRanges":
            return f"dependsOn.taskIdRanges ({len(self.ranges)} range(s) over {self.count:,} task ids)"
        if self.form == "gates":
            return (f"{len(self.gates)} gate task(s) that each wait for up to {MAX_TASK_IDS_CHARS:,} characters of "
                    f"task ids (dependsOn.taskIds would need {self.chars:,}, Batch allows {MAX_TASK_IDS_CHARS:,})")
        return f"dependsOn.taskIds ({self.count:,} id(s), {self.chars:,} of {MAX_TASK_IDS_CHARS:,} characters)"


def _is_index(task_id: str) -> bool:
    return task_id.isascii() and task_id.isdigit() and str(int(task_id)) == task_id


def _ranges(ids: Sequence[str]) -> tuple[tuple[int, int], ...]:
    numbers = sorted(int(i) for i in ids)
    ranges: list[tuple[int, int]] = []
    for n in numbers:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        elif not ranges or n > ranges[-1][1]:
            ranges.append((n, n))
    return tuple(ranges)


def stored_length(ids: Sequence[str]) -> int:
    """How long the service counts a dependsOn.taskIds list: the ids and a separator between each two."""
    return sum(len(i) for i in ids) + max(0, len(ids) - 1)


def _slices(ids: Sequence[str], limit: int) -> list[tuple[str, ...]]:
    """``ids`` in consecutive slices of at most ``limit`` characters each, as stored."""
    slices: list[tuple[str, ...]] = []
    current: list[str] = []
    size = -1  # no separator before the first id
    for task_id in ids:
        if current and size + 1 + len(task_id) > limit:
            slices.append(tuple(current))
            current, size = [], -1
        current.append(task_id)
        size += 1 + len(task_id)
    if current:
        slices.append(tuple(current))
    return slices


def express(task_id: str, depends_on: Sequence[str], limit: int = MAX_TASK_IDS_CHARS) -> Dependencies:
    """The Batch form of "``task_id`` waits for ``depends_on``"."""
    count, chars = len(depends_on), sum(len(i) for i in depends_on)
    if stored_length(depends_on) <= limit:
        return Dependencies("taskIds", tuple(depends_on), count=count, chars=chars)
    if all(_is_index(i) for i in depends_on):
        return Dependencies("taskIdRanges", ranges=_ranges(depends_on), count=count, chars=chars)
    gates: list[Gate] = []
    layer: Sequence[str] = depends_on
    prefix = f"{task_id[:44]}-gate-"
    while stored_length(layer) > limit:
        level = [Gate(f"{prefix}{len(gates) + n}", part) for n, part in enumerate(_slices(layer, limit))]
        gates.extend(level)
        layer = [g.id for g in level]
    return Dependencies("gates", tuple(layer), gates=tuple(gates), count=count, chars=chars)


def longest(tasks: Iterable[PlannedTask]) -> Dependencies | None:
    """How the stage's longest wait is expressed (None when its tasks wait for nothing)."""
    task = max(tasks, key=lambda t: len(t.depends_on), default=None)
    if task is None or not task.depends_on:
        return None
    return express(task.id, task.depends_on)

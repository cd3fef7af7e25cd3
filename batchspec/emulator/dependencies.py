"""Task dependencies and exit conditions, as the Batch service applies them.

A job with ``usesTaskDependencies`` may hold tasks with ``dependsOn`` (``taskIds`` and
``taskIdRanges``). Such a task stays ``active`` (and counts as active) until every task it depends
on has completed with a dependency action of ``satisfy``; a dependency that completes with
``block`` keeps it waiting for good, as on the service (Batch has no cancellation of dependent
tasks). The action comes from the completed task's ``exitConditions``: the entry for its exit code
(``exitCodes``, then ``exitCodeRanges``), ``preProcessingError`` when it never ran,
``fileUploadError`` when its outputs failed to upload (an exit code entry takes precedence), then
``default``; without an entry, ``satisfy`` for exit code 0 and ``block`` for anything else.

Ranges select only tasks whose ids are integers (leading zeros ignored: ``4``, ``04`` and ``004``
are all task 4 and the first to complete satisfies it), and only tasks that exist. Bookkeeping is
incremental (a count of unmet dependencies per waiting task), so a merge task depending on 10,000
others costs O(1) per completed task, not a rescan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchspec.emulator.wire import Json

#: The service's limit on the combined length of ``dependsOn.taskIds``.
MAX_TASK_IDS_LENGTH = 64_000

#: failureInfo codes of a task that failed before its command ran (resource files, launch).
PRE_PROCESSING_CODES = frozenset(
    {
        "BlobNotFound",
        "BlobAccessDenied",
        "BlobDownloadMiscError",
        "BlobDownloadTimedOut",
        "ResourceDirectoryCreateFailed",
        "ResourceFileCreateFailed",
        "CommandLaunchFailed",
        "CommandProgramNotFound",
        "ContainerPoolNotSupported",
        "ContainerImagePullFailed",
    }
)
#: failureInfo codes of a task whose output files failed to upload.
FILE_UPLOAD_CODES = frozenset({"FileUploadMiscError", "FileUploadAccessDenied", "FileUploadContainerNotFound"})


def int_id(task_id: str) -> int | None:
    """The integer a task id stands for in a range dependency, or None."""
    return int(task_id) if task_id.isdigit() else None


@dataclass(frozen=True)
class ExitOptions:
    dependency_action: str  # satisfy | block
    job_action: str  # none | disable | terminate


def exit_options(body: Mapping[str, Any]) -> ExitOptions:
    """What a completed task's exit means for its dependents and its job (service defaults)."""
    info = body.get("executionInfo") or {}
    code = info.get("exitCode")
    failure = info.get("failureInfo") or {}
    conditions = body.get("exitConditions") or {}
    chosen: Mapping[str, Any] | None = None
    if code is not None:
        chosen = _by_exit_code(conditions, int(code))
    failure_code = str(failure.get("code") or "")
    if chosen is None and failure_code in FILE_UPLOAD_CODES:
        chosen = conditions.get("fileUploadError")
    if chosen is None and failure_code in PRE_PROCESSING_CODES:
        chosen = conditions.get("preProcessingError")
    if chosen is None:
        chosen = conditions.get("default")
    chosen = chosen or {}
    ok = code == 0 and not failure
    return ExitOptions(
        str(chosen.get("dependencyAction") or ("satisfy" if ok else "block")).lower(),
        str(chosen.get("jobAction") or ("none" if ok else "terminate")).lower(),
    )


def _by_exit_code(conditions: Mapping[str, Any], code: int) -> Mapping[str, Any] | None:
    for entry in conditions.get("exitCodes") or []:
        if isinstance(entry, dict) and entry.get("code") == code:
            return dict(entry.get("exitOptions") or {})
    for entry in conditions.get("exitCodeRanges") or []:
        if isinstance(entry, dict) and int(entry.get("start", 0)) <= code <= int(entry.get("end", -1)):
            return dict(entry.get("exitOptions") or {})
    return None


@dataclass
class _Waiter:
    ids: frozenset[str]  # lower-cased task ids
    ranges: tuple[tuple[int, int], ...]
    unmet: int = 0

    def in_range(self, number: int) -> bool:
        return any(start <= number <= end for start, end in self.ranges)


@dataclass
class Dependencies:
    """The dependency state of one job's tasks (keys are lower-cased task ids)."""

    satisfied: set[str] = field(default_factory=set)
    satisfied_ints: set[int] = field(default_factory=set)
    present_ints: dict[int, int] = field(default_factory=dict)
    waiters: dict[str, _Waiter] = field(default_factory=dict)
    by_id: dict[str, set[str]] = field(default_factory=dict)  # dependency -> waiting tasks
    range_waiters: set[str] = field(default_factory=set)

    def add(self, key: str, depends_on: Mapping[str, Any] | None) -> bool:
        """Register a new task; True when it may run now (no unmet dependency)."""
        number = int_id(key)
        if number is not None:
            if self.present_ints.get(number, 0) == 0 and number not in self.satisfied_ints:
                for waiter_key in self.range_waiters:
                    if self.waiters[waiter_key].in_range(number):
                        self.waiters[waiter_key].unmet += 1
            self.present_ints[number] = self.present_ints.get(number, 0) + 1
        if not depends_on:
            return True
        ids = frozenset(str(t).lower() for t in depends_on.get("taskIds") or [])
        ranges = tuple((int(r["start"]), int(r["end"])) for r in depends_on.get("taskIdRanges") or [])
        waiter = _Waiter(ids, ranges)
        for dep in ids:
            if dep not in self.satisfied:
                waiter.unmet += 1
                self.by_id.setdefault(dep, set()).add(key)
        if ranges:
            waiter.unmet += sum(
                1 for n in self._ints_in(ranges) if n not in self.satisfied_ints and self.present_ints.get(n)
            )
            self.range_waiters.add(key)
        if waiter.unmet == 0:
            self.range_waiters.discard(key)
            return True
        self.waiters[key] = waiter
        return False

    def _ints_in(self, ranges: Iterable[tuple[int, int]]) -> set[int]:
        out: set[int] = set()
        for start, end in ranges:
            if end - start + 1 <= len(self.present_ints):
                out.update(n for n in range(start, end + 1) if n in self.present_ints)
            else:
                out.update(n for n in self.present_ints if start <= n <= end)
        return out

    def completed(self, key: str, action: str) -> list[str]:
        """A task completed with ``action``; returns the waiting tasks that may run now."""
        if action != "satisfy":
            return []
        released: list[str] = []
        if key not in self.satisfied:
            self.satisfied.add(key)
            for waiter_key in self.by_id.pop(key, set()):
                released += self._met(waiter_key)
        number = int_id(key)
        if number is not None and number not in self.satisfied_ints:
            self.satisfied_ints.add(number)
            for waiter_key in list(self.range_waiters):
                waiter = self.waiters.get(waiter_key)
                if waiter is not None and waiter.in_range(number):
                    released += self._met(waiter_key)
        return released

    def _met(self, waiter_key: str) -> list[str]:
        waiter = self.waiters.get(waiter_key)
        if waiter is None:
            return []
        waiter.unmet -= 1
        if waiter.unmet > 0:
            return []
        del self.waiters[waiter_key]
        self.range_waiters.discard(waiter_key)
        return [waiter_key]

    def reactivated(self, key: str) -> None:
        """A completed task runs again: it no longer satisfies tasks that still wait."""
        if key in self.satisfied:
            self.satisfied.discard(key)
            for waiter_key, waiter in self.waiters.items():
                if key in waiter.ids:
                    waiter.unmet += 1
                    self.by_id.setdefault(key, set()).add(waiter_key)

    def removed(self, key: str) -> list[str]:
        """A task was deleted; returns waiting tasks that may run now (a range no longer holds it)."""
        self.waiters.pop(key, None)
        self.range_waiters.discard(key)
        for waiting in self.by_id.values():
            waiting.discard(key)
        number = int_id(key)
        if number is None or number not in self.present_ints:
            return []
        self.present_ints[number] -= 1
        if self.present_ints[number] > 0:
            return []
        del self.present_ints[number]
        if number in self.satisfied_ints:
            return []
        released: list[str] = []
        for waiter_key in list(self.range_waiters):
            waiter = self.waiters.get(waiter_key)
            if waiter is not None and waiter.in_range(number):
                released += self._met(waiter_key)
        return released

    def waiting(self, key: str) -> bool:
        return key in self.waiters


def depends_on_problem(spec: Json) -> tuple[str, str] | None:
    """(error code, property) when a task's ``dependsOn`` cannot be accepted, else None."""
    ids = spec.get("taskIds") or []
    if sum(len(str(t)) for t in ids) + max(0, len(ids) - 1) > MAX_TASK_IDS_LENGTH:
        return "TaskDependencyListTooLong", "taskIds"
    return None

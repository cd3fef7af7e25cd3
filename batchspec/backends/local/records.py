"""The local backend's record of attempts, and reading a job's run record from any process.

Two tables sit beside :mod:`.state`'s ``tasks`` table in the job's ``state.db``: ``runs`` (one
row per ``batchspec run``: when, how many slots) and ``attempts`` (one row per attempt: slot,
start, end, outcome, exit code, and where its output starts and ends in the task's
``stdout.txt``/``stderr.txt``, which every attempt appends to). A ``state.db`` written before
these tables existed gets them on the next run, filled from its ``tasks`` rows (one attempt
each, times from the task's duration, slot unknown).

:func:`read_record` reads the database without the run's lock, so ``batchspec status`` works
from another terminal while a run is going; whether one is going is the lock itself (held
while a run lives, released by the kernel when it dies).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ...observe.records import Attempt, JobRecord, RunRecord, TaskRecord
from ...plan import Plan
from ...runner import TaskPaths
from .state import RunState

_RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    started REAL PRIMARY KEY,       -- time.time() when the run submitted its tasks
    slots INTEGER NOT NULL,
    pid INTEGER
)
"""
_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL,
    run REAL NOT NULL,              -- runs.started of the run that made it
    number INTEGER NOT NULL,        -- 1-based within that run
    slot TEXT,                      -- NULL for attempts migrated from an older state.db
    queued REAL,
    started REAL,
    ended REAL,                     -- NULL while it runs
    outcome TEXT NOT NULL,          -- running | retried | succeeded | failed | interrupted
    exit_code INTEGER,
    reason TEXT,
    stdout_from INTEGER, stdout_to INTEGER,   -- byte range of this attempt in stdout.txt
    stderr_from INTEGER, stderr_to INTEGER,
    input_bytes INTEGER,
    output_bytes INTEGER,
    PRIMARY KEY (task_id, run, number)
)
"""
#: One attempt per finished task of a state.db from before attempts were recorded.
_LEGACY = """
SELECT id, updated - COALESCE(seconds, 0), MAX(attempts, 1), NULL, NULL, updated - COALESCE(seconds, 0),
       updated, state, exit_code, reason, NULL, NULL, NULL, NULL, NULL, NULL
FROM tasks WHERE state != 'running'
"""
_COLUMNS = ("task_id, run, number, slot, queued, started, ended, outcome, exit_code, reason, "
            "stdout_from, stdout_to, stderr_from, stderr_to, input_bytes, output_bytes")


@dataclass(frozen=True)
class AttemptEvent:
    """One attempt starting (``ended`` None, outcome ``running``) or ending, sent by a slot's
    worker thread to the thread that owns the database."""

    task_id: str
    number: int
    slot: str
    started: float
    stdout_from: int
    stderr_from: int
    input_bytes: int
    ended: float | None = None
    outcome: str = "running"
    exit_code: int | None = None
    reason: str | None = None
    stdout_to: int | None = None
    stderr_to: int | None = None


def log_sizes(paths: TaskPaths) -> tuple[int, int]:
    """Current sizes of a task's stdout.txt and stderr.txt (0 when absent)."""
    sizes = []
    for path in (paths.stdout, paths.stderr):
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(0)
    return sizes[0], sizes[1]


def file_bytes(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


class AttemptLog:
    """Writes attempts into the run state's database, in the same commit groups as its tasks."""

    def __init__(self, state: RunState, run_started: float, slots: int) -> None:
        self.state = state
        self.run = run_started
        db = state.db
        fresh = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='attempts'").fetchone() is None
        db.execute(_RUNS)
        db.execute(_ATTEMPTS)
        if fresh:  # migrate a state.db from before attempts: one attempt per finished task
            db.execute(f"INSERT OR IGNORE INTO attempts ({_COLUMNS}) {_LEGACY}")
        db.execute("INSERT OR REPLACE INTO runs (started, slots, pid) VALUES (?, ?, ?)",
                   (run_started, slots, os.getpid()))

    def save(self, event: AttemptEvent) -> None:
        self.state.write(
            f"INSERT OR REPLACE INTO attempts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (event.task_id, self.run, event.number, event.slot, self.run, event.started, event.ended, event.outcome,
             event.exit_code, event.reason, event.stdout_from, event.stdout_to, event.stderr_from, event.stderr_to,
             event.input_bytes),
        )

    def finish(self, task_id: str, state: str, reason: str | None, output_bytes: int | None) -> None:
        """The task's last attempt in this run takes the task's final outcome (a missing output
        fails a task whose process exited 0)."""
        self.state.write(
            "UPDATE attempts SET outcome = ?, reason = COALESCE(?, reason), output_bytes = ? "
            "WHERE task_id = ? AND run = ? AND number = "
            "(SELECT MAX(number) FROM attempts WHERE task_id = ? AND run = ?)",
            (state, reason, output_bytes, task_id, self.run, task_id, self.run),
        )


# --- reading, from any process --------------------------------------------------------------------


def run_in_progress(job_dir: Path) -> bool:
    """Is a run holding this job's lock? (Read from /proc/locks, so asking never takes the lock.)"""
    try:
        st = (job_dir / ".lock").stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF" ("->" marks a waiter)
        fields = [f for f in line.split() if f != "->"]
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device:
            return True
    return False


def _connect(job_dir: Path) -> sqlite3.Connection | None:
    db_path = job_dir / "state.db"
    if not db_path.is_file():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    db.execute("PRAGMA query_only = ON")
    if not _has_table(db, "tasks"):  # a run that is starting has created the file, not its tables yet
        db.close()
        return None
    return db


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


@dataclass(frozen=True)
class _Row:
    task_id: str
    run: float
    number: int
    slot: str | None
    queued: float | None
    started: float | None
    ended: float | None
    outcome: str
    exit_code: int | None
    reason: str | None
    stdout_from: int | None
    stdout_to: int | None
    stderr_from: int | None
    stderr_to: int | None
    input_bytes: int | None
    output_bytes: int | None


def _latest_attempts(db: sqlite3.Connection) -> dict[str, list[_Row]]:
    """Each task's attempts in the last run that ran it."""
    source = f"SELECT {_COLUMNS} FROM attempts" if _has_table(db, "attempts") else _LEGACY
    by_task: dict[str, list[_Row]] = {}
    for row in db.execute(source):
        r = _Row(*row)
        rows = by_task.setdefault(r.task_id, [])
        if rows and rows[0].run != r.run:
            if r.run < rows[0].run:
                continue
            rows.clear()
        rows.append(r)
    for rows in by_task.values():
        rows.sort(key=lambda r: r.number)
    return by_task


def read_record(plan: Plan, job_dir: Path, logs: str) -> RunRecord | None:
    """The job's record from its state.db; None when it never ran here."""
    db = _connect(job_dir)
    if db is None:
        return None
    if not _has_table(db, "tasks"):  # a run that is creating its record this very moment
        db.close()
        return None
    active = run_in_progress(job_dir)
    try:
        states = {tid: (state, exit_code, reason) for tid, state, exit_code, reason
                  in db.execute("SELECT id, state, exit_code, reason FROM tasks")}
        attempts = _latest_attempts(db)
        slots = None
        if _has_table(db, "runs"):
            row = db.execute("SELECT slots FROM runs ORDER BY started DESC LIMIT 1").fetchone()
            slots = row[0] if row else None
    finally:
        db.close()
    tasks = []
    for planned in plan.tasks:
        rows = attempts.get(planned.id, [])
        state, exit_code, reason = states.get(planned.id, ("waiting", None, None))
        if state == "running" and not active:
            state = "interrupted"  # a killed run left it marked running
        if state == "interrupted" and active:
            state = "waiting"
        if state not in ("running", "succeeded", "failed", "interrupted"):
            state = "waiting"
        record_attempts = tuple(_attempt(r, active) for r in rows)
        retries = sum(1 for a in record_attempts if a.outcome == "retried")
        last = rows[-1] if rows else None
        tasks.append(TaskRecord(
            id=planned.id, state=state, attempts=record_attempts, queued=last.queued if last else None,
            exit_code=exit_code if exit_code is not None else (last.exit_code if last else None),
            reason=reason, retries=retries, input_bytes=last.input_bytes if last else None,
            output_bytes=last.output_bytes if last else None,
        ))
    job = JobRecord(plan.job_id, "running" if active else "idle", len(plan.tasks), tuple(tasks))
    return RunRecord(spec=plan.spec_path, name=plan.name, backend="local", jobs=(job,), active=active,
                     observed=time.time(), logs=logs, slots=slots)


def _attempt(row: _Row, active: bool) -> Attempt:
    outcome = row.outcome
    if outcome == "running" and not active:
        outcome = "interrupted"
    return Attempt(number=row.number, outcome=outcome, where=row.slot, start=row.started,
                   end=row.ended if outcome != "running" else None, exit_code=row.exit_code, reason=row.reason)


@dataclass(frozen=True)
class LogSlice:
    """Where one attempt's output lies in a task's log file."""

    start: int
    end: int | None  # None: to the end of the file (the attempt still runs, or bounds unknown)
    number: int | None
    attempts: int
    live: bool


def log_slice(job_dir: Path, task_id: str, name: str, attempt: int | None) -> LogSlice | None:
    """The byte range of ``attempt`` (default the last) in the task's ``name`` log; None when the
    task has no recorded attempt. Raises LookupError for an attempt that does not exist."""
    db = _connect(job_dir)
    if db is None:
        return None
    try:
        rows = _latest_attempts(db).get(task_id, [])
    finally:
        db.close()
    if not rows:
        return None
    active = run_in_progress(job_dir)
    chosen = rows[-1] if attempt is None else next((r for r in rows if r.number == attempt), None)
    if chosen is None:
        raise LookupError(f"task {task_id} has attempts {rows[0].number}-{rows[-1].number} in its last run")
    start, end = ((chosen.stdout_from, chosen.stdout_to) if name == "stdout"
                  else (chosen.stderr_from, chosen.stderr_to))
    live = active and chosen.outcome == "running"
    if start is None:  # migrated from an older state.db: the whole file
        return LogSlice(0, None, chosen.number, len(rows), live)
    return LogSlice(start, None if live else end, chosen.number, len(rows), live)

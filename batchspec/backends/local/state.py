"""Durable per-job run state for the local backend (SQLite in the job's run directory).

It records each task's last state, its outputs, the fingerprint of what produced them and,
while it runs, its process group, so that a rerun skips finished work whose fingerprint is
unchanged and a runner killed with SIGKILL leaves nothing that blocks the next run: the lock is
an ``flock`` (released by the kernel when the process dies).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...errors import BackendError
from ...runner import kill_stale_group

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,            -- running | succeeded | failed | interrupted
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    seconds REAL,
    reason TEXT,
    outputs TEXT,                   -- JSON list of paths relative to the download directory
    pgid INTEGER,                   -- while running: the task's process group
    pgid_ticks INTEGER,             -- its leader's start time, to never kill a recycled pid
    updated REAL NOT NULL
)
"""
#: Columns added since the first version, added to an existing state.db when missing.
_ADDED_COLUMNS = (
    ("fingerprint", "TEXT"),  # of the task that produced the recorded state (see plan.fingerprint)
)


@dataclass(frozen=True)
class TaskRecord:
    id: str
    state: str
    exit_code: int | None
    attempts: int
    outputs: tuple[str, ...]
    fingerprint: str | None = None


class RunState:
    """The state of one job's local run. Not thread-safe: only the engine's thread uses it."""

    def __init__(self, job_dir: Path) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = (job_dir / ".lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise BackendError(
                f"job directory {job_dir} is in use by a running batchspec (pid {holder})",
                "wait for that run to finish, or stop it; a killed run releases the lock itself",
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        self.db = sqlite3.connect(job_dir / "state.db", isolation_level=None)
        # WAL + NORMAL: a commit survives the process being killed, without an fsync each.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        have = {row[1] for row in self.db.execute("PRAGMA table_info(tasks)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in have:
                self.db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
        self._in_transaction = False

    def commit(self) -> None:
        """Make what was recorded durable. The run commits whenever it is about to wait for the
        next task event, so a busy run groups many records into one commit."""
        if self._in_transaction:
            self.db.execute("COMMIT")
            self._in_transaction = False

    def write(self, sql: str, args: tuple[object, ...]) -> None:
        """A write to a companion table (:mod:`.records`), committed with this state's group."""
        self._write(sql, args)

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        if not self._in_transaction:
            self.db.execute("BEGIN")
            self._in_transaction = True
        self.db.execute(sql, args)

    def close(self) -> None:
        self.commit()
        self.db.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def records(self) -> Iterator[TaskRecord]:
        rows = self.db.execute("SELECT id, state, exit_code, attempts, outputs, fingerprint FROM tasks")
        for task_id, state, exit_code, attempts, outputs, fingerprint in rows:
            yield TaskRecord(task_id, state, exit_code, attempts, tuple(json.loads(outputs or "[]")), fingerprint)

    def mark_interrupted(self) -> int:
        """Tasks a dead runner left marked running become interrupted; returns how many. (Their
        processes stop by themselves: see :class:`batchspec.runner.Watch`.)"""
        return self.db.execute("UPDATE tasks SET state = 'interrupted', pgid = NULL WHERE state = 'running'").rowcount

    def kill_stale(self) -> int:
        """Kill process groups of tasks a dead runner left running; returns how many."""
        killed = 0
        rows = self.db.execute("SELECT pgid, pgid_ticks FROM tasks WHERE state = 'running' AND pgid IS NOT NULL")
        for pgid, ticks in rows.fetchall():
            killed += kill_stale_group(pgid, ticks)
        self.mark_interrupted()
        return killed

    def reset(self) -> None:
        self.db.execute("DELETE FROM tasks")

    def started(self, task_id: str, pgid: int, pgid_ticks: int | None) -> None:
        self._write(
            "INSERT INTO tasks (id, state, pgid, pgid_ticks, updated) VALUES (?, 'running', ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state='running', pgid=excluded.pgid, pgid_ticks=excluded.pgid_ticks, "
            "updated=excluded.updated",
            (task_id, pgid, pgid_ticks, time.time()),
        )

    def finished(self, task_id: str, state: str, exit_code: int | None, attempts: int, seconds: float,
                 reason: str | None, outputs: list[str], fingerprint: str | None = None) -> None:
        self._write(
            "INSERT INTO tasks (id, state, exit_code, attempts, seconds, reason, outputs, pgid, pgid_ticks, updated, "
            "fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state=excluded.state, exit_code=excluded.exit_code, "
            "attempts=excluded.attempts, seconds=excluded.seconds, reason=excluded.reason, "
            "outputs=excluded.outputs, pgid=NULL, pgid_ticks=NULL, updated=excluded.updated, "
            "fingerprint=excluded.fingerprint",
            (task_id, state, exit_code, attempts, seconds, reason, json.dumps(outputs), time.time(), fingerprint),
        )

"""Run one task process the way an Azure Batch Linux node does.

This is the single task-running code path: the local backend and the emulator both use it, so a
spec that works locally runs the same way on a Batch node. It owns three things:

* :func:`node_command_line`: how a rendered shell command becomes a Batch ``commandLine``;
* :func:`split_command_line`: how a node turns a ``commandLine`` into argv (no shell);
* :class:`TaskProcess`: one attempt of a task, in its own process group, with stdout/stderr in
  files, a wall-clock limit and a clean way to stop the whole group from another thread.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: The shell the task command runs under on a node (Batch runs commandLine without a shell).
NODE_SHELL = "/bin/bash"

#: Seconds between SIGTERM and SIGKILL when a task's process group is stopped.
KILL_GRACE_SECONDS = 3.0


def node_command_line(command: str) -> str:
    """Wrap a rendered shell command as the ``commandLine`` of a Batch task.

    Batch does not run commandLine under a shell, so shell syntax (pipes, ``&&``, quoting,
    variables) needs an explicit shell. Both backends send exactly this string.
    """
    return f"{NODE_SHELL} -c {shlex.quote(command)}"


def split_command_line(command_line: str) -> list[str]:
    """Split a ``commandLine`` into argv as a Linux Batch node does (POSIX quoting, no shell)."""
    return shlex.split(command_line)


@dataclass(frozen=True)
class TaskPaths:
    """The directory of one task, laid out as on a Batch node."""

    root: Path  # AZ_BATCH_TASK_DIR

    @property
    def wd(self) -> Path:  # AZ_BATCH_TASK_WORKING_DIR
        return self.root / "wd"

    @property
    def stdout(self) -> Path:
        return self.root / "stdout.txt"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr.txt"

    def create(self) -> TaskPaths:
        self.wd.mkdir(parents=True, exist_ok=True)
        return self


def batch_environment(
    *,
    paths: TaskPaths,
    job_id: str,
    task_id: str,
    pool_id: str,
    node_id: str,
    node_root: Path,
    account: str = "local",
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a Batch node gives a task: ``base`` (default: the caller's whole
    environment) plus ``AZ_BATCH_*``, then ``extra`` (the task's own settings)."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AZ_BATCH_ACCOUNT_NAME": account,
            "AZ_BATCH_POOL_ID": pool_id,
            "AZ_BATCH_NODE_ID": node_id,
            "AZ_BATCH_NODE_ROOT_DIR": str(node_root),
            "AZ_BATCH_NODE_SHARED_DIR": str(node_root / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(node_root / "startup"),
            "AZ_BATCH_JOB_ID": job_id,
            "AZ_BATCH_TASK_ID": task_id,
            "AZ_BATCH_TASK_DIR": str(paths.root),
            "AZ_BATCH_TASK_WORKING_DIR": str(paths.wd),
        }
    )
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class ProcessResult:
    """How one attempt ended."""

    exit_code: int | None  # None when the program never started
    timed_out: bool
    stopped: bool  # stopped from outside (interrupt, preemption, terminate)
    start: float  # time.time()
    end: float
    error: str | None = None  # why the program could not start

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stopped


class TaskProcess:
    """One attempt of a task: ``argv`` run in ``paths.wd`` in a new process group.

    stdout and stderr go to ``stdout.txt`` and ``stderr.txt`` in the task directory (appended, so
    retries keep earlier attempts' output, as on a node). :meth:`stop` may be called from any
    thread and kills the whole group, including grandchildren such as ffmpeg under bash.
    """

    def __init__(self, argv: list[str], paths: TaskPaths, env: Mapping[str, str]) -> None:
        self.argv = argv
        self.paths = paths
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def run(self, timeout: float | None = None, on_start: Callable[[int], None] | None = None) -> ProcessResult:
        """Start the process and wait for it; kill its group when ``timeout`` seconds pass.

        ``on_start(pid)`` is called once the process exists (its pid is also its group id).
        """
        start = time.time()
        try:
            with self.paths.stdout.open("ab") as out, self.paths.stderr.open("ab") as err, self._lock:
                if self._stopped.is_set():
                    return ProcessResult(None, False, True, start, time.time())
                self._proc = subprocess.Popen(
                    self.argv,
                    cwd=self.paths.wd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group, so we can kill the whole tree
                    close_fds=True,
                )
        except OSError as exc:  # program missing or not executable
            msg = f"{self.argv[0] if self.argv else '<empty command>'}: {exc.strerror or exc}"
            with contextlib.suppress(OSError), self.paths.stderr.open("a") as err_text:
                err_text.write(msg + "\n")
            return ProcessResult(None, False, False, start, time.time(), error=msg)
        if on_start is not None:
            on_start(self._proc.pid)
        timed_out = False
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill_group()
            code = self._proc.wait()
        # A task's leftover background children must not outlive it (as on a node).
        _signal_group(self._proc.pid, signal.SIGKILL)
        # Killed by a signal: report it as shells and Batch nodes do, 128 + the signal number.
        exit_code = code if code >= 0 else 128 - code
        return ProcessResult(exit_code, timed_out, self._stopped.is_set(), start, time.time())

    def stop(self) -> None:
        """Stop the attempt from any thread without blocking: SIGTERM the group now, SIGKILL
        it after a grace period if it is still there. :meth:`run` then returns ``stopped``."""
        with self._lock:
            self._stopped.set()
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
        _signal_group(proc.pid, signal.SIGTERM)
        killer = threading.Timer(KILL_GRACE_SECONDS, _kill_if_running, (proc,))
        killer.daemon = True
        killer.start()

    def _kill_group(self) -> None:
        assert self._proc is not None
        _signal_group(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(self._proc.pid, signal.SIGKILL)


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)


def tail_lines(path: Path, count: int = 20, max_bytes: int = 64 * 1024) -> tuple[str, ...]:
    """The last ``count`` lines of a text file (reading at most its last ``max_bytes``)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ()
    return last_lines(data, count)


def last_lines(data: bytes, count: int = 20) -> tuple[str, ...]:
    """The last ``count`` lines of a log's bytes (undecodable bytes replaced)."""
    return tuple(data.decode("utf-8", "replace").splitlines()[-count:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_stale_group(pgid: int, start_ticks: int | None) -> bool:
    """Kill a task process group left behind by a runner that died (SIGKILL, power loss).

    ``start_ticks`` is the leader's start time recorded when it started (see
    :func:`process_start_ticks`); a group is only killed when its leader is still that same
    process, so a recycled pid is never touched. Returns True when something was killed.
    """
    if start_ticks is None or process_start_ticks(pgid) != start_ticks:
        return False
    _signal_group(pgid, signal.SIGKILL)
    return True


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None

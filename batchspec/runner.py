"""Run one task process the way an Azure Batch Linux node does.

This is the single task-running code path: the local backend and the emulator both use it, so a
spec that works locally runs the same way on a Batch node. It owns three things:

* :func:`node_command_line`: how a rendered shell command becomes a Batch ``commandLine``;
* :func:`split_command_line`: how a node turns a ``commandLine`` into argv (no shell);
* :class:`TaskProcess`: one attempt of a task, in its own process group, with stdout/stderr in
  files, a wall-clock limit and a clean way to stop the whole group from another thread;
  optionally *watched*: started by the run's :class:`Supervisor`
  (:mod:`batchspec.supervisor`), which writes its exit status to a file the moment it ends (so
  a runner killed right then loses nothing) and stops it when the runner dies;
* :func:`batch_environment`: the clean environment a node gives a task.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
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

    @property
    def status(self) -> Path:  # the last watched attempt's exit status (see read_status)
        return self.root / ".batchspec-exit"

    def create(self) -> TaskPaths:
        self.wd.mkdir(parents=True, exist_ok=True)
        return self


#: What a task inherits from the runner's environment, as a node's task user has them: never
#: the runner's credentials (AZURE_*), tokens or anything else it happens to have.
INHERITED = ("HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC",
             "TZ", "TMPDIR")


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
    path: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a Batch node gives a task: ``base`` (default: the locale and home of a
    user from the runner's environment, never its credentials or anything else), ``PATH``
    (``path``; default the base's, else the runner's), the ``AZ_BATCH_*`` variables, then
    ``extra`` (the task's own settings)."""
    env = dict(base) if base is not None else {name: os.environ[name] for name in INHERITED if name in os.environ}
    if path is not None or "PATH" not in env:
        env["PATH"] = path if path is not None else os.environ.get("PATH", os.defpath)
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
    failure_code: str | None = None  # Batch's failureInfo code for it, when not CommandProgramNotFound

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stopped


class Supervisor:
    """The run's task supervisor (:mod:`batchspec.supervisor`), a process of its own: it starts
    watched attempts, and survives this process just long enough to stop them if it dies.

    One process for the whole run, so an attempt costs no more than an unwatched one (forking
    this interpreter per task would cost milliseconds of copy-on-write faults each).
    """

    def __init__(self, lock: Path) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(__file__).with_name("supervisor.py")), str(lock)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, close_fds=True,
        )
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, _Supervised] = {}
        self._reader = threading.Thread(target=self._read, name="supervisor", daemon=True)
        self._reader.start()

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], paths: TaskPaths, watch: Watch) -> _Supervised:
        """Start an attempt; raises OSError (as Popen does) when it cannot start."""
        program = argv[0] if argv else ""
        if "/" not in program:  # looked up in the task's PATH, as Popen does
            found = shutil.which(program, path=env.get("PATH", os.defpath)) if program else None
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)
            argv = [found, *argv[1:]]
        with self._lock:
            self._next += 1
            attempt = _Supervised(self._next)
            self._waiting[attempt.request] = attempt
            request = {"id": attempt.request, "argv": argv, "cwd": str(cwd), "env": env, "stdout": str(paths.stdout),
                       "stderr": str(paths.stderr), "status": str(watch.status), "token": watch.token}
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
            except OSError:
                attempt.fail("the task supervisor is gone")
        attempt.started.wait()
        if attempt.error is not None:
            raise OSError(errno.ENOEXEC, attempt.error)
        return attempt

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._lock:
                attempt = self._waiting.get(message["id"])
            if attempt is None:
                continue
            if "pid" in message:
                attempt.pid = message["pid"]
                attempt.started.set()
            elif "error" in message:
                attempt.fail(message["error"])
            else:
                with self._lock:
                    self._waiting.pop(message["id"], None)
                attempt.finish(int(message["exit"]))
        with self._lock:  # the supervisor ended: nothing more will come
            waiting, self._waiting = list(self._waiting.values()), {}
        for attempt in waiting:
            if attempt.pid:  # nobody would see it end: it must not run on unwatched
                _signal_group(attempt.pid, signal.SIGKILL)
            attempt.fail("the task supervisor is gone")

    def close(self) -> None:
        """End the supervisor (after the attempts ended: the end of its input stops any left)."""
        with self._lock:
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        self._proc.wait()
        self._reader.join()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class _Supervised:
    """An attempt the supervisor runs: the part of :class:`subprocess.Popen` TaskProcess uses."""

    def __init__(self, request: int) -> None:
        self.request = request
        self.pid = 0
        self.returncode: int | None = None
        self.error: str | None = None
        self.started = threading.Event()
        self._ended = threading.Event()

    def finish(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def fail(self, error: str) -> None:
        if not self.started.is_set():
            self.error = error
            self.started.set()
        elif self.returncode is None:  # it ran, and nobody can say how it ended
            self.finish(128 + signal.SIGKILL)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("task", timeout or 0)
        assert self.returncode is not None
        return self.returncode


@dataclass(frozen=True)
class Watch:
    """Asks for a watched attempt: started by ``supervisor``, its exit status goes to ``status``
    with ``token``."""

    supervisor: Supervisor
    status: Path
    token: str  # what the attempt ran (the task's fingerprint), to tell its status from others'


def read_status(status: Path) -> tuple[str, int] | None:
    """``(token, exit code)`` a watcher wrote, or None when there is none (or it is torn)."""
    try:
        token, code = status.read_text().split()
        return token, int(code)
    except (OSError, ValueError):
        return None


class TaskProcess:
    """One attempt of a task: ``argv`` run in ``paths.wd`` in a new process group.

    stdout and stderr go to ``stdout.txt`` and ``stderr.txt`` in the task directory (appended, so
    retries keep earlier attempts' output, as on a node). :meth:`stop` may be called from any
    thread and kills the whole group, including grandchildren such as ffmpeg under bash.

    With ``watch``, the run's :class:`Supervisor` starts it, writes its exit status to
    ``watch.status`` as soon as it ends, and stops its group if this process dies first.
    """

    def __init__(self, argv: list[str], paths: TaskPaths, env: Mapping[str, str], watch: Watch | None = None) -> None:
        self.argv = argv
        self.paths = paths
        self.env = dict(env)
        self.watch = watch
        self._proc: subprocess.Popen[bytes] | _Supervised | None = None
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
            with self._lock:
                if self._stopped.is_set():
                    return ProcessResult(None, False, True, start, time.time())
                if self.watch is not None:
                    self._proc = self.watch.supervisor.start(self.argv, self.paths.wd, self.env, self.paths,
                                                             self.watch)
                else:
                    with self.paths.stdout.open("ab") as out, self.paths.stderr.open("ab") as err:
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
            if self.watch is not None and exc.errno == errno.ENOEXEC:
                msg = exc.strerror or msg  # the supervisor's own words
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


def _kill_if_running(proc: subprocess.Popen[bytes] | _Supervised) -> None:
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)


def tail_lines(path: Path, count: int = 20, max_bytes: int = 64 * 1024, start: int = 0) -> tuple[str, ...]:
    """The last ``count`` lines of a text file from byte ``start`` on (one attempt's part of a
    log every attempt appends to), reading at most its last ``max_bytes``."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - max_bytes))
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

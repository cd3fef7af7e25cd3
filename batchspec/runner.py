"""Run one task process the way an Azure Batch Linux node does.

This is the single task-running code path: the local backend and the emulator both use it, so a
spec that works locally runs the same way on a Batch node. It owns three things:

* :func:`node_command_line`: how a rendered shell command becomes a Batch ``commandLine``;
* :func:`split_command_line`: how a node turns a ``commandLine`` into argv (no shell);
* :class:`TaskProcess`: one attempt of a task, in its own process group, with stdout/stderr in
  files, a wall-clock limit and a clean way to stop the whole group from another thread;
  optionally *watched*: a small watcher process leads the group, writes the exit status to a
  file the moment the task ends (so a runner killed right then loses nothing), and stops the
  group when the runner dies (``PR_SET_PDEATHSIG``, or a check of its parent);
* :func:`batch_environment`: the clean environment a node gives a task.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

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
    def watch_lock(self) -> Path:  # held by the watcher of a running attempt (see Watch)
        return self.root / ".batchspec-lock"

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
) -> dict[str, str]:
    """The environment a Batch node gives a task: ``PATH`` (``path``, default the runner's),
    the locale and home of a user, the ``AZ_BATCH_*`` variables and ``extra`` (the task's own
    settings), and nothing else of the runner's environment."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
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

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stopped


@dataclass(frozen=True)
class Watch:
    """Asks for a watched attempt: its exit status goes to ``status`` with ``token``, and its
    watcher holds an ``flock`` on ``lock`` while it lives (see :func:`wait_for_watcher`)."""

    status: Path
    lock: Path
    token: str  # what the attempt ran (the task's fingerprint), to tell its status from others'


def wait_for_watcher(lock: Path) -> bool:
    """Wait until no watcher holds ``lock`` (an attempt a killed runner left is still ending:
    finishing within its grace period, or running to its end where no parent-death signal
    exists). Returns True when it had to wait."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
    finally:
        os.close(fd)  # releases the lock


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

    With ``watch``, the group's leader is a watcher (see :func:`_watcher`) that runs ``argv``,
    writes its exit status to ``watch.status`` as soon as it ends, and stops the group if this
    process dies first.
    """

    def __init__(self, argv: list[str], paths: TaskPaths, env: Mapping[str, str], watch: Watch | None = None) -> None:
        self.argv = argv
        self.paths = paths
        self.env = dict(env)
        self.watch = watch
        self._proc: subprocess.Popen[bytes] | _Watched | None = None
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
                if self.watch is not None:
                    self._proc = _Watched(self.argv, self.paths.wd, self.env, out.fileno(), err.fileno(), self.watch)
                else:
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


def _kill_if_running(proc: subprocess.Popen[bytes] | _Watched) -> None:
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)


class _Watched:
    """A watched attempt, with the part of :class:`subprocess.Popen` that TaskProcess uses.

    The watcher is a fork of this process (no interpreter to start, unlike a helper script), so
    it costs about what starting the task does. It leads the task's process group.
    """

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], out: int, err: int, watch: Watch) -> None:
        program = argv[0] if argv else ""
        if "/" not in program:  # looked up in the task's PATH, as Popen does
            found = shutil.which(program, path=env.get("PATH", os.defpath)) if program else None
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)
            program = found
        with contextlib.suppress(OSError):
            watch.status.unlink()  # an earlier attempt's
        prctl = _prctl()  # resolved here: the child only calls it
        runner = os.getpid()
        with warnings.catch_warnings():
            # Python 3.12 warns that fork() in a threaded process may deadlock the child; the
            # child only makes system calls (no locks another thread may hold) and then execs.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            _watcher(program, argv, str(cwd), env, out, err, watch, runner, prctl)  # never returns
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            code = self._reap(0)
            assert code is not None
            return code
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while (code := self._reap(os.WNOHANG)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired("task", timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return code

    def _reap(self, flags: int) -> int | None:
        # As Popen does: a blocking wait holds the lock; a poll meanwhile does not wait for it.
        if not self._lock.acquire(blocking=not flags & os.WNOHANG):
            return None
        try:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flags)
                except ChildProcessError:
                    return self.returncode
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        finally:
            self._lock.release()


def _prctl() -> Callable[[int, int], int] | None:
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


_PR_SET_PDEATHSIG = 1


def _watcher(program: str, argv: list[str], cwd: str, env: dict[str, str], out: int, err: int, watch: Watch,
             runner: int, prctl: Callable[[int, int], int] | None) -> NoReturn:
    """The forked watcher: lead a new process group, run the task in it, write its exit status,
    exit with the same code. If the runner dies first, stop the group: SIGTERM, then SIGKILL
    after the grace period (a task that finishes within it still gets its status written).

    Runs in a child of a threaded process: only system calls, never anything that takes a lock.
    """
    code = 126
    try:
        os.setsid()
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.dup2(err, 2)
        os.dup2(out, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(3, 65536)  # the runner's files (its lock, its database) are not the task's
        lock = os.open(watch.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until this watcher exits
        orphaned = False

        def runner_gone() -> None:
            nonlocal orphaned
            if not orphaned:
                orphaned = True
                signal.signal(signal.SIGALRM, lambda *_: os.killpg(0, signal.SIGKILL))
                signal.alarm(int(KILL_GRACE_SECONDS))
                os.killpg(0, signal.SIGTERM)

        def on_signal(_signum: int, _frame: object) -> None:
            # From the runner (stop, timeout): the task got it too, so wait for it to end.
            # From the kernel or the check below: the runner is gone.
            if os.getppid() != runner:
                runner_gone()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, on_signal)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
        else:  # no parent-death signal here: check the parent twice a second
            signal.signal(signal.SIGALRM, on_signal)
            signal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)
        if os.getppid() != runner:  # the runner died before the signal was armed
            runner_gone()
        os.chdir(cwd)
        pid = os.posix_spawn(program, argv, env, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT),
                             setsigmask=())
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except ChildProcessError:
                status = 0
                break
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
        tmp = f"{watch.status}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, f"{watch.token} {code}\n".encode())
        os.close(fd)
        os.rename(tmp, watch.status)
        if orphaned:  # no runner to clean up after the task: its leftovers go now
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(0, signal.SIGTERM)
    except BaseException as exc:  # the child must never return into the runner's code
        with contextlib.suppress(BaseException):
            os.write(2, f"{program}: {getattr(exc, 'strerror', None) or exc}\n".encode())
        code = 127 if isinstance(exc, FileNotFoundError | PermissionError) else 126
    os._exit(code)


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

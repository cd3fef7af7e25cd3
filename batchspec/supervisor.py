"""The task supervisor of a local run: starts task processes for the runner, writes each one's
exit status to a file the moment it ends, and stops them all when the runner dies.

It runs as ``python -I -S supervisor.py LOCK`` (standard library only: it starts in a few
milliseconds and never imports batchspec), one per run, with a pipe from the runner as its
standard input and one to the runner as its standard output, one JSON object per line:

* in: ``{"id", "argv", "cwd", "env", "stdout", "stderr", "status", "token"}``: start a task
  process (its own session and process group, so the runner can signal the whole group),
  output appended to the two files;
* out: ``{"id", "pid"}`` once it runs (or ``{"id", "error"}``), then ``{"id", "exit"}`` when it
  has ended, *after* ``token exit-code`` is written to its ``status`` file.

End of input means the runner is gone (it closed the pipe, or the kernel did as it died): the
tasks still running get SIGTERM, SIGKILL after a grace period, and any that ends meanwhile still
gets its status written. The supervisor holds an ``flock`` on ``LOCK`` while it lives, so a
later run can wait for what a killed run left to end (see :func:`wait_for_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import sys
import time
from pathlib import Path
from typing import Any

#: Seconds between SIGTERM and SIGKILL for the tasks of a runner that died.
GRACE_SECONDS = 3.0


def wait_for_lock(lock: Path, *, block: bool = True) -> bool:
    """Wait until no supervisor holds ``lock`` (with ``block=False``, only say whether none
    does); returns True when it is free."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases it
    return True


class _Supervisor:
    def __init__(self) -> None:
        self.tasks: dict[int, tuple[Any, str, str]] = {}  # pid -> (request id, status file, token)
        self.orphaned_at: float | None = None
        self.killed = False
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        if self.orphaned_at is not None:
            return  # nobody is listening any more
        try:
            os.write(1, (json.dumps(message) + "\n").encode())
        except OSError:
            self.orphan()

    def start(self, request: dict[str, Any]) -> None:
        argv: list[str] = request["argv"]
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(request["status"])  # an earlier attempt's
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            out = os.open(request["stdout"], flags, 0o644)
            err = os.open(request["stderr"], flags, 0o644)
            try:
                os.chdir(request["cwd"])
                pid = os.posix_spawn(
                    argv[0], argv, request["env"],
                    file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                  (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)],
                    setsid=True, setsigmask=(),
                    # What this process ignores, a task must not: back to the defaults.
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP, signal.SIGTERM),
                )
            finally:
                os.close(out)
                os.close(err)
        except OSError as exc:
            self.send({"id": request["id"], "error": f"{argv[0] if argv else '<empty command>'}: "
                                                      f"{exc.strerror or exc}"})
            return
        self.tasks[pid] = (request["id"], request["status"], request["token"])
        self.send({"id": request["id"], "pid": pid})

    def reap(self) -> None:
        while self.tasks:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.tasks.pop(pid, None)
            if entry is None:
                continue
            request_id, status_file, token = entry
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code
            with contextlib.suppress(OSError):
                tmp = f"{status_file}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                os.write(fd, f"{token} {code}\n".encode())
                os.close(fd)
                os.rename(tmp, status_file)
            if self.orphaned_at is not None:  # its leftovers, with no runner to clean up after it
                _signal(pid, signal.SIGTERM)
            self.send({"id": request_id, "exit": code})

    def orphan(self) -> None:
        if self.orphaned_at is None:
            self.orphaned_at = time.monotonic()
            for pid in self.tasks:
                _signal(pid, signal.SIGTERM)

    def read(self) -> bool:
        """Take requests from the runner; False at the end of input."""
        data = os.read(0, 1 << 16)
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.start(json.loads(line))
        return True

    def run(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for name in ("SIGINT", "SIGHUP", "SIGTERM"):  # the runner decides; its death is the end of input
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ, "runner")
        selector.register(wake_r, selectors.EVENT_READ, "signal")
        while True:
            self.reap()
            if self.orphaned_at is not None:
                if not self.tasks:
                    return
                left = self.orphaned_at + GRACE_SECONDS - time.monotonic()
                if left <= 0 and not self.killed:
                    self.killed = True
                    for pid in self.tasks:
                        _signal(pid, signal.SIGKILL)
                timeout: float | None = max(left, 0.05) if not self.killed else 0.5
            else:
                timeout = None
            for key, _ in selector.select(timeout):
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                elif not self.read():
                    selector.unregister(0)
                    self.orphan()


def _signal(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main() -> None:
    lock = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process exits
    _Supervisor().run()


if __name__ == "__main__":
    main()

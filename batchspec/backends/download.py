"""The download directory (``outputs.download``): where outputs land on this machine, for every
backend, and what protects the files already there.

* Never a system directory, the filesystem root, the home directory or one of its parents
  (:func:`unsafe_location`).
* Never over a file batchspec did not write, unless the run says ``--overwrite``: the
  :class:`Ledger` (one JSON line per file placed, kept with the run's state, not among the
  outputs: ``<state dir>/downloads/<name>-<hash of the directory's path>.jsonl``) remembers each
  file batchspec placed there by size and modification time, with the fingerprint of the task
  that produced it. A file whose size or time differs from every record (the user's own, or
  edited since) is not batchspec's.
* A file is placed atomically (a rename) after its ledger line is written, so a run killed at
  any moment leaves the old file or the new one, each of them known; and the ledger tells a
  rerun which outputs are still exactly what a task with a given fingerprint produced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError
from ..globs import literal_path

PART = ".batchspec-part"  # suffix of a file being written, next to where it goes
_KEEP = 4  # records kept per file: enough history to still know the file a killed run left
_COMPACT_SLACK = 256

#: Directories no run may put outputs in (besides / itself, any top-level directory and home).
SYSTEM_DIRECTORIES = frozenset(Path(p) for p in (
    "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/local/bin",
    "/usr/local/lib", "/usr/share", "/usr/include", "/var/lib", "/var/log", "/var/cache", "/var/spool",
    "/var/mail", "/etc/default", "/System", "/Library", "/Applications",
))


def unsafe_location(path: Path) -> str | None:
    """Why ``path`` must not be a download directory, or None."""
    resolved = path.expanduser().resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor):
        return "it is the filesystem root"
    if resolved == home:
        return "it is your home directory"
    if home.is_relative_to(resolved):
        return "it holds your home directory"
    if len(resolved.parts) == 2:
        return "it is a top-level system directory"
    if resolved in SYSTEM_DIRECTORIES:
        return "it is a system directory"
    return None


class OutputConflict(BackendError):
    """Placing an output would replace a file batchspec did not write."""


def conflict_error(root: Path, paths: list[str], *, exit_code: int | None = None) -> OutputConflict:
    """Found before the run (``exit_code`` None: a usage error, 2) or when outputs arrive (1)."""
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return OutputConflict(
        f"{root} already holds {len(paths)} file(s) that batchspec did not write and this run would "
        f"overwrite: {shown}",
        "move them away, choose another outputs.download, or rerun with --overwrite",
        exit_code=exit_code,
    )


@dataclass(frozen=True)
class Record:
    size: int
    mtime_ns: int
    fingerprint: str


def _identity(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a regular file at ``path`` (not through a symlink), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def ledger_file(state_dir: Path, root: Path) -> Path:
    """Where the ledger of download directory ``root`` lives."""
    resolved = root.expanduser().absolute()
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", resolved.name)[:40] or "root"
    return state_dir / "downloads" / f"{label}-{digest}.jsonl"


def part_path(dest: Path) -> Path:
    """The temporary file ``dest`` is written as, beside it: a short name of its own (the final
    name may already be as long as a file name can be)."""
    digest = hashlib.blake2b(os.fsencode(dest.name), digest_size=8).hexdigest()
    return dest.with_name(f".{digest}{PART}")


def safe_destination(root: Path, name: str) -> Path | None:
    """Where ``name`` (a relative POSIX path) lands under ``root``, or None when it would leave
    ``root`` (``..``, an absolute path, a symlinked directory pointing out)."""
    if not name or name.startswith("/") or "\x00" in name or ("\\" in name and os.sep == "\\"):
        return None  # (a backslash is a name's character on POSIX, a separator on Windows)
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or (len(parts[0]) > 1 and parts[0][1] == ":"):
        return None
    if parts[-1].endswith(PART):
        return None
    dest = root.joinpath(*parts)
    try:
        dest.parent.resolve().relative_to(root.resolve())
    except ValueError:  # a symlink inside root pointing out of it
        return None
    return dest


class Ledger:
    """What batchspec placed in one download directory. Thread-safe."""

    def __init__(self, root: Path, path: Path, *, overwrite: bool = False) -> None:
        self.root = root
        self.path = path
        self.overwrite = overwrite
        self._records: dict[str, list[Record]] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._load()

    # --- reading -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self.path.read_text("utf-8", "surrogateescape")
        except OSError:
            return
        lines = text.splitlines()
        for line in lines:
            try:
                d = json.loads(line)
                name, record = d["path"], Record(int(d["size"]), int(d["mtime_ns"]), str(d["fingerprint"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
            history = self._records.setdefault(name, [])
            history.append(record)
            del history[:-_KEEP]
        if len(lines) > _KEEP * len(self._records) + _COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + PART)
        with contextlib.suppress(OSError):
            tmp.write_text("".join(_line(n, r) for n, history in self._records.items() for r in history),
                           "utf-8", "surrogateescape")
            os.replace(tmp, self.path)

    def _matching(self, name: str) -> Record | None:
        """The latest record of ``name`` that the file there now matches."""
        current = _identity(self.root / name)
        if current is None:
            return None
        for record in reversed(self._records.get(name, ())):
            if (record.size, record.mtime_ns) == current:
                return record
        return None

    def owns(self, name: str) -> bool:
        """Is the file at ``name`` one batchspec placed, unchanged since?"""
        return self._matching(name) is not None

    def produced(self, name: str, fingerprint: str) -> bool:
        """Is the file at ``name`` what a task with ``fingerprint`` produced, unchanged since?"""
        record = self._matching(name)
        return record is not None and record.fingerprint == fingerprint

    def produced_names(self, fingerprint: str) -> list[str]:
        """Every file a task with ``fingerprint`` produced that is still there, unchanged."""
        return [name for name, history in self._records.items()
                if any(r.fingerprint == fingerprint for r in history) and self.produced(name, fingerprint)]

    def blocked(self, name: str) -> bool:
        """Would placing ``name`` replace something batchspec did not write (and may not)?"""
        if self.overwrite:
            return False
        dest = self.root / name
        return os.path.lexists(dest) and not self.owns(name)

    def conflicts(self, names: Iterable[str]) -> list[str]:
        if self.overwrite or not self.root.is_dir():
            return []
        return [n for n in names if self.blocked(n)]

    # --- writing -------------------------------------------------------------------------

    def destination(self, name: str) -> Path:
        dest = safe_destination(self.root, name)
        if dest is None:
            raise BackendError(f"refusing to write output '{name}': it would land outside {self.root}")
        return dest

    def place(self, source: Path, name: str, fingerprint: str, *, copy: bool = False) -> None:
        """Move (or with ``copy``, copy) the file ``source`` to ``name`` in the directory.

        Raises :class:`OutputConflict` when that would replace a file batchspec did not write.
        """
        if copy:
            self.write(name, fingerprint, functools.partial(copy_file, source, keep_time=True))
            return
        dest = self._ready(name)
        st = os.stat(source)  # a rename keeps size and time: known before the file moves
        self.record(name, st.st_size, st.st_mtime_ns, fingerprint)
        try:
            os.replace(source, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # another filesystem: a copy (keeping the time), then a rename
                raise
            self.write(name, fingerprint, functools.partial(copy_file, source, keep_time=True))
            os.unlink(source)

    def write(self, name: str, fingerprint: str, writer: Callable[[Path], object]) -> None:
        """Place the file ``writer(path)`` writes at ``path`` (a temporary name next to ``name``).

        Raises :class:`OutputConflict` when that would replace a file batchspec did not write.
        """
        dest = self._ready(name)
        part = part_path(dest)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)  # a killed run's
        writer(part)
        st = os.stat(part)
        # The record first: killed before the rename, the old file is still known by its record.
        self.record(name, st.st_size, st.st_mtime_ns, fingerprint)
        os.replace(part, dest)

    def _ready(self, name: str) -> Path:
        dest = self.destination(name)
        if self.blocked(name):
            raise conflict_error(self.root, [name])
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def record(self, name: str, size: int, mtime_ns: int, fingerprint: str) -> None:
        """Note that the file at ``name`` (to be) placed has this size and time."""
        line = _line(name, Record(size, mtime_ns, fingerprint)).encode("utf-8", "surrogateescape")
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.write(self._fd, line)  # one write on an O_APPEND file: lines never interleave
            history = self._records.setdefault(name, [])
            history.append(Record(size, mtime_ns, fingerprint))
            del history[:-_KEEP]

    def remove(self, name: str, fingerprint: str) -> bool:
        """Delete the file at ``name`` if it is still what a task with ``fingerprint`` produced."""
        if not self.produced(name, fingerprint):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / name)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _line(name: str, record: Record) -> str:
    return json.dumps({"path": name, "size": record.size, "mtime_ns": record.mtime_ns,
                       "fingerprint": record.fingerprint}, ensure_ascii=False) + "\n"


def copy_file(source: Path, dest: Path, *, keep_time: bool = False) -> None:
    """Copy a file's bytes and mode (and with ``keep_time`` its times): a reflink where the
    filesystem can share blocks copy-on-write (btrfs, XFS), else a kernel-side copy. ``dest`` is
    replaced, never written through (it may be a link to something else)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest)
    with open(source, "rb") as src, open(dest, "xb") as out:
        cloned = _reflink(src.fileno(), out.fileno())
    if not cloned:
        shutil.copyfile(source, dest)  # sendfile on Linux; dest is the new file made above
    if keep_time:
        shutil.copystat(source, dest)
    else:
        shutil.copymode(source, dest)


_FICLONE = 0x40049409  # Linux ioctl FICLONE: share the source's blocks copy-on-write


def _reflink(src: int, dst: int) -> bool:
    try:
        fcntl.ioctl(dst, _FICLONE, src)
    except OSError:
        return False
    return True


def check_download(ledger: Ledger, outputs: Iterable[str]) -> None:
    """Before anything runs: refuse an unsafe download directory, and say which files there a
    run would overwrite that batchspec did not write (``outputs``: every task's output
    patterns; those with wildcards are checked when their files arrive)."""
    root = ledger.root
    if problem := unsafe_location(root):
        raise BackendError(f"outputs.download is {root}: {problem}, and batchspec does not put outputs there",
                           "give outputs.download a directory of its own, e.g. out/<name> (the default)")
    names = dict.fromkeys(path for p in outputs if (path := literal_path(p)) is not None)
    if blocked := ledger.conflicts(names):
        raise conflict_error(root, blocked)

"""Glob patterns over POSIX relative paths: ``*`` and ``?`` within one path segment, ``**``
across segments, ``[...]`` sets. Hidden entries match only when a pattern segment names them.

One implementation serves input patterns (planning), output patterns (collecting a task's
outputs) and the emulator's ``outputFiles``. It walks with :func:`os.scandir`, which knows each
entry's type without a stat call, and goes no deeper than a pattern needs.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

_MAGIC = re.compile(r"[*?\[]")
_SET_SPECIAL = re.compile(r"[\\\[&~|]")


def has_magic(pattern: str) -> bool:
    return bool(_MAGIC.search(pattern))


def escape(text: str) -> str:
    """``text`` as a pattern that matches exactly itself: ``a[1]*.mp3`` -> ``a[[]1][*].mp3``."""
    return _MAGIC.sub(r"[\g<0>]", text) if _MAGIC.search(text) else text


_ESCAPED = re.compile(r"\[([^\]!^])\]")  # a one-character set: how a literal wildcard is written


def literal_path(pattern: str) -> str | None:
    """The one path ``pattern`` matches when it has no real wildcard (``a[*].mp3`` is the file
    ``a*.mp3``), else None."""
    norm = normalize(pattern)
    plain = _ESCAPED.sub(r"\1", norm) if "[" in norm else norm
    return None if has_magic(_ESCAPED.sub("", norm)) else plain


def literal_head(pattern: str) -> str:
    """The text before the first wildcard (all of it when there is none)."""
    match = _MAGIC.search(pattern)
    return pattern if match is None else pattern[: match.start()]


def normalize(pattern: str) -> str:
    """POSIX-normalised pattern; ``""`` for the current directory. Only ``/`` separates
    directories: ``\\`` is a character of a name, as on a Linux node (a file may be called
    ``a\\b.mp4``, and its output ``a\\b.mp3`` must be found)."""
    norm = posixpath.normpath(pattern)
    return "" if norm == "." else norm


def split_fixed(pattern: str) -> tuple[str, str]:
    """``inputs/a/*.mp4`` -> (``inputs/a``, ``*.mp4``): the literal directory part and the rest.

    A pattern without wildcards is all fixed: (pattern, "").
    """
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if has_magic(part):
            return "/".join(parts[:i]), "/".join(parts[i:])
    return pattern, ""


class Glob:
    """A compiled pattern; :meth:`match` takes time linear in the path, whatever the pattern.

    A regular expression with several ``*`` in a row (``*a*a*a*…``) backtracks: 20 of them
    against one long name once ran past a minute. Here the part between two ``*`` of a segment
    is matched at its first place, atomically (as :mod:`fnmatch` does since Python 3.9), which
    is exact because a ``*`` that could take more could also have taken less. ``**`` (a whole
    segment) matches any number of directories; a pattern with more than one is matched segment
    by segment, with the same rule one level up.
    """

    __slots__ = ("_regex", "_segments")

    def __init__(self, pattern: str) -> None:
        segments = _segments(pattern)
        self._regex: re.Pattern[str] | None = None
        self._segments: list[re.Pattern[str] | None] = []  # None for **
        if segments.count("**") <= 1:
            self._regex = re.compile(_translate(segments) + r"\Z", re.DOTALL)
        else:
            if segments[-1] == "**":  # a trailing ** stands for at least one more segment
                segments.append("*")
            counter = itertools.count()
            self._segments = [None if s == "**" else re.compile(_segment(s, counter) + r"\Z", re.DOTALL)
                              for s in segments]

    def match(self, path: str) -> bool:
        if self._regex is not None:
            return self._regex.match(path) is not None
        return _match_segments(self._segments, path.split("/"))


@cache
def compile_glob(pattern: str) -> Glob:
    """The matcher of exactly the relative paths ``pattern`` matches."""
    return Glob(pattern)


def _segments(pattern: str) -> list[str]:
    """The pattern's segments with runs of ``*`` made one (``***`` is ``*``; ``**`` stays only as a
    whole segment) and repeated ``**`` segments made one."""
    out: list[str] = []
    for part in pattern.split("/"):
        segment = part if part == "**" else _STARS.sub("*", part)
        if not (segment == "**" and out and out[-1] == "**"):
            out.append(segment)
    return out


_STARS = re.compile(r"\*{2,}")


def _translate(segments: list[str]) -> str:
    """One regular expression for a pattern with at most one ``**`` segment."""
    counter = itertools.count()
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:.*/)?")
        else:
            out.append(_segment(segment, counter) + ("" if last else "/"))
    return "".join(out)


def _segment(segment: str, counter: itertools.count[int]) -> str:
    """A regular expression for one segment: the text between two ``*`` is found at its first
    place and kept there (a lookahead with a back reference is atomic), so nothing backtracks
    over more than the last ``*``."""
    chunks: list[list[str]] = [[]]
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        if c == "*":
            chunks.append([])
        elif c == "?":
            chunks[-1].append("[^/]")
        elif c == "[" and (end := segment.find("]", i + 2)) != -1:
            body = segment[i + 1 : end]
            negate = body.startswith("!")
            # Escape what a regex set would read specially (a literal "[" would warn as a nested set).
            body = _SET_SPECIAL.sub(r"\\\g<0>", body[1:] if negate else body)
            chunks[-1].append(("[^" if negate else "[") + body + "]")
            i = end + 1
            continue
        else:
            chunks[-1].append(re.escape(c))
        i += 1
    out = ["".join(chunks[0])]
    for chunk in chunks[1:-1]:
        group = f"g{next(counter)}"
        out.append(f"(?=(?P<{group}>[^/]*?{''.join(chunk)}))(?P={group})")
    if len(chunks) > 1:
        out.append("[^/]*" + "".join(chunks[-1]))
    return "".join(out)


def _match_segments(patterns: list[re.Pattern[str] | None], parts: list[str]) -> bool:
    """Segments against patterns, ``None`` matching any number of segments: the two-pointer
    wildcard match (back to the last ``**`` only), linear in segments times patterns."""
    p = s = 0
    star, mark = -1, 0
    while s < len(parts):
        more = p < len(patterns)
        if more and patterns[p] is None:
            star, mark, p = p, s, p + 1
        elif more and (pattern := patterns[p]) is not None and pattern.match(parts[s]):
            p, s = p + 1, s + 1
        elif star >= 0:
            mark += 1
            p, s = star + 1, mark
        else:
            return False
    while p < len(patterns) and patterns[p] is None:
        p += 1
    return p == len(patterns)


def glob_files(base: Path, pattern: str, *, follow_links: bool = True) -> Iterator[str]:
    """Files under ``base`` matching ``pattern``, as POSIX paths relative to ``base``.

    With ``follow_links=False`` no symbolic link is followed: a directory reached through one
    is not searched, and a link that matches is yielded itself, for the caller to judge, not
    what it points to.
    """
    norm = normalize(pattern)
    prefix, rest = split_fixed(norm)
    root = base / prefix if prefix else base
    if not follow_links and not _real_directories(base, prefix if rest else posixpath.dirname(prefix)):
        return
    if not rest:
        if root.is_file() if follow_links else (root.is_symlink() or root.is_file()):
            yield prefix
        return
    regex = compile_glob(rest)
    recursive = "**" in rest
    depth = rest.count("/") + 1
    dot_ok = any(seg.startswith(".") for seg in rest.split("/"))
    if depth == 1 and not recursive:  # one directory's files (`inputs/*.mp4`): as _walk, names matched first
        yield from _matching_files(str(root), regex, dot_ok, follow_links, f"{prefix}/" if prefix else "")
        return
    for rel in _walk(str(root), "", depth, recursive, dot_ok, follow_links):
        if regex.match(rel):
            yield f"{prefix}/{rel}" if prefix else rel


def _matching_files(root: str, pattern: Glob, dot_ok: bool, follow: bool, head: str) -> Iterator[str]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    # One segment compiles to one regular expression: its match, without a call per name.
    match = pattern._regex.match if pattern._regex is not None else pattern.match
    names: list[str] = []
    for entry in entries:
        name = entry.name
        if (dot_ok or name[:1] != ".") and match(name):
            try:
                if entry.is_file(follow_symlinks=follow) or (not follow and entry.is_symlink()):
                    names.append(name)
            except OSError:
                continue
    names.sort()  # in name order, as _walk: the matches sorted, not every entry
    for name in names:
        yield head + name


def _real_directories(base: Path, rel: str) -> bool:
    """Is every step from ``base`` down to ``base/rel`` a directory, not a link to one?"""
    path = base
    for part in rel.split("/") if rel else ():
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return False
    return True


def _walk(root: str, rel: str, depth: int, recursive: bool, dot_ok: bool, follow: bool,
          seen: set[tuple[int, int]] | None = None) -> Iterator[str]:
    """Files below ``root/rel`` in name order. Following links, each directory is entered once
    (by device and inode), so a link to a directory above it cannot make a loop."""
    try:
        with os.scandir(os.path.join(root, rel) if rel else root) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        if follow and seen is None:
            here = os.stat(os.path.join(root, rel) if rel else root)
            seen = {(here.st_dev, here.st_ino)}
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") and not dot_ok:
            continue
        path = f"{rel}/{entry.name}" if rel else entry.name
        try:
            if entry.is_file(follow_symlinks=follow) or (not follow and entry.is_symlink()):
                yield path
            elif entry.is_dir(follow_symlinks=follow) and (recursive or depth > 1):
                if seen is not None:
                    info = entry.stat()
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                yield from _walk(root, path, depth - 1, recursive, dot_ok, follow, seen)
        except OSError:
            continue

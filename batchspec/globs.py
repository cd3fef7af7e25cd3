"""Glob patterns over POSIX relative paths: ``*`` and ``?`` within one path segment, ``**``
across segments, ``[...]`` sets. Hidden entries match only when a pattern segment names them.

One implementation serves input patterns (planning), output patterns (collecting a task's
outputs) and the emulator's ``outputFiles``. It walks with :func:`os.scandir`, which knows each
entry's type without a stat call, and goes no deeper than a pattern needs.
"""

from __future__ import annotations

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
    """POSIX-normalised pattern; ``""`` for the current directory."""
    norm = posixpath.normpath(pattern.replace("\\", "/"))
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


@cache
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex matching exactly the relative paths ``pattern`` matches."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            # Escape what a regex set would read specially (a literal "[" would warn as a nested set).
            body = _SET_SPECIAL.sub(r"\\\g<0>", body[1:] if negate else body)
            out.append(("[^" if negate else "[") + body + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


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


def _matching_files(root: str, regex: re.Pattern[str], dot_ok: bool, follow: bool, head: str) -> Iterator[str]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if (dot_ok or name[:1] != ".") and regex.match(name):
            try:
                if entry.is_file(follow_symlinks=follow) or (not follow and entry.is_symlink()):
                    yield head + name
            except OSError:
                continue


def _real_directories(base: Path, rel: str) -> bool:
    """Is every step from ``base`` down to ``base/rel`` a directory, not a link to one?"""
    path = base
    for part in rel.split("/") if rel else ():
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return False
    return True


def _walk(root: str, rel: str, depth: int, recursive: bool, dot_ok: bool, follow: bool) -> Iterator[str]:
    try:
        entries = list(os.scandir(os.path.join(root, rel) if rel else root))
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
                yield from _walk(root, path, depth - 1, recursive, dot_ok, follow)
        except OSError:
            continue

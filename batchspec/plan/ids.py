"""Default task ids: readable, unique in any plan, and valid Batch ids.

A Batch id has at most 64 letters, digits, ``-`` and ``_``, and ids are compared ignoring case.
The default id of a task is its input's stem made readable (``Größe.mp4`` -> ``Grosse``,
``東京.mp4`` -> ``DongJing``, through ``anyascii``) plus a short hash of what makes it unique (the
input's key and matrix values). Short hashes of different tasks can be equal (at 200,000 tasks
of one stem, a few pairs of 8-character hashes are), so :class:`TaskIds` hands out each id once:
when the short id is taken, the task gets a 16-character hash, and in the end a counter.
Tasks are expanded in a fixed order, so the same plan always gets the same ids.
"""

from __future__ import annotations

import hashlib
import itertools
import re

MAX_ID = 64
HASH_CHARS = 8
LONG_HASH_CHARS = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def readable(text: str, room: int) -> str:
    """``text`` as the letters, digits, ``-`` and ``_`` of a Batch id, at most ``room`` long."""
    if not text.isascii():
        from anyascii import anyascii  # its tables load only for a name that needs them

        text = anyascii(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return (_UNSAFE.sub("_", text).strip("_-") or "task")[:room]


def short_hash(key: str, chars: int = HASH_CHARS) -> str:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=(chars + 1) // 2)
    return digest.hexdigest()[:chars]


class TaskIds:
    """The ids of one plan: each handed out once, compared ignoring case as Batch does."""

    def __init__(self) -> None:
        self.taken: dict[str, str] = {}  # casefolded id -> the id

    def __contains__(self, task_id: str) -> bool:
        return task_id.casefold() in self.taken

    def claim(self, task_id: str) -> str | None:
        """Take ``task_id`` (from a ``task.id`` template); the id that has it already, if any."""
        folded = task_id.casefold()
        if folded == task_id:  # one string kept, not two equal ones
            folded = task_id
        other = self.taken.get(folded)
        if other is None:
            self.taken[folded] = task_id
        return other

    def default(self, text: str, key: str, prefix: str = "") -> str:
        """A new id: ``prefix``, ``text`` made readable, and a hash of ``key`` (what makes the
        task unique), longer when the short one is taken."""
        task_id = _joined(prefix, text, short_hash(key))
        if self.claim(task_id) is None:  # nearly always: the short hash is free
            return task_id
        long = short_hash(key, LONG_HASH_CHARS)
        for tail in itertools.chain((long,), (f"{long}-{n}" for n in itertools.count(2))):
            task_id = _joined(prefix, text, tail)
            if self.claim(task_id) is None:
                return task_id
        raise AssertionError("unreachable: the counter always finds a free id")


def _joined(prefix: str, text: str, tail: str) -> str:
    room = MAX_ID - len(prefix) - len(tail) - 1
    return f"{prefix}{readable(text, room)}-{tail}" if room > 0 else f"{prefix[: MAX_ID - len(tail)]}{tail}"

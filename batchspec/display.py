"""Text from file names, blob names and task output, made safe to show on a terminal or in JSON.

A POSIX file name may hold any byte but ``/`` and NUL: an escape sequence (``\\x1b[2J``) that
would clear or recolour the user's terminal, a line break that would forge a line of output, or
bytes that are not UTF-8 (Python keeps them as lone surrogates). Shown, each becomes a visible
escape (``\\x1b``, ``\\n``, ``\\xff``); in JSON, a lone surrogate is written as its ``\\udcff``
escape, so the document stays valid UTF-8 and reads back to the same name.
"""

from __future__ import annotations

import re

# C0 controls but tab and line feed, DEL, C1 controls, lone surrogates, and the bidirectional
# overrides that can make text read differently from what it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with what a terminal would act on shown as escapes; line breaks and tabs kept."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def one_line(text: str) -> str:
    """``text`` as one line: line breaks and tabs shown as escapes too (a name in a table)."""
    return _UNSAFE_LINE.sub(_escape, text) if _UNSAFE_LINE.search(text) else text


def json_safe(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with lone surrogates written as
    ``\\udcXX`` escapes: valid UTF-8 that ``json.load`` reads back to the same string."""
    if text.isascii():  # nothing to escape (and much quicker to tell than searching)
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _SURROGATE.search(text) else text

"""Keep secrets out of everything batchspec prints or writes.

SAS signatures, account keys in connection strings, Shared Key and bearer authorization values,
and the values of secret environment variables are replaced before text leaves the process.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the CLI redacts error messages; only a run needs the events
    from .events import Emit, Event

E = TypeVar("E", bound="Event")

SECRET_ENV = ("AZURE_BATCH_ACCESS_KEY", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET")

_PATTERNS = [
    (re.compile(r"(?i)(sig=)[^&\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedKey(?:Lite)? [^:\s]+:)[A-Za-z0-9+/=]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(Bearer )[A-Za-z0-9\-_.~+/]+=*"), r"\1REDACTED"),
]


#: Secrets read at run time from variables the spec names (container registry passwords).
_remembered: set[str] = set()


def remember_secret(value: str) -> None:
    """Redact ``value`` from now on, wherever it appears (a registry password read from the
    environment variable a spec names)."""
    if len(value) >= 4:
        _remembered.add(value)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret we know of replaced by ``REDACTED``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    source = os.environ if env is None else env
    for name in SECRET_ENV:
        value = source.get(name)
        if value and len(value) >= 8 and value in text:
            text = text.replace(value, "REDACTED")
    for value in _remembered:
        if value in text:
            text = text.replace(value, "REDACTED")
    return text


def redact_event(event: E, env: Mapping[str, str] | None = None) -> E:
    """``event`` with every text in it redacted (messages, reasons, stderr tails, nested events)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        new = _redact_value(value, env)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(event, **changes) if changes else event


def _redact_value(value: Any, env: Mapping[str, str] | None) -> Any:
    from .events import Event

    if isinstance(value, str):
        text = redact(value, env)
        return value if text == value else text
    if isinstance(value, Event):
        return redact_event(value, env)
    if isinstance(value, tuple):
        items = tuple(_redact_value(v, env) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def redacting(emit: Emit, env: Mapping[str, str] | None = None) -> Emit:
    """``emit`` behind :func:`redact_event`: every reporter (terminal, --json) sees the same
    redacted events."""
    return lambda event: emit(redact_event(event, env))

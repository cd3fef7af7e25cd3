"""Keep secrets out of everything batchspec prints or writes.

SAS signatures, account keys in connection strings, Shared Key and bearer authorization values,
and the values of secret environment variables are replaced before text leaves the process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_ENV = ("AZURE_BATCH_ACCESS_KEY", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET")

_PATTERNS = [
    (re.compile(r"(?i)(sig=)[^&\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedKey(?:Lite)? [^:\s]+:)[A-Za-z0-9+/=]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(Bearer )[A-Za-z0-9\-_.~+/]+=*"), r"\1REDACTED"),
]


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret we know of replaced by ``REDACTED``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    source = os.environ if env is None else env
    for name in SECRET_ENV:
        value = source.get(name)
        if value and len(value) >= 8 and value in text:
            text = text.replace(value, "REDACTED")
    return text

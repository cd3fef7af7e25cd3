"""Request authentication: Batch Shared Key, verified exactly as the service does, and bearer tokens.

The canonical string is the one azure-batch's ``BatchSharedKeyAuthPolicy`` signs: the method, the
values of eleven standard headers (``Content-Length`` counts as ``0`` for bodiless non-GET/HEAD
requests), every ``ocp-*`` header sorted, ``/{account}{raw path}``, then each non-empty query
parameter (decoded, sorted by name). The key is decoded once; secrets are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs

from batchspec.emulator.errors import ApiError, error

HEADERS_TO_SIGN = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def canonical_string(account: str, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> str:
    """The string a Batch client signs for this request."""
    lower = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD") and "content-length" not in lower:
        lower["content-length"] = "0"
    parts = [method, *(lower.get(name, "") for name in HEADERS_TO_SIGN)]
    text = "\n".join(parts) + "\n"
    ocp = sorted((k, v) for k, v in lower.items() if "ocp-" in k)
    text += "".join(f"{k}:{v}\n" for k, v in ocp)
    text += f"/{account}{raw_path}"
    query = parse_qs(raw_query)
    for name in sorted(query):
        value = query[name][0]
        if value:
            text += f"\n{name}:{value}"
    return text


def sign(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def decode_key(key_b64: str) -> bytes:
    try:
        return base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the account key must be base64") from exc


def _failed(detail: str) -> ApiError:
    return error(403, "AuthenticationFailed", ("AuthenticationErrorDetail", detail))


class Authenticator:
    """Checks a request's ``Authorization`` header against one account key (and an optional token)."""

    def __init__(self, account: str, key_b64: str, token: str | None = None) -> None:
        self.account = account
        self._key = decode_key(key_b64)
        self._token = token.encode("utf-8") if token else None

    def check(self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        """Return when the request is authentic; raise 403 ``AuthenticationFailed`` otherwise."""
        value = headers.get("Authorization") or headers.get("authorization") or ""
        scheme, _, credential = value.strip().partition(" ")
        if scheme == "SharedKey":
            account, _, signature = credential.strip().partition(":")
            if account != self.account:
                raise _failed(f"The account being accessed does not match the account '{account}' in the request.")
            expected = sign(self._key, canonical_string(account, method, raw_path, raw_query, headers))
            if not hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("ascii", "replace")):
                raise _failed("The MAC signature found in the HTTP request is not the same as any computed signature.")
            return
        if scheme == "Bearer":
            if self._token is None:
                raise _failed("Bearer tokens are not accepted: the emulator was started without --token.")
            if not hmac.compare_digest(self._token, credential.strip().encode("utf-8", "replace")):
                raise _failed("The bearer token is not valid.")
            return
        raise _failed("The Authorization header is missing or is not of the form 'SharedKey account:signature'.")

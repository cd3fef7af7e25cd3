"""Turn Azure SDK exceptions into one clear message with what to do (never a traceback),
with secrets redacted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from ...errors import BackendError
from ...redact import redact
from .config import AzureConfig

_AUTH_CODES = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
               "InvalidAuthenticationInfo", "NoAuthenticationInformation"}


def error_code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "error_code", None)
    return str(code or "")


def _service(exc: HttpResponseError, config: AzureConfig) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", "") or "")
    return "Azure Storage" if url and not url.startswith(config.batch_endpoint) else "Azure Batch"


def _message(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or exc.message or str(exc)
    return str(text).split("\nRequestId:")[0].splitlines()[0].strip()


@contextmanager
def translate_errors(config: AzureConfig, doing: str) -> Iterator[None]:
    """Re-raise Azure SDK errors raised inside as :class:`BackendError`."""
    try:
        yield
    except BackendError:
        raise
    except ClientAuthenticationError as exc:
        raise _auth_error(config, doing, exc) from None
    except HttpResponseError as exc:
        code = error_code(exc)
        if exc.status_code in (401, 403) or code in _AUTH_CODES:
            raise _auth_error(config, doing, exc) from None
        service = _service(exc, config)
        raise BackendError(
            redact(f"{service} error while {doing}: {exc.status_code} {code}: {_message(exc)}"),
        ) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise BackendError(
            redact(f"cannot reach Azure while {doing}: {exc.message}"),
            "check the endpoint and your network; transient failures were already retried",
        ) from None


def _auth_error(config: AzureConfig, doing: str, exc: Exception) -> BackendError:
    if isinstance(exc, HttpResponseError) and _service(exc, config) == "Azure Storage":
        return BackendError(
            redact(f"Azure Storage rejected the credentials while {doing}"),
            "check AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY",
        )
    hint = ("check AZURE_BATCH_ACCESS_KEY (the account's primary or secondary key) and AZURE_BATCH_ACCOUNT"
            if config.batch_key else "sign in (az login) or set the Entra ID variables for DefaultAzureCredential")
    return BackendError(
        redact(f"Azure Batch rejected the credentials for account '{config.batch_account}' at "
               f"{config.batch_endpoint} while {doing} ({config.batch_auth})"),
        hint,
    )

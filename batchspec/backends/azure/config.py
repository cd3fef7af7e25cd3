"""Azure configuration from the environment (the Azure CLI's variable names) and credentials.

Batch: ``AZURE_BATCH_ENDPOINT`` (and/or ``AZURE_BATCH_ACCOUNT``) with ``AZURE_BATCH_ACCESS_KEY``
for Shared Key, otherwise Entra ID through ``DefaultAzureCredential``. Storage:
``AZURE_STORAGE_CONNECTION_STRING``, or ``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY`` or
Entra ID. ``AZURE_BATCH_AUTO_STORAGE=true`` says that storage account is the Batch account's
auto-storage account, so storage folders reach tasks by container name, without a SAS.
Credentials never come from spec files.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from azure.core.credentials import AzureNamedKeyCredential, TokenCredential
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import BearerTokenCredentialPolicy

from ...errors import BackendError

BATCH_SCOPE = "https://batch.core.windows.net//.default"


@dataclass(frozen=True)
class AzureConfig:
    batch_endpoint: str
    batch_account: str
    batch_key: str | None = field(default=None, repr=False)
    storage_connection_string: str | None = field(default=None, repr=False)
    storage_account: str | None = None
    storage_key: str | None = field(default=None, repr=False)
    auto_storage: bool = False  # the storage account is the Batch account's auto-storage account

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AzureConfig:
        endpoint = (env.get("AZURE_BATCH_ENDPOINT") or "").strip().rstrip("/")
        account = (env.get("AZURE_BATCH_ACCOUNT") or "").strip()
        if not endpoint:
            raise BackendError(
                "the Azure backend needs the Batch account endpoint",
                "set AZURE_BATCH_ENDPOINT (e.g. https://myaccount.westeurope.batch.azure.com) or pass "
                "--batch-endpoint; `batchspec emulator` prints one for a local emulator",
            )
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        host = urlparse(endpoint).hostname or ""
        if not account:
            account = host.split(".")[0] if not _is_ip(host) else ""
        if not account:
            raise BackendError("cannot tell the Batch account name from the endpoint",
                               "set AZURE_BATCH_ACCOUNT")
        config = cls(
            batch_endpoint=endpoint,
            batch_account=account,
            batch_key=(env.get("AZURE_BATCH_ACCESS_KEY") or "").strip() or None,
            storage_connection_string=(env.get("AZURE_STORAGE_CONNECTION_STRING") or "").strip() or None,
            storage_account=(env.get("AZURE_STORAGE_ACCOUNT") or "").strip() or None,
            storage_key=(env.get("AZURE_STORAGE_KEY") or "").strip() or None,
            auto_storage=(env.get("AZURE_BATCH_AUTO_STORAGE") or "").strip().lower() in ("1", "true", "yes"),
        )
        check_key("AZURE_BATCH_ACCESS_KEY", config.batch_key)
        check_key("AZURE_STORAGE_KEY", config.storage_key)
        if config.storage_connection_string:
            key = re.search(r"(?i)(?:^|;)\s*AccountKey=([^;]*)", config.storage_connection_string)
            check_key("the AccountKey of AZURE_STORAGE_CONNECTION_STRING", key.group(1) if key else None)
        return config

    @property
    def batch_auth(self) -> str:
        return "Shared Key" if self.batch_key else "Entra ID (DefaultAzureCredential)"


def check_key(name: str, key: str | None) -> None:
    """An account key is base64 text (as the portal's Keys page shows it); anything else would
    fail deep in request signing. The message never contains the key."""
    if key is None:
        return
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise BackendError(
            f"{name} is not a valid account key: it must be the base64 text shown as the account's key "
            f"({len(key)} characters given; the key itself is not shown)",
            "copy the key again (Azure portal: the account's Keys page, or `az batch account keys list` / "
            "`az storage account keys list`), with no quotes or spaces",
        ) from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackBearerPolicy(BearerTokenCredentialPolicy):  # type: ignore[type-arg]
    """Bearer auth that also works over plain HTTP to a loopback endpoint (the emulator).

    azure-core refuses bearer tokens on non-HTTPS URLs; that protects real endpoints and stays
    in force for every non-loopback host.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        if is_loopback(request.http_request.url):
            request.context["enforce_https"] = False
        super().on_request(request)


#: The one retry policy of every Batch request, azure-core's: 408, 429 (honouring Retry-After) and
#: 5xx answers and dropped connections, at most 8 times, backing off 0.5 s, 1 s, 2 s ... to 30 s.
RETRY: dict[str, Any] = {"retry_total": 8, "retry_connect": 8, "retry_read": 8, "retry_status": 8,
                         "retry_backoff_factor": 0.5, "retry_backoff_max": 30}
#: Per request, for the POSTs that are safe to send again because the resource's id makes a
#: repeat harmless (PoolExists, JobExists, TaskExists are handled): azure-core retries only
#: idempotent methods unless told.
SAFE_TO_REPEAT: dict[str, Any] = {"retry_on_methods": frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE",
                                                                  "POST", "PATCH"})}


def backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt`` + 1 (from 1), as :data:`RETRY` waits."""
    return float(min(RETRY["retry_backoff_max"], RETRY["retry_backoff_factor"] * 2 ** (attempt - 1)))


def entra_credential() -> TokenCredential:
    """DefaultAzureCredential, imported lazily (it is slow to import)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def batch_client_args(config: AzureConfig, token: TokenCredential | None = None) -> dict[str, Any]:
    """Keyword arguments for ``azure.batch.BatchClient``."""
    args: dict[str, Any] = {"endpoint": config.batch_endpoint, **RETRY}
    if config.batch_key:
        args["credential"] = AzureNamedKeyCredential(config.batch_account, config.batch_key)
    else:
        credential = token or entra_credential()
        args["credential"] = credential
        args["authentication_policy"] = LoopbackBearerPolicy(credential, BATCH_SCOPE)
    return args

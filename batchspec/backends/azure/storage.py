"""Azure Storage for the Azure backend: stage inputs, issue SAS URLs, fetch outputs.

Uploads skip blobs whose stored MD5 equals the local file's (a second run uploads nothing);
transfers run in parallel; downloads go through the download directory's
:class:`~batchspec.backends.download.Ledger` (never outside it, never over a file batchspec did
not write).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import json
import posixpath
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    ContentSettings,
    ExponentialRetry,
    UserDelegationKey,
    generate_container_sas,
)

from ...errors import EXIT_FAILED, BackendError
from ...plan import Plan
from ...plan.inputs import valid_name
from ..download import Ledger, conflict_error, safe_destination
from .config import AzureConfig, entra_credential

#: Parallel file transfers (each large file is also split into parallel blocks).
TRANSFER_WORKERS = 8
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    md5: bytes | None
    etag: str = ""

    @property
    def content_id(self) -> str:
        """The identity of its content: the MD5, or (a blob uploaded without one) its ETag."""
        return self.md5.hex() if self.md5 else f"etag:{self.etag}"


@dataclass(frozen=True)
class TransferReport:
    transferred: int
    skipped: int
    bytes: int
    md5: dict[str, builtins.bytes] = field(default_factory=dict)  # uploads: each blob's MD5
    refused: list[str] = field(default_factory=list)  # downloads: names that would land outside the directory
    failed: list[tuple[str, str]] = field(default_factory=list)  # downloads: (name, why) that could not be fetched


def file_md5(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


class Storage:
    """One storage account, through azure-storage-blob."""

    def __init__(self, config: AzureConfig, service: BlobServiceClient | None = None) -> None:
        self.service = service or _service(config)
        self.account_name: str = self.service.account_name or ""
        credential = self.service.credential
        self.account_key: str | None = getattr(credential, "account_key", None)
        self._delegation_key: tuple[datetime, UserDelegationKey] | None = None

    # --- containers --------------------------------------------------------------------------

    def ensure_container(self, name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.service.create_container(name)

    def delete_container(self, name: str) -> bool:
        try:
            self.service.delete_container(name)
        except ResourceNotFoundError:
            return False
        return True

    def list_blobs(self, container: str, prefix: str = "") -> dict[str, BlobInfo]:
        client = self.service.get_container_client(container)
        try:
            return {
                b.name: BlobInfo(b.name, b.size, bytes(b.content_settings.content_md5 or b"") or None, b.etag or "")
                for b in client.list_blobs(name_starts_with=prefix or None)
            }
        except ResourceNotFoundError:
            return {}

    def read(self, container: str, name: str, offset: int = 0) -> bytes | None:
        """A blob's bytes from ``offset`` on; None when it does not exist."""
        try:
            return self.service.get_blob_client(container, name).download_blob(offset=offset or None).readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code == 416:  # past its end
                return b""
            raise

    def list_names(self, container: str, prefix: str) -> list[str]:
        """For ``inputs.container``: names of the blobs under ``prefix``."""
        client = self.service.get_container_client(container)
        try:
            return [b.name for b in client.list_blobs(name_starts_with=prefix or None)]
        except ResourceNotFoundError:
            raise BackendError(f"storage container '{container}' (inputs.container) does not exist "
                               f"in account {self.account_name}") from None

    # --- transfers ---------------------------------------------------------------------------

    def upload(self, container: str, files: Sequence[tuple[Path, str]], workers: int = TRANSFER_WORKERS,
               progress: Callable[[int, int], None] | None = None) -> TransferReport:
        """Upload ``(local path, blob name)`` pairs, skipping blobs whose MD5 already matches."""
        existing = self.list_blobs(container)
        client = self.service.get_container_client(container)
        sums: dict[str, bytes] = {}

        def one(item: tuple[Path, str]) -> int:
            path, name = item
            md5 = sums[name] = file_md5(path)
            stored = existing.get(name)
            if stored is not None and stored.md5 == md5:
                return -1
            with path.open("rb") as data:
                client.upload_blob(name, data, overwrite=True, max_concurrency=2,
                                   content_settings=ContentSettings(content_md5=bytearray(md5)))
            return path.stat().st_size

        report = _parallel(one, files, workers, progress)
        return TransferReport(report.transferred, report.skipped, report.bytes, sums)

    def download(self, container: str, blobs: Iterable[tuple[BlobInfo, str]], ledger: Ledger,
                 workers: int = TRANSFER_WORKERS, progress: Callable[[int, int], None] | None = None) -> TransferReport:
        """Download ``(blob, fingerprint of the task that produced it)`` pairs into the ledger's
        directory, keeping their names; files already there with the same content are skipped.

        Raises BackendError for a blob name that would land outside the directory, and
        :class:`~batchspec.backends.download.OutputConflict` (after the rest) for files it would
        have to overwrite that batchspec did not write.
        """
        items: list[tuple[BlobInfo, str, Path]] = []
        refused: list[str] = []  # one bad name never stops the others
        for blob, fingerprint in blobs:
            dest = safe_destination(ledger.root, blob.name)
            if dest is None:
                refused.append(blob.name)
            else:
                items.append((blob, fingerprint, dest))
        client = self.service.get_container_client(container)
        blocked: list[str] = []
        failed: list[tuple[str, str]] = []
        lock = threading.Lock()

        def one(item: tuple[BlobInfo, str, Path]) -> int:
            blob, fingerprint, dest = item
            try:
                if (dest.is_file() and dest.stat().st_size == blob.size
                        and (blob.md5 is None or file_md5(dest) == blob.md5)):
                    if not ledger.produced(blob.name, fingerprint):  # the same bytes: now known as this task's
                        st = dest.stat()
                        ledger.record(blob.name, st.st_size, st.st_mtime_ns, fingerprint)
                    return -1
                if ledger.blocked(blob.name):
                    with lock:
                        blocked.append(blob.name)
                    return -1

                def fetch(part: Path) -> None:
                    with part.open("wb") as out:
                        client.download_blob(blob.name, max_concurrency=2).readinto(out)

                ledger.write(blob.name, fingerprint, fetch)
            except (OSError, ResourceNotFoundError) as exc:  # this file only: the others go on
                with lock:
                    failed.append((blob.name, getattr(exc, "strerror", None) or str(exc).splitlines()[0]))
                return -1
            return blob.size

        report = _parallel(one, items, workers, progress)
        report = dataclasses.replace(report, refused=sorted(refused), failed=sorted(failed))
        if blocked:  # the rest is in place; these stay in the container
            raise conflict_error(ledger.root, sorted(blocked), exit_code=EXIT_FAILED)
        return report

    def delete_blobs(self, container: str, names: Iterable[str], workers: int = TRANSFER_WORKERS) -> int:
        """Delete blobs (those already gone are fine); returns how many were deleted."""
        client = self.service.get_container_client(container)

        def one(name: str) -> int:
            try:
                client.delete_blob(name)
            except ResourceNotFoundError:
                return -1
            return 0

        return _parallel(one, list(names), workers, None).transferred

    def read_json(self, container: str, name: str) -> Any:
        """A small JSON blob's value, or None when there is no such blob (or it is not JSON)."""
        try:
            data = self.service.get_container_client(container).download_blob(name).readall()
        except ResourceNotFoundError:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def write_json(self, container: str, name: str, value: Any) -> None:
        data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        self.service.get_container_client(container).upload_blob(name, data, overwrite=True)

    def check(self, container: str) -> None:
        """Reach the account with these credentials (raises the SDK's error if that fails)."""
        self.service.get_container_client(container).exists()

    # --- SAS -----------------------------------------------------------------------------------

    def container_sas(self, container: str, permission: ContainerSasPermissions, expiry: datetime) -> str:
        """A container SAS token (without '?'): signed by the account key, or by a user
        delegation key when signed in with Entra ID."""
        start = datetime.now(timezone.utc) - timedelta(minutes=15)  # tolerate clock skew
        if self.account_key:
            return generate_container_sas(self.account_name, container, account_key=self.account_key,
                                          permission=permission, expiry=expiry, start=start)
        key = self._user_delegation_key(start, expiry)
        return generate_container_sas(self.account_name, container, user_delegation_key=key,
                                      permission=permission, expiry=expiry, start=start)

    def container_url(self, container: str) -> str:
        return str(self.service.get_container_client(container).url)

    def _user_delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
        if self._delegation_key and self._delegation_key[0] >= expiry:
            return self._delegation_key[1]
        key = self.service.get_user_delegation_key(start, expiry)
        self._delegation_key = (expiry, key)
        return key


def _service(config: AzureConfig) -> BlobServiceClient:
    # Transient failures are retried, but not for minutes: the SDK's default waits 15 s, 45 s, ...
    retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=5)
    if config.storage_connection_string:
        try:
            return BlobServiceClient.from_connection_string(config.storage_connection_string, retry_policy=retry)
        except ValueError:
            raise BackendError("AZURE_STORAGE_CONNECTION_STRING is not a valid connection string") from None
    if config.storage_account:
        url = f"https://{config.storage_account}.blob.core.windows.net"
        credential: Any = (
            {"account_name": config.storage_account, "account_key": config.storage_key}
            if config.storage_key
            else entra_credential()
        )
        return BlobServiceClient(url, credential=credential, retry_policy=retry)
    raise BackendError(
        "the Azure backend needs a storage account for inputs and outputs",
        "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT (with AZURE_STORAGE_KEY, or Entra ID)",
    )


def _parallel(
    func: Callable[[Any], int], items: Sequence[Any], workers: int, progress: Callable[[int, int], None] | None
) -> TransferReport:
    transferred = skipped = total_bytes = 0
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        for done, size in enumerate(pool.map(func, items), start=1):
            if size < 0:
                skipped += 1
            else:
                transferred += 1
                total_bytes += size
            if progress is not None:
                progress(done, len(items))
    return TransferReport(transferred, skipped, total_bytes)


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def blob_name_for(source: str) -> str:
    """The input container's blob name for a local input path: normalised, never absolute,
    and ``..`` spelled out so distinct local paths stay distinct blobs."""
    # Control characters are written %XX too: Azurite cannot list such names (the service
    # encodes them); this name is only batchspec's, the task sees the file's own.
    norm = posixpath.normpath(_CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", valid_name(source)).replace("\\", "/"))
    parts = [("__up__" if p == ".." else p) for p in norm.split("/") if p not in ("", ".")]
    return "/".join(parts) if not norm.startswith("/") else "__root__/" + "/".join(parts)


def container_base(name: str) -> str:
    """A storage-safe container name stem from a spec name."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (base or "batchspec")[:50].strip("-")


def work_container(plan: Plan, stage: str) -> str:
    """The container holding the outputs of ``stage`` that later stages read: one per job
    and stage, named after both (at most 52 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-")[:16].strip("-") or "stage"
    digest = hashlib.sha256(f"{plan.job_id}\0{stage}".encode()).hexdigest()[:10]
    return f"{container_base(plan.name)[:24].strip('-')}-{slug}-{digest}"

"""Pytest plugin: Azurite blob storage and an in-process Batch emulator for tests.

Fixtures:

* ``azurite`` (session): ``azurite-blob --skipApiVersionCheck --disableTelemetry
  --inMemoryPersistence`` on a free loopback port. The binary comes from ``$BATCHSPEC_AZURITE_BIN``,
  ``node_modules/.bin/azurite-blob`` at the repository root (``npm install``), or ``PATH``; when it
  is missing the test fails (CI must not silently skip storage tests).
* ``emulator`` (function): a running :class:`~batchspec.emulator.Emulator` with fast timings.
* ``batch_client`` (function): a real ``azure.batch.BatchClient`` with Shared Key for it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.batch import BatchClient

from batchspec.emulator import Emulator
from batchspec.emulator.testing import batch_client as make_batch_client
from batchspec.emulator.testing import running_emulator

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    blob_endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    account: str
    key: str
    connection_string: str

    def container_sas_url(self, container: str, *, write: bool = False) -> str:
        """A container URL with a SAS granting read+list (and write/create when asked)."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        permission = ContainerSasPermissions(read=True, list=True, write=write, create=write, add=write)
        sas = generate_container_sas(
            self.account,
            container,
            account_key=self.key,
            permission=permission,
            expiry=datetime.now(timezone.utc) + timedelta(hours=2),
        )
        return f"{self.blob_endpoint}/{container}?{sas}"

    def blob_sas_url(self, container: str, blob: str) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        sas = generate_blob_sas(
            self.account,
            container,
            blob,
            account_key=self.key,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(timezone.utc) + timedelta(hours=2),
        )
        return f"{self.blob_endpoint}/{container}/{blob}?{sas}"


def find_azurite() -> str | None:
    """The ``azurite-blob`` executable: env override, repo ``node_modules``, then ``PATH``."""
    env = os.environ.get("BATCHSPEC_AZURITE_BIN")
    if env:
        return env if Path(env).exists() else None
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite-blob exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"azurite-blob did not listen on port {port} within {timeout:.0f} s")


@contextmanager
def running_azurite(workdir: Path) -> Iterator[Azurite]:
    """``azurite-blob`` on a free loopback port, its log in ``workdir``, for the block's duration.

    Raises RuntimeError when the binary is missing or does not start.
    """
    binary = find_azurite()
    if binary is None:
        raise RuntimeError(
            "azurite-blob not found: run `npm install` at the repository root (package.json pins azurite), "
            "put azurite-blob on PATH, or set BATCHSPEC_AZURITE_BIN to its path."
        )
    port = free_port()
    with (workdir / "azurite.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "--skipApiVersionCheck", "--disableTelemetry", "--inMemoryPersistence",
             "--blobHost", "127.0.0.1", "--blobPort", str(port)],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            try:
                wait_for_port(port, proc, timeout=60)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; see {workdir / 'azurite.log'}") from None
            endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
            connection = (
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoint};"
            )
            yield Azurite(endpoint, AZURITE_ACCOUNT, AZURITE_KEY, connection)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        with running_azurite(tmp_path_factory.mktemp("azurite")) as service:
            yield service
    except RuntimeError as exc:  # CI must not silently skip storage tests
        pytest.fail(str(exc))


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with running_emulator() as emu:
        yield emu


@pytest.fixture
def batch_client(emulator: Emulator) -> BatchClient:
    return make_batch_client(emulator)

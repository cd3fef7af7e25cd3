"""Fixtures for Azure-backend tests: the emulator and Azurite together, and a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from click.testing import CliRunner, Result

from batchspec.cli import cli
from batchspec.emulator import Emulator
from batchspec.emulator.testing import running_emulator
from tests.azurite import Azurite

REPO = Path(__file__).resolve().parents[2]


@dataclass
class AzureWorld:
    emulator: Emulator
    azurite: Azurite
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env={**self.env, **(env or {})}, catch_exceptions=False)

    @property
    def blobs(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def blob_names(self, container: str) -> list[str]:
        return sorted(b.name for b in self.blobs.get_container_client(container).list_blobs())


@pytest.fixture
def world(azurite: Azurite) -> Iterator[AzureWorld]:
    """A fresh emulator, and Azurite (shared by the session) emptied of earlier tests' containers."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in service.list_containers():
        service.delete_container(container.name)
    with running_emulator(nodes=2) as emulator:
        env = {
            "AZURE_BATCH_ENDPOINT": emulator.endpoint,
            "AZURE_BATCH_ACCOUNT": emulator.account,
            "AZURE_BATCH_ACCESS_KEY": emulator.key,
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        }
        yield AzureWorld(emulator, azurite, env)


def copy_spec(name: str, dest: Path, **replace: str) -> Path:
    """A copy of ``specs/<name>`` in ``dest``, with text replacements; inputs are the caller's."""
    text = (REPO / "specs" / name).read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / name
    path.write_text(text)
    return path


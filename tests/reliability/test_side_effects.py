"""Issue 9, item 11: nothing that costs money is created before every check that can fail has
passed, and a failed run does not leave a pool it created unless the spec says keep."""

from __future__ import annotations

import pytest

from batchspec.backends.azure import AzureBackend
from batchspec.errors import BackendError

from .conftest import AzureWorld, make_inputs, write_spec

pytestmark = pytest.mark.e2e


def pools(world: AzureWorld) -> list[str]:
    """Pools that exist and are not being deleted."""
    from batchspec.emulator.testing import batch_client

    return [p.id for p in batch_client(world.emulator).list_pools() if getattr(p.state, "value", p.state) != "deleting"]


@pytest.mark.parametrize("storage", [
    {"AZURE_STORAGE_CONNECTION_STRING": ""},  # Batch configured, storage not at all: the case
    {"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                        "AccountKey=d3Jvbmc=;BlobEndpoint={azurite}/;"},  # reachable, wrong key
])
def test_storage_problems_stop_the_run_before_the_pool(tmp_path, world: AzureWorld, storage: dict[str, str]) -> None:
    make_inputs(tmp_path, {"a.txt": "a\n"})
    spec = write_spec(tmp_path, "cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"], name="relpre")
    env = {k: v.replace("{azurite}", world.azurite.blob_endpoint) for k, v in storage.items()}
    result = world.run("run", str(spec), "--backend", "azure", env=env)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output and "storage" in result.output.lower()
    assert world.emulator.request_counts().get("create_pool", 0) == 0
    assert pools(world) == []


def test_batch_problems_stop_the_run_before_the_pool(tmp_path, world: AzureWorld) -> None:
    make_inputs(tmp_path, {"a.txt": "a\n"})
    spec = write_spec(tmp_path, "true", name="relpre")
    result = world.run("run", str(spec), "--backend", "azure", env={"AZURE_BATCH_ACCOUNT": "someone-else"})
    assert result.exit_code == 2, result.output
    assert world.emulator.request_counts().get("create_pool", 0) == 0


@pytest.mark.parametrize(("policy", "left"), [("delete", []), ("keep", ["rel-pool"])])
def test_a_run_that_fails_after_creating_the_pool_follows_cleanup_pool(
        tmp_path, world: AzureWorld, monkeypatch: pytest.MonkeyPatch, policy: str, left: list[str]) -> None:
    make_inputs(tmp_path, {"a.txt": "a\n"})
    spec = write_spec(tmp_path, "true", name="relpre", cleanup={"pool": policy})

    def broken_staging(self: AzureBackend, plan: object, ctx: object) -> None:
        raise BackendError("staging failed (injected)")

    monkeypatch.setattr(AzureBackend, "stage_inputs", broken_staging)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 2 and "staging failed (injected)" in result.output, result.output
    assert world.emulator.request_counts().get("create_pool") == 1
    assert pools(world) == left, result.output
    if policy == "keep":
        assert "pool rel-pool is kept (cleanup.pool: keep)" in result.output

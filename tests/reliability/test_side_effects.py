"""Issue 9, item 11: nothing that costs money is created before every check that can fail has
passed, and a failed run does not leave a pool it created unless the spec says keep."""

from __future__ import annotations

import time
from typing import Any

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


@pytest.mark.parametrize(("policy", "left"), [(None, []), ("delete", []), ("keep", ["rel-pool"])])
def test_a_run_that_fails_after_creating_the_pool_deletes_it_unless_the_spec_says_keep(
        tmp_path, world: AzureWorld, monkeypatch: pytest.MonkeyPatch, policy: str | None, left: list[str]) -> None:
    # Issue 10 (a failed run never leaves a pool it created unless the spec says keep): without
    # cleanup.pool in the spec, the pool this run created goes, and the output says so.
    make_inputs(tmp_path, {"a.txt": "a\n"})
    extra: dict[str, Any] = {"cleanup": {"pool": policy}} if policy else {}
    spec = write_spec(tmp_path, "true", name="relpre", **extra)

    def broken_staging(self: AzureBackend, plan: object, ctx: object) -> None:
        raise BackendError("staging failed (injected)")

    monkeypatch.setattr(AzureBackend, "stage_inputs", broken_staging)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 2 and "staging failed (injected)" in result.output, result.output
    assert world.emulator.request_counts().get("create_pool") == 1
    assert pools(world) == left, result.output
    if policy is None:
        assert "deleting pool rel-pool, which it created" in result.output
    if policy == "keep":
        assert "pool rel-pool is kept (cleanup.pool: keep)" in result.output


def test_a_reused_pool_is_never_deleted_on_error(tmp_path, world: AzureWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    make_inputs(tmp_path, {"a.txt": "a\n"})
    spec = write_spec(tmp_path, "true", name="relpre", cleanup={"pool": "keep"})
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 0  # makes the pool, keeps it
    plain = write_spec(tmp_path / "second", "true", name="relpre2")  # no cleanup.pool: the default
    make_inputs(tmp_path / "second", {"b.txt": "b\n"})

    def broken_staging(self: AzureBackend, plan: object, ctx: object) -> None:
        raise BackendError("staging failed (injected)")

    monkeypatch.setattr(AzureBackend, "stage_inputs", broken_staging)
    result = world.run("run", str(plain), "--backend", "azure")
    assert result.exit_code == 2 and "reusing existing pool rel-pool" in result.output, result.output
    assert pools(world) == ["rel-pool"]


def test_a_pool_that_never_runs_a_task_stops_the_run_after_ready_timeout(tmp_path, world: AzureWorld) -> None:
    # A start task that never ends stands for a pool that never gets a usable node (quota,
    # spot capacity, ...): the run waited forever, printing a line a second.
    make_inputs(tmp_path, {"a.txt": "a\n"})
    pool = {"start_task": {"command": "sleep 600", "wait_for_success": True}, "ready_timeout": "3s"}
    spec = write_spec(tmp_path, "true", name="relwait", pool=pool)
    started = time.monotonic()
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 2, result.output
    assert "no task has run for 3.0s (pool.ready_timeout): pool rel-pool is steady with 1 of 1 nodes" in result.output
    assert "likely causes: the account's core quota" in result.output
    assert time.monotonic() - started < 60
    assert pools(world) == []  # this run made it, and the spec does not say keep
    progress = [line for line in result.output.splitlines() if line.startswith("progress:")]
    assert len(progress) == len(set(progress)), result.output  # a progress line only when something changed

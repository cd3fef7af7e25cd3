"""Files, job settings and output rules on the Azure backend, through the real SDKs against the
emulator and Azurite: every kind of file (local, URL, storage folder, by SAS or auto-storage) for
the job, a task and the start task; job environment and wall-clock limit; failure outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.batch import BatchClient

from batchspec.emulator.testing import batch_client, running_emulator
from tests.azurite import Azurite

from .conftest import AzureWorld

pytestmark = pytest.mark.e2e

POOL = {"id": "files-pool", "vm_size": "standard_a1_v2",
        "image": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
        "node_agent_sku": "batch.node.ubuntu 24.04", "nodes": {"dedicated": 1}}


def write(tmp_path: Path, **spec: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps({"batchspec": 1, "name": "files", "pool": POOL, "inputs": {"path": "inputs/*"},
                                "outputs": {"download": "out"}, "cleanup": {"job": "keep"}, **spec}, indent=2))
    (tmp_path / "inputs").mkdir(exist_ok=True)
    return path


def job_id(output: str) -> str:
    return next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("job "))


def test_every_kind_of_file_reaches_the_tasks(tmp_path: Path, world: AzureWorld, web: str) -> None:
    shared = world.blobs.get_container_client("shared-assets")
    shared.create_container()
    shared.upload_blob("luts/film/warm.cube", b"warm")
    shared.upload_blob("luts/other.cube", b"not under the prefix")
    (tmp_path / "web" / "font.ttf").write_text("font")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "logo.png").write_bytes(b"PNG")
    (tmp_path / "assets" / "setup.sh").write_text("#!/bin/sh\necho set-up > $AZ_BATCH_NODE_SHARED_DIR/setup.txt\n")
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.srt").write_text("sub a")
    spec = write(tmp_path, params={"look": "film"},
                 pool={**POOL, "start_task": {"command": "./setup.sh",
                                              "files": [{"path": "assets/setup.sh", "mode": "0755"}]}},
                 files=[{"path": "assets/logo.png"}, {"url": f"{web}/font.ttf", "to": "fonts/f.ttf"},
                        {"container": "shared-assets", "prefix": "luts/<<params.look>>/", "to": "lut"}],
                 task={"command": "cat logo.png fonts/f.ttf lut/luts/film/warm.cube <<stem>>.srt "
                                  "$AZ_BATCH_NODE_SHARED_DIR/setup.txt > <<stem>>.out; ls lut/luts >> <<stem>>.out",
                       "outputs": ["<<stem>>.out"], "files": [{"path": "subs/<<stem>>.srt"}]})
    (tmp_path / "inputs" / "a.txt").write_text("x")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a.out").read_text() == "PNGfontwarmsub aset-up\nfilm\n"
    task = next(iter(batch_client(world.emulator).list_tasks(job_id(result.output))))
    folder = next(f for f in task.resource_files or [] if f.blob_prefix)
    assert folder.storage_container_url and "/shared-assets?" in folder.storage_container_url
    assert (folder.blob_prefix, folder.file_path) == ("luts/film/", "lut")
    pool = batch_client(world.emulator).get_pool("files-pool")
    assert pool.start_task is not None
    (setup,) = pool.start_task.resource_files or []
    assert (setup.file_path, setup.file_mode) == ("setup.sh", "0755")


def test_storage_folders_by_auto_storage(tmp_path: Path, azurite: Azurite) -> None:
    with running_emulator(nodes=1, auto_storage=azurite.connection_string) as emulator:
        world = AzureWorld(emulator, azurite, {
            "AZURE_BATCH_ENDPOINT": emulator.endpoint, "AZURE_BATCH_ACCOUNT": emulator.account,
            "AZURE_BATCH_ACCESS_KEY": emulator.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
            "AZURE_BATCH_AUTO_STORAGE": "true"})
        for container in world.blobs.list_containers():
            world.blobs.delete_container(container.name)
        shared = world.blobs.get_container_client("models")
        shared.create_container()
        shared.upload_blob("v2/weights.bin", b"weights")
        spec = write(tmp_path, files=[{"container": "models", "prefix": "v2/"}],
                     task={"command": "cat v2/weights.bin > <<stem>>.out", "outputs": ["<<stem>>.out"]})
        (tmp_path / "inputs" / "a.txt").write_text("x")
        result = world.run("run", str(spec), "--backend", "azure")
        assert result.exit_code == 0, result.output
        task = next(iter(batch_client(emulator).list_tasks(job_id(result.output))))
    (folder,) = [f for f in task.resource_files or [] if f.blob_prefix]
    assert (folder.auto_storage_container_name, folder.storage_container_url) == ("models", None)
    assert (tmp_path / "out" / "a.out").read_text() == "weights"


def test_job_environment_and_failure_outputs(tmp_path: Path, world: AzureWorld) -> None:
    spec = write(tmp_path, params={"level": "debug"}, job={"env": {"LEVEL": "<<params.level>>", "BOTH": "job"}},
                 task={"command": "echo $LEVEL $BOTH > <<stem>>.env; echo why > why.txt; [ <<stem>> = ok ]",
                       "env": {"BOTH": "task"},
                       "outputs": [{"path": "<<stem>>.env", "when": "always", "to": "env/"},
                                   {"path": "why.txt", "when": "failure", "to": "failed/<<stem>>.txt"}]})
    for name in ("ok", "bad"):
        (tmp_path / "inputs" / f"{name}.txt").write_text(name)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 1, result.output
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "env/bad.env", "env/ok.env", "failed/bad.txt"]
    assert (out / "env" / "ok.env").read_text() == "debug task\n"
    job = batch_client(world.emulator).get_job(job_id(result.output))
    assert {s.name: s.value for s in job.common_environment_settings or []} == {"LEVEL": "debug", "BOTH": "job"}


def test_the_job_wall_clock_limit(tmp_path: Path, world: AzureWorld) -> None:
    spec = write(tmp_path, job={"timeout": "2s"}, task={"command": "sleep 60", "outputs": []})
    for name in ("a", "b", "c"):
        (tmp_path / "inputs" / f"{name}.txt").write_text(name)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 1, result.output
    assert "the job's wall-clock limit (job.timeout) passed" in result.output
    assert "FAILED: 0 succeeded, 3 failed of 3 tasks" in result.output
    client: BatchClient = batch_client(world.emulator)
    job = client.get_job(job_id(result.output))
    assert job.constraints is not None and job.constraints.max_wall_clock_time is not None
    assert job.constraints.max_wall_clock_time.total_seconds() == 2

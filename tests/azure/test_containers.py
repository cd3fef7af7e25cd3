"""Container tasks on the Azure backend, through the real SDKs, against the emulator (running them
with podman or docker and the test image) and Azurite."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.batch import models as m

from batchspec.emulator.testing import batch_client
from tests.media import decodes_cleanly, make_mp4, probe_duration

from .conftest import AzureWorld, copy_spec

pytestmark = pytest.mark.e2e

KEEP_JOB = {"cleanup: {job: delete, pool: keep, inputs: keep}": "cleanup: {job: keep, pool: keep, inputs: keep}"}


def container_spec(tmp_path: Path, lengths: dict[str, float], **replace: str) -> Path:
    """specs/mp4-to-mp3-container.yaml as shipped, over generated clips."""
    spec = copy_spec("mp4-to-mp3-container.yaml", tmp_path / "specs", **replace)
    for stem, seconds in lengths.items():
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", seconds, size="64x48")
    return spec


def test_the_container_spec_runs_on_azure_in_its_image(tmp_path: Path, world: AzureWorld,
                                                        container_image: str) -> None:
    lengths = {"clip-a": 1.0, "clip b": 2.0}
    spec = container_spec(tmp_path, lengths, **KEEP_JOB)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert "OK: 2 succeeded, 0 failed of 2 tasks" in result.output
    out = spec.parent / "out" / "mp4-to-mp3-container"
    for stem, seconds in lengths.items():
        mp3 = out / f"{stem}.mp3"
        assert decodes_cleanly(mp3)
        assert probe_duration(mp3) == pytest.approx(seconds, abs=0.15)
    # What the service was asked for, and what it reports having run.
    client = batch_client(world.emulator)
    pool = client.get_pool("ffmpeg-container-pool")
    configuration = pool.virtual_machine_configuration.container_configuration  # type: ignore[union-attr]
    assert configuration is not None and configuration.type == "dockerCompatible"
    assert configuration.container_image_names == [container_image]
    (job,) = client.list_jobs()
    for task in client.list_tasks(job.id):
        settings = task.container_settings
        assert settings is not None and settings.image_name == container_image
        assert settings.working_directory == "taskWorkingDirectory"
        info = task.execution_info.container_info  # type: ignore[union-attr]
        assert info is not None and info.container_id and info.state == "exited"
    nodes = list(client.list_nodes("ffmpeg-container-pool"))
    assert nodes and all(n.state in ("idle", "running") for n in nodes)


def test_an_image_the_nodes_cannot_pull_makes_them_unusable(tmp_path: Path, world: AzureWorld,
                                                             container_image: str) -> None:
    spec = container_spec(tmp_path, {"a": 1.0})
    result = world.run("run", str(spec), "--backend", "azure", "--set", "image=127.0.0.1:1/batchspec/missing:1")
    assert result.exit_code == 1, result.output
    assert "is unusable: ContainerInvalidImage: One or more container images specified are invalid" in result.output
    assert "ContainerImage: 127.0.0.1:1/batchspec/missing:1" in result.output
    assert "hint: for a container pool: check the images" in result.output


def test_registry_logins_come_from_the_environment_and_stay_secret(tmp_path: Path, world: AzureWorld,
                                                                    container_image: str) -> None:
    registries = ("  # container:\n  #   registries: [{server: myregistry.azurecr.io, username_env: REGISTRY_USERNAME, "
                  "password_env: REGISTRY_PASSWORD}]")
    login = ("  container:\n    registries: [{server: myregistry.azurecr.io, username_env: REGISTRY_USERNAME, "
             "password_env: REGISTRY_PASSWORD}]")
    spec = container_spec(tmp_path, {"a": 1.0}, **{registries: login})
    missing = world.run("run", str(spec), "--backend", "azure")
    assert missing.exit_code == 2
    assert "registry myregistry.azurecr.io: environment variables REGISTRY_USERNAME and REGISTRY_PASSWORD are not " \
           "set" in missing.output
    client = batch_client(world.emulator)
    assert not list(client.list_pools())  # nothing was created before the check failed

    password = "pa55-w0rd-never-shown"
    result = world.run("run", str(spec), "--backend", "azure",
                       env={"REGISTRY_USERNAME": "robot", "REGISTRY_PASSWORD": password})
    assert result.exit_code == 0, result.output
    assert password not in result.output
    pool = client.get_pool("ffmpeg-container-pool")
    (registry,) = pool.virtual_machine_configuration.container_configuration.container_registries  # type: ignore
    assert (registry.registry_server, registry.username, registry.password) == ("myregistry.azurecr.io", "robot",
                                                                                None)
    # The emulator keeps the login for its nodes' pulls, in memory only.
    (kept,) = world.emulator.state.pools["ffmpeg-container-pool"].logins
    assert (kept.server, kept.username, kept.password) == ("myregistry.azurecr.io", "robot", password)


def test_a_pool_that_exists_without_containers_is_refused(tmp_path: Path, world: AzureWorld,
                                                          container_image: str) -> None:
    client = batch_client(world.emulator)
    client.create_pool(m.BatchPoolCreateOptions(
        id="ffmpeg-container-pool", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    spec = container_spec(tmp_path, {"a": 1.0})
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 2
    assert "pool 'ffmpeg-container-pool' exists without a container configuration" in result.output
    assert not list(client.list_jobs())


IDENTITY = ("/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
            "batch-pull")


def test_a_managed_identity_login_needs_the_pool_made_with_it(tmp_path: Path, world: AzureWorld,
                                                             container_image: str) -> None:
    registries = ("  # container:\n  #   registries: [{server: myregistry.azurecr.io, username_env: REGISTRY_USERNAME, "
                  "password_env: REGISTRY_PASSWORD}]")
    spec = container_spec(tmp_path, {"a": 1.0}, **{registries: (
        f"  container:\n    registries: [{{server: myregistry.azurecr.io, identity: '{IDENTITY}'}}]")})
    missing = world.run("run", str(spec), "--backend", "azure")
    assert missing.exit_code == 2
    assert f"registry login through managed identity {IDENTITY} needs pool 'ffmpeg-container-pool' to exist" \
        in missing.output
    assert "through Azure Resource Manager" in missing.output
    client = batch_client(world.emulator)
    assert not list(client.list_pools())
    # As a pool made through Resource Manager would be (the Batch API itself cannot give one an identity).
    client.create_pool(m.BatchPoolCreateOptions({
        "id": "ffmpeg-container-pool", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": [{"resourceId": IDENTITY}]},
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204"},
            "nodeAgentSKUId": "batch.node.ubuntu 22.04",
            "containerConfiguration": {
                "type": "dockerCompatible", "containerImageNames": [container_image],
                "containerRegistries": [{"registryServer": "myregistry.azurecr.io",
                                         "identityReference": {"resourceId": IDENTITY}}]}}}))
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert "reusing existing pool ffmpeg-container-pool" in result.output

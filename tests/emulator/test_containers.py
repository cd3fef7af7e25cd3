"""Container pools and container tasks on the emulator, through the real SDK: what the service
accepts and returns, tasks run in their image (podman or docker with the test image), the
service's failureInfo for images and settings that cannot work, and unusable nodes."""

from __future__ import annotations

from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from batchspec.containers import ContainerError
from batchspec.emulator import Emulator
from batchspec.emulator.containers import ContainerLauncher
from tests.emulator.helpers import (
    IMAGE,
    create_job,
    create_pool,
    execution,
    failure_code,
    read_task_file,
    sh,
    wait_nodes,
    wait_task,
)

HPC = m.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204")


def container_pool(client: BatchClient, images: list[str], *, pool_id: str = "pool",
                   registries: list[m.ContainerRegistryReference] | None = None) -> None:
    client.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size="Standard_D2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=HPC, node_agent_sku_id="batch.node.ubuntu 22.04",
            container_configuration=m.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=images, container_registries=registries))))


def add(client: BatchClient, task_id: str, script: str, image: str, **settings: Any) -> m.BatchTask:
    client.create_task("job", m.BatchTaskCreateOptions(
        id=task_id, command_line=f"/bin/bash -c '{script}'",
        container_settings=m.BatchTaskContainerSettings(image_name=image, **settings),
        environment_settings=[m.EnvironmentSetting(name="MINE", value="mine")]))
    return wait_task(client, "job", task_id, timeout=60)


def test_a_container_pool_and_its_tasks(batch_client: BatchClient, container_image: str) -> None:
    secret = "registry-pa55word"
    container_pool(batch_client, [container_image], registries=[
        m.ContainerRegistryReference(registry_server="myregistry.azurecr.io", username="robot", password=secret)])
    pool = batch_client.get_pool("pool")
    configuration = pool.virtual_machine_configuration.container_configuration  # type: ignore[union-attr]
    assert configuration is not None and configuration.container_image_names == [container_image]
    (registry,) = configuration.container_registries or []
    assert (registry.registry_server, registry.username, registry.password) == ("myregistry.azurecr.io", "robot",
                                                                                None)
    wait_nodes(batch_client, "pool", "idle", 1, timeout=60)
    create_job(batch_client)
    task = add(batch_client, "t1", "pwd; echo $MINE $AZ_BATCH_TASK_ID; echo $PATH; ls $AZ_BATCH_NODE_SHARED_DIR "
                                    ">/dev/null && echo shared; echo made > out.txt", container_image)
    assert execution(task).exit_code == 0, read_task_file(batch_client, "job", "t1", "stderr.txt")
    assert task.container_settings.working_directory == "taskWorkingDirectory"  # type: ignore[union-attr]
    info = execution(task).container_info
    assert info is not None and info.container_id and info.state == "exited"
    root = task.node_info.task_root_directory  # type: ignore[union-attr]
    lines = read_task_file(batch_client, "job", "t1", "stdout.txt").decode().splitlines()
    assert lines[0].endswith(f"{root}/wd") and lines[1:] == ["mine t1", "/usr/local/bin:/bin", "shared"]
    assert read_task_file(batch_client, "job", "t1", "wd/out.txt") == b"made\n"  # on the node, via the files API
    image_dir = add(batch_client, "t2", "pwd", container_image, working_directory="containerImageDefault")
    assert read_task_file(batch_client, "job", "t2", "stdout.txt") == b"/srv\n"
    assert image_dir.container_settings.working_directory == "containerImageDefault"  # type: ignore[union-attr]


def test_bind_mounts_limit_what_the_container_sees(batch_client: BatchClient, container_image: str) -> None:
    container_pool(batch_client, [container_image])
    create_job(batch_client)
    mounts = [m.ContainerHostBatchBindMountEntry(source="Task", is_read_only=False),
              m.ContainerHostBatchBindMountEntry(source="Shared", is_read_only=True)]
    task = add(batch_client, "t", "ls $AZ_BATCH_NODE_STARTUP_DIR 2>/dev/null || echo no-startup; "
                                  "(echo x > $AZ_BATCH_NODE_SHARED_DIR/f) 2>/dev/null || echo shared-read-only",
               container_image, container_host_batch_bind_mounts=mounts)
    assert execution(task).exit_code == 0
    assert read_task_file(batch_client, "job", "t", "stdout.txt") == b"no-startup\nshared-read-only\n"


def test_an_image_that_cannot_be_pulled_fails_the_task(batch_client: BatchClient, container_image: str) -> None:
    container_pool(batch_client, [])
    create_job(batch_client)
    missing = "127.0.0.1:1/batchspec/missing:1"
    task = add(batch_client, "t", "true", missing)
    failure = execution(task).failure_info
    assert failure is not None and execution(task).result == m.BatchTaskExecutionResult.FAILURE
    assert (failure.category, failure.code) == (m.BatchErrorSourceCategory.USER_ERROR, "ContainerInvalidImage")
    assert failure.message == "One or more container images specified are invalid"
    details = {d.name: d.value for d in failure.details or []}
    assert details["ContainerImage"] == missing and "cannot pull" in (details["Message"] or "")
    assert execution(task).exit_code is None


def test_settings_the_runtime_refuses_and_a_pool_without_containers(batch_client: BatchClient,
                                                                    container_image: str) -> None:
    container_pool(batch_client, [container_image])
    create_job(batch_client)
    bad = add(batch_client, "bad-options", "true", container_image, container_run_options="--no-such-option")
    assert failure_code(bad) == "ContainerInvalidSettings"
    create_pool(batch_client, "plain")
    create_job(batch_client, "plain-job", "plain")
    batch_client.create_task("plain-job", m.BatchTaskCreateOptions(
        id="t", command_line="/bin/true", container_settings=m.BatchTaskContainerSettings(image_name=container_image)))
    task = wait_task(batch_client, "plain-job", "t", timeout=60)
    assert failure_code(task) == "ContainerInvalidSettings"
    assert "no containerConfiguration" in str(execution(task).failure_info)
    # A task without containerSettings on a container pool runs on the node itself.
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="host", command_line=sh("echo on-host")))
    assert execution(wait_task(batch_client, "job", "host")).exit_code == 0


def test_what_the_service_refuses_at_once(batch_client: BatchClient) -> None:
    with pytest.raises(HttpResponseError) as caught:
        batch_client.create_pool(m.BatchPoolCreateOptions(
            id="p", vm_size="Standard_D2s_v3", virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=HPC, node_agent_sku_id="batch.node.ubuntu 22.04",
                container_configuration=m.BatchContainerConfiguration(type="podmanCompatible"))))
    assert caught.value.error is not None and caught.value.error.code == "InvalidPropertyValue"
    create_pool(batch_client)
    create_job(batch_client)
    with pytest.raises(HttpResponseError) as caught:
        batch_client.create_task("job", m.BatchTaskCreateOptions(
            id="t", command_line="true", container_settings=m.BatchTaskContainerSettings(
                image_name="x", working_directory="somewhereElse")))
    assert caught.value.error is not None and caught.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as caught:  # only a container task may leave its command line empty
        batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line=""))
    assert caught.value.error is not None and caught.value.error.code == "MissingRequiredProperty"
    batch_client.create_task("job", m.BatchTaskCreateOptions(
        id="entrypoint", command_line="", container_settings=m.BatchTaskContainerSettings(image_name="x")))


def test_nodes_that_cannot_get_their_images_are_unusable(batch_client: BatchClient, emulator: Emulator,
                                                         container_image: str) -> None:
    container_pool(batch_client, [container_image, "127.0.0.1:1/batchspec/missing:1"])
    (node,) = wait_nodes(batch_client, "pool", "unusable", 1, timeout=60)
    (error,) = node.errors or []
    assert error.code == "ContainerInvalidImage"
    details = {d.name: d.value for d in error.error_details or []}
    assert details["ContainerImage"] == "127.0.0.1:1/batchspec/missing:1"
    counts = {c.pool_id: c for c in batch_client.list_pool_node_counts()}
    assert counts["pool"].dedicated.unusable == 1  # type: ignore[union-attr]

    def no_runtime() -> None:
        raise ContainerError("ContainerRuntimeNotFound", "no container runtime on this machine")

    assert emulator.engine is not None
    emulator.engine.runner.containers = ContainerLauncher(find=no_runtime)  # type: ignore[arg-type]
    container_pool(batch_client, [], pool_id="other")
    (node,) = wait_nodes(batch_client, "other", "unusable", 1, timeout=30)
    assert node.errors and node.errors[0].code == "ContainerMiscError"
    assert "no container runtime" in str(node.errors[0].error_details)


def test_a_plain_pool_is_unchanged(batch_client: BatchClient) -> None:
    create_pool(batch_client)
    pool = batch_client.get_pool("pool")
    assert pool.virtual_machine_configuration.container_configuration is None  # type: ignore[union-attr]
    assert pool.virtual_machine_configuration.image_reference.offer == IMAGE.image_reference.offer  # type: ignore

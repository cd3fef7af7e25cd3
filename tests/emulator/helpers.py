"""Helpers for emulator tests: pools, jobs and waiting, all through the real SDK."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from azure.batch import BatchClient
from azure.batch import models as m

T = TypeVar("T")

IMAGE = m.VirtualMachineConfiguration(
    image_reference=m.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
    node_agent_sku_id="batch.node.ubuntu 24.04",
)


WINDOWS_IMAGE = m.VirtualMachineConfiguration(
    image_reference=m.BatchVmImageReference(
        publisher="MicrosoftWindowsServer", offer="WindowsServer", sku="2022-datacenter"
    ),
    node_agent_sku_id="batch.node.windows amd64",
)


def create_pool(
    client: BatchClient,
    pool_id: str = "pool",
    *,
    dedicated: int = 1,
    low_priority: int = 0,
    slots: int = 1,
    start_task: m.BatchStartTask | None = None,
    fill: str | None = None,
    windows: bool = False,
) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="Standard_D2s_v3",
            virtual_machine_configuration=WINDOWS_IMAGE if windows else IMAGE,
            target_dedicated_nodes=dedicated,
            target_low_priority_nodes=low_priority,
            task_slots_per_node=slots,
            start_task=start_task,
            task_scheduling_policy=m.BatchTaskSchedulingPolicy(node_fill_type=fill) if fill else None,
        )
    )


def create_job(client: BatchClient, job_id: str = "job", pool_id: str = "pool", **kwargs: Any) -> None:
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id), **kwargs))


def sh(script: str) -> str:
    """A commandLine running ``script`` under /bin/sh (Batch runs commandLine without a shell)."""
    return "/bin/sh -c " + "'" + script.replace("'", "'\"'\"'") + "'"


def wait_for(check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


def wait_completed(client: BatchClient, job_id: str, total: int, timeout: float = 30.0) -> m.BatchTaskCountsResult:
    def done() -> m.BatchTaskCountsResult | None:
        counts = client.get_job_task_counts(job_id)
        return counts if counts.task_counts.completed >= total else None

    return wait_for(done, timeout, what=f"{total} completed tasks in {job_id}")


def wait_task(client: BatchClient, job_id: str, task_id: str, timeout: float = 20.0) -> m.BatchTask:
    def done() -> m.BatchTask | None:
        task = client.get_task(job_id, task_id)
        return task if task.state == m.BatchTaskState.COMPLETED else None

    return wait_for(done, timeout, what=f"task {task_id} to complete")


def wait_nodes(client: BatchClient, pool_id: str, state: str, count: int, timeout: float = 20.0) -> list[m.BatchNode]:
    def ready() -> list[m.BatchNode] | None:
        nodes = [n for n in client.list_nodes(pool_id) if n.state == state]
        return nodes if len(nodes) >= count else None

    return wait_for(ready, timeout, what=f"{count} node(s) {state} in {pool_id}")


def read_task_file(client: BatchClient, job_id: str, task_id: str, path: str) -> bytes:
    return b"".join(client.download_task_file(job_id, task_id, path))


def execution(task: m.BatchTask) -> m.BatchTaskExecutionInfo:
    """A task's executionInfo (always present on the service's tasks)."""
    assert task.execution_info is not None, task
    return task.execution_info


def failure_code(task: m.BatchTask) -> str | None:
    info = execution(task).failure_info
    return info.code if info is not None else None


def node_info(task: m.BatchTask) -> m.BatchNodeInfo:
    assert task.node_info is not None, task
    return task.node_info


def start_info(node: m.BatchNode) -> m.BatchStartTaskInfo:
    assert node.start_task_info is not None, node
    return node.start_task_info


def wait_job_state(client: BatchClient, job_id: str, state: str, timeout: float = 20.0) -> m.BatchJob:
    def reached() -> m.BatchJob | None:
        job = client.get_job(job_id)
        return job if job.state == state else None

    return wait_for(reached, timeout, what=f"job {job_id} {state}")


def wait_pool_steady(client: BatchClient, pool_id: str, timeout: float = 20.0) -> m.BatchPool:
    def steady() -> m.BatchPool | None:
        pool = client.get_pool(pool_id)
        return pool if pool.allocation_state == m.AllocationState.STEADY else None

    return wait_for(steady, timeout, what=f"pool {pool_id} steady")


def wait_pool(
    client: BatchClient, pool_id: str, ready: Callable[[m.BatchPool], bool], timeout: float = 20.0
) -> m.BatchPool:
    def check() -> m.BatchPool | None:
        pool = client.get_pool(pool_id)
        return pool if ready(pool) else None

    return wait_for(check, timeout, what=f"pool {pool_id}")


def wait_counts(
    client: BatchClient, job_id: str, ready: Callable[[m.BatchTaskCounts], bool], timeout: float = 20.0
) -> m.BatchTaskCounts:
    def check() -> m.BatchTaskCounts | None:
        counts = client.get_job_task_counts(job_id).task_counts
        return counts if ready(counts) else None

    return wait_for(check, timeout, what=f"task counts of {job_id}")

"""Resource files of every kind, output upload conditions and job environment, with Azurite."""

from __future__ import annotations

import stat

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from batchspec.emulator.testing import batch_client as make_client
from batchspec.emulator.testing import running_emulator
from tests.azurite import Azurite
from tests.emulator.helpers import create_job, create_pool, execution, failure_code, read_task_file, sh, wait_task


def _fill(azurite: Azurite, name: str, blobs: dict[str, bytes]) -> None:
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(name)
    if not container.exists():
        container.create_container()
    for blob, data in blobs.items():
        container.upload_blob(blob, data, overwrite=True)


def _blobs(azurite: Azurite, name: str) -> set[str]:
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(name)
    return {b.name for b in container.list_blobs()}


def _listing(client: BatchClient, job: str, task: str) -> list[str]:
    return sorted(f.name or "" for f in client.list_task_files(job, task, recursive=True) if not f.is_directory)


def test_container_sources_keep_blob_names_under_file_path(azurite: Azurite) -> None:
    _fill(azurite, "rf-data", {"in/a.txt": b"a", "in/sub/b.txt": b"b", "other/c.txt": b"c"})
    with running_emulator(auto_storage=azurite.connection_string) as emu:
        client = make_client(emu)
        create_pool(client, dedicated=1)
        create_job(client)
        client.create_task(
            "job",
            m.BatchTaskCreateOptions(
                id="t",
                command_line=sh("stat -c %a data/in/a.txt auto/in/sub/b.txt http.txt > modes.txt"),
                resource_files=[
                    m.ResourceFile(
                        storage_container_url=azurite.container_sas_url("rf-data"), blob_prefix="in/", file_path="data"
                    ),
                    m.ResourceFile(auto_storage_container_name="rf-data", blob_prefix="in/sub", file_path="auto",
                                   file_mode="0600"),
                    m.ResourceFile(http_url=azurite.blob_sas_url("rf-data", "other/c.txt"), file_path="http.txt"),
                ],
            ),
        )
        task = wait_task(client, "job", "t")
        assert execution(task).result == m.BatchTaskExecutionResult.SUCCESS, task.execution_info
        files = _listing(client, "job", "t")
        assert "wd/data/in/a.txt" in files and "wd/data/in/sub/b.txt" in files  # whole blob names kept
        assert "wd/auto/in/sub/b.txt" in files and "wd/auto/in/a.txt" not in files
        assert not any("other" in f for f in files if f.startswith("wd/data"))
        assert read_task_file(client, "job", "t", "wd/modes.txt") == b"770\n600\n770\n"  # default 0770


def test_auto_storage_needs_an_account_and_sources_are_checked(azurite: Azurite, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    batch_client.create_task(
        "job",
        m.BatchTaskCreateOptions(
            id="no-account", command_line="/bin/true",
            resource_files=[m.ResourceFile(auto_storage_container_name="rf-data")],
        ),
    )
    assert failure_code(wait_task(batch_client, "job", "no-account")) == "BlobAccessDenied"
    for bad in (
        m.ResourceFile(http_url="http://127.0.0.1:1/x", storage_container_url="http://127.0.0.1:1/c", file_path="x"),
        m.ResourceFile(http_url="http://127.0.0.1:1/x"),  # httpUrl needs a filePath
        m.ResourceFile(file_path="x"),  # no source at all
    ):
        with pytest.raises(HttpResponseError) as raised:
            batch_client.create_task("job", m.BatchTaskCreateOptions(id="bad", command_line="/bin/true",
                                                                     resource_files=[bad]))
        assert raised.value.status_code == 400


def test_windows_nodes_ignore_file_mode(azurite: Azurite, batch_client: BatchClient) -> None:
    _fill(azurite, "rf-win", {"x.txt": b"x"})
    create_pool(batch_client, "win", windows=True)
    create_job(batch_client, "wjob", "win")
    batch_client.create_task(
        "wjob",
        m.BatchTaskCreateOptions(
            id="t", command_line=sh("stat -c %a x.txt"),
            resource_files=[m.ResourceFile(http_url=azurite.blob_sas_url("rf-win", "x.txt"), file_path="x.txt",
                                           file_mode="0600")],
        ),
    )
    wait_task(batch_client, "wjob", "t")
    mode = int(read_task_file(batch_client, "wjob", "t", "stdout.txt").strip(), 8)
    assert mode != 0o600 and mode & stat.S_IRUSR


@pytest.mark.parametrize("exit_code", [0, 4])
def test_upload_conditions_and_job_environment(azurite: Azurite, batch_client: BatchClient, exit_code: int) -> None:
    container = f"up-{exit_code}"
    _fill(azurite, container, {})
    url = azurite.container_sas_url(container, write=True)
    create_pool(batch_client, dedicated=1)
    create_job(
        batch_client,
        common_environment_settings=[m.EnvironmentSetting(name="A", value="job"),
                                     m.EnvironmentSetting(name="B", value="job")],
    )

    def output(name: str, condition: str) -> m.OutputFile:
        return m.OutputFile(
            file_pattern="env.txt",
            destination=m.OutputFileDestination(container=m.OutputFileBlobContainerDestination(container_url=url,
                                                                                             path=name)),
            upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
        )

    batch_client.create_task(
        "job",
        m.BatchTaskCreateOptions(
            id="t",
            command_line=sh(f"echo $A-$B > env.txt; exit {exit_code}"),
            environment_settings=[m.EnvironmentSetting(name="B", value="task")],
            output_files=[output("success", "TaskSuccess"), output("failure", "TASKFAILURE"),
                          output("always", "taskCompletion")],
        ),
    )
    task = wait_task(batch_client, "job", "t")

    assert execution(task).exit_code == exit_code
    expected = {"always", "success" if exit_code == 0 else "failure"}
    assert _blobs(azurite, container) == expected
    assert read_task_file(batch_client, "job", "t", "wd/env.txt") == b"job-task\n"  # the task's setting wins
    conditions = [o["uploadOptions"]["uploadCondition"] for o in task.as_dict()["outputFiles"]]
    assert conditions == ["tasksuccess", "taskfailure", "taskcompletion"]  # the service's casing

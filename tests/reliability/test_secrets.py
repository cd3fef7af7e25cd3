"""Issue 9, secrets: no account key, SAS signature or token in anything batchspec prints or
writes, on either backend, whatever a failing task prints; a malformed key is a clear error.

6. Tasks get a clean environment (what a Batch node gives plus the spec's env), and every output
   path (terminal, --json, files batchspec writes, stderr tails) redacts the same way.
7. A malformed key: a clear message and exit 2, without the key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from click.testing import Result

from batchspec.emulator.testing import running_emulator

from .conftest import AzureWorld, files_under, make_inputs, run_local, write_spec

KEY = base64.b64encode(b"batch-account-key-" + bytes(range(46))).decode()
STORAGE_KEY = base64.b64encode(b"storage-account-key-" + bytes(range(44))).decode()
CONNECTION_KEY = base64.b64encode(b"connection-string-key-" + bytes(range(42))).decode()
CLIENT_SECRET = "client-secret-0f9e8d7c6b5a4"
SAS_SIGNATURE = "Zm9vYmFyc2lnbmF0dXJlMTIzNDU2Nzg5MA%3D"
SECRETS = {
    "AZURE_BATCH_ACCESS_KEY": KEY,
    "AZURE_STORAGE_KEY": STORAGE_KEY,
    "AZURE_STORAGE_CONNECTION_STRING": f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={CONNECTION_KEY};"
                                       "EndpointSuffix=core.windows.net",
    "AZURE_CLIENT_SECRET": CLIENT_SECRET,
    "AZURE_STORAGE_SAS_TOKEN": f"sv=2022-11-02&ss=b&sig={SAS_SIGNATURE}",
}
VALUES = [KEY, STORAGE_KEY, CONNECTION_KEY, CLIENT_SECRET, SAS_SIGNATURE]


def leaks(texts: Iterable[tuple[str, bytes]], secrets: Iterable[str]) -> list[str]:
    """Where any secret (or an unredacted SAS signature) appears."""
    found = []
    needles = [s.encode() for s in secrets if s]
    for where, data in texts:
        found += [f"{where}: {n.decode()[:12]}…" for n in needles if n in data]
        if re.search(rb"sig=(?!REDACTED)[A-Za-z0-9%+/=]{8,}", data):
            found.append(f"{where}: an unredacted sig=")
    return found


def outputs_of(result: Result) -> list[tuple[str, bytes]]:
    texts = [("stdout", result.stdout_bytes)]
    with contextlib.suppress(ValueError):  # ValueError: stderr is mixed into stdout
        texts.append(("stderr", result.stderr_bytes or b""))
    return texts


def written_files(root: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in files_under(root)]


# --- local ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("json_events", [False, True])
def test_local_tasks_that_print_their_environment_leak_nothing(project: Path, json_events: bool) -> None:
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    spec = write_spec(project, "env; env >&2; echo GREETING=$GREETING; exit 3", env={"GREETING": "<<stem>>"})
    result = run_local(spec, *(["--json"] if json_events else []), env=SECRETS)
    assert result.exit_code == 1, result.output
    assert "GREETING=a" in (project / "run").joinpath(*_task_dir(project, "a"), "stdout.txt").read_text()
    assert "AZ_BATCH_TASK_ID=" in result.output  # the stderr tail is shown ...
    assert leaks(outputs_of(result) + written_files(project), VALUES) == []  # ... and has no secret
    # What a node gives: PATH, AZ_BATCH_*, the spec's env; none of the runner's AZURE_* settings.
    env_lines = (project / "run").joinpath(*_task_dir(project, "a"), "stdout.txt").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in env_lines if "=" in line}
    assert not {n for n in names if n.startswith("AZURE_")}, names
    assert {"PATH", "AZ_BATCH_TASK_ID", "AZ_BATCH_TASK_WORKING_DIR", "GREETING"} <= names


def _task_dir(project: Path, stem: str) -> tuple[str, str]:
    (job,) = [d for d in (project / "run").iterdir() if d.name.startswith("rel-")]
    (task,) = [d for d in job.iterdir() if d.name.startswith(f"{stem}-")]
    return job.name, task.name


def test_secrets_a_task_prints_are_redacted_everywhere_batchspec_writes(project: Path) -> None:
    """A task that got hold of a key prints it: batchspec's terminal, --json and records redact it
    (the task's own stderr.txt is the task's output, kept as it wrote it)."""
    make_inputs(project, {"a.txt": f"{STORAGE_KEY}\nhttps://x.blob.core.windows.net/c/b?sv=1&sig={SAS_SIGNATURE}\n"
                                   "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.payload.signature\n"})
    spec = write_spec(project, "cat <<input>> >&2; exit 1")
    for args in ((), ("--json",)):
        result = run_local(spec, *args, env=SECRETS)
        assert result.exit_code == 1
        assert "REDACTED" in result.output
        ours = [(w, d) for w, d in written_files(project) if not w.endswith(("stderr.txt", "a.txt"))]
        assert leaks(outputs_of(result) + ours, [*VALUES, "eyJ0eXAiOiJKV1QiLCJhbGciOi"]) == []


@pytest.mark.parametrize(("variable", "value"), [
    ("AZURE_BATCH_ACCESS_KEY", "not-base64-at-all"),
    ("AZURE_BATCH_ACCESS_KEY", "c2hvcnQ"),  # bad padding
    ("AZURE_STORAGE_KEY", "p@ss word"),
    ("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=not*base64;BlobEndpoint=http://127.0.0.1:1/a"),
])
def test_a_malformed_key_is_a_clear_error_without_the_key(project: Path, variable: str, value: str) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "true")
    env = {"AZURE_BATCH_ENDPOINT": "http://127.0.0.1:9/", "AZURE_BATCH_ACCOUNT": "acct",
           "AZURE_BATCH_ACCESS_KEY": KEY, "AZURE_STORAGE_KEY": STORAGE_KEY, "AZURE_STORAGE_ACCOUNT": "acct",
           variable: value}
    from click.testing import CliRunner

    from batchspec.cli import cli

    result = CliRunner().invoke(cli, ["run", str(spec), "--backend", "azure"], env=env, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "is not a valid account key" in result.output and "Traceback" not in result.output
    secret = value.rsplit("AccountKey=", maxsplit=1)[-1].split(";", maxsplit=1)[0]
    assert secret not in result.output


# --- Azure -----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_azure_failing_tasks_and_every_file_leak_nothing(project: Path, world: AzureWorld,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():  # in the emulator's environment too: tasks must not get them
        if name != "AZURE_STORAGE_CONNECTION_STRING":
            monkeypatch.setenv(name, value)
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    spec = write_spec(project, "env; env >&2; exit 3", name="relsec")
    secrets = [*VALUES, world.emulator.key, world.azurite.key]
    for args in ((), ("--json",)):
        result = world.run("run", str(spec), "--backend", "azure", "--force", *args)
        assert result.exit_code == 1, result.output
        assert "AZ_BATCH_TASK_ID=" in result.output
        assert leaks(outputs_of(result) + written_files(project), secrets) == []
    container = world.blobs.get_container_client("relsec-output")
    blobs = [(b.name, container.download_blob(b.name).readall()) for b in container.list_blobs()]
    assert any(name.endswith("stdout.txt") for name, _ in blobs)  # the failed tasks' logs, with their env
    assert leaks(blobs, secrets) == []
    stdout = next(data for name, data in blobs if name.endswith("stdout.txt")).decode()
    assert not [line for line in stdout.splitlines() if line.startswith("AZURE_")]


@pytest.mark.e2e
def test_azure_auth_errors_show_no_key(project: Path, world: AzureWorld) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "true", name="relauth")
    wrong_batch = base64.b64encode(b"w" * 64).decode()
    wrong_storage = world.azurite.connection_string.replace(world.azurite.key, STORAGE_KEY)
    for env in ({"AZURE_BATCH_ACCESS_KEY": wrong_batch}, {"AZURE_STORAGE_CONNECTION_STRING": wrong_storage}):
        for args in ((), ("--json",)):
            result = world.run("run", str(spec), "--backend", "azure", *args, env=env)
            assert result.exit_code == 2, result.output
            assert "rejected the credentials" in result.output and "Traceback" not in result.output
            assert leaks(outputs_of(result) + written_files(project),
                         [wrong_batch, STORAGE_KEY, world.emulator.key, world.azurite.key]) == []
    assert world.emulator.request_counts().get("create_pool", 0) == 0


class _StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, 2_000_000_000)


@pytest.mark.e2e
def test_a_refused_bearer_token_is_not_shown(project: Path, world: AzureWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLWJvZHk.c2lnbmF0dXJl"
    monkeypatch.setattr("batchspec.backends.azure.config.entra_credential", lambda: _StaticToken(token))
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "true", name="reltok")
    with running_emulator(nodes=1, token="the-right-token") as emulator:
        env = {**world.env, "AZURE_BATCH_ENDPOINT": emulator.endpoint, "AZURE_BATCH_ACCESS_KEY": ""}
        result = world.run("run", str(spec), "--backend", "azure", "--json", env=env)
    assert result.exit_code == 2, result.output
    assert "rejected the credentials" in result.output
    assert leaks(outputs_of(result) + written_files(project), [token, token.split(".")[1]]) == []
    assert json.loads(result.output.splitlines()[0])["event"] == "backend"
    assert os.environ.get("AZURE_CLIENT_SECRET") is None

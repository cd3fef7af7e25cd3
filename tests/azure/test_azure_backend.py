"""The Azure backend end to end, through the real SDKs, against the emulator and Azurite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from batchspec.backends.azure import AzureBackend
from batchspec.backends.base import RunContext, RunOptions, Wave
from batchspec.emulator.testing import running_emulator
from batchspec.plan import build_plan
from batchspec.spec import load_spec
from tests.azurite import Azurite
from tests.media import decodes_cleanly, make_mp4, probe_duration

from .conftest import AzureWorld, copy_spec

pytestmark = pytest.mark.e2e


def mp4_spec(tmp_path: Path, lengths: dict[str, float]) -> Path:
    """specs/mp4-to-mp3.yaml as shipped (start task included), over generated clips."""
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs")
    for stem, seconds in lengths.items():
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", seconds)
    return spec


def test_mp4_to_mp3_on_azure_and_rerun_does_nothing_again(tmp_path: Path, world: AzureWorld) -> None:
    lengths = {"clip-a": 1.0, "clip b": 2.0, "clip-c": 1.5}
    spec = mp4_spec(tmp_path, lengths)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert "OK: 3 succeeded, 0 failed of 3 tasks" in result.output
    assert "inputs: uploaded 3 file(s)" in result.output
    out = spec.parent / "out" / "mp4-to-mp3"
    for stem, seconds in lengths.items():
        mp3 = out / f"{stem}.mp3"
        assert decodes_cleanly(mp3)
        assert probe_duration(mp3) == pytest.approx(seconds, abs=0.15)
    in_container = world.blob_names("mp4-to-mp3-output")
    assert [n for n in in_container if not n.startswith(".batchspec/")] == sorted(f"{s}.mp3" for s in lengths)
    # The start task ran on the emulated nodes (with apt-get stood in for).
    assert world.emulator.request_counts().get("create_pool") == 1

    adds = world.emulator.request_counts().get("create_task_collection", 0)
    again = world.run("run", str(spec), "--backend", "azure")
    assert again.exit_code == 0, again.output
    assert "inputs: uploaded 0 file(s), 0.0 MB" in again.output
    assert "nothing to add" in again.output
    assert world.emulator.request_counts().get("create_task_collection", 0) == adds
    assert "3 skipped (done earlier)" in again.output


def test_failing_task_shows_its_stderr(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"good": 1.0, "broken": 1.0})
    (spec.parent / "inputs" / "broken.mp4").write_bytes(b"this is not a video\n")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 1, result.output
    assert "FAILED: 1 succeeded, 1 failed of 2 tasks" in result.output
    assert "failed broken-" in result.output
    assert "Invalid data found when processing input" in result.output  # ffmpeg's stderr, fetched
    assert "after 3 attempts" in result.output  # retries: 2
    logs = [n for n in world.blob_names("mp4-to-mp3-output") if "/failed/" in n]
    assert any(n.endswith("/stderr.txt") for n in logs)


def test_wrong_key_is_a_clear_error(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0})
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
    result = world.run("run", str(spec), "--backend", "azure", env={"AZURE_BATCH_ACCESS_KEY": wrong})
    assert result.exit_code == 2, result.output
    assert "Azure Batch rejected the credentials for account 'batchspec'" in result.output
    assert "check AZURE_BATCH_ACCESS_KEY" in result.output
    assert "Traceback" not in result.output and wrong not in result.output


def test_polling_costs_at_most_two_requests_per_poll(tmp_path: Path, world: AzureWorld) -> None:
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs",
                     **{"ffmpeg -hide_banner -y -i <<input>> -vn -b:a <<params.bitrate>> <<stem>>.mp3":
                        "sleep 0.2; cp <<input>> <<stem>>.mp3"})
    inputs = spec.parent / "inputs"
    inputs.mkdir()
    for i in range(40):
        (inputs / f"f{i:02}.mp4").write_text(str(i))
    result = world.run("run", str(spec), "--backend", "azure", "--json")
    assert result.exit_code == 0, result.output
    counts = world.emulator.request_counts()
    polls = counts["get_job_task_counts"]
    per_poll_extras = sum(counts.get(op, 0) for op in ("get_pool", "list_nodes", "list_tasks"))
    assert polls >= 2
    assert per_poll_extras <= polls, counts
    assert counts.get("get_task", 0) == 0  # never one request per task
    assert counts["create_task_collection"] == 1


def test_secrets_never_reach_the_output(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0})
    (spec.parent / "inputs" / "bad.mp4").write_text("not a video")
    result = world.run("run", str(spec), "--backend", "azure", "--json")
    assert result.exit_code == 1
    text = result.output
    for secret in (world.emulator.key, world.azurite.key):
        assert secret not in text
    assert "sig=" not in text.replace("sig=REDACTED", "")
    events = [json.loads(line) for line in text.splitlines()]
    assert events[-1]["failures"][0]["stderr_tail"]


def test_a_restarted_runner_resumes_where_the_service_is(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0, "b": 1.0})
    options = RunOptions(env=world.env)
    plan = build_plan(load_spec(spec))
    events: list[object] = []
    backend = AzureBackend(options)
    ctx = RunContext(options, events.append)
    backend.prepare(plan, ctx)
    backend.stage_inputs(plan, ctx)
    assert backend.completed(plan, plan.tasks, ctx) == set()  # as the engine asks before it submits
    assert backend.submit(plan, Wave(("task",), plan.tasks, frozenset(), True), ctx) == 2
    backend.close()  # the runner dies here; the service carries on
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert f"found job {plan.job_id} from an earlier run" in result.output
    assert "added 0 task(s)" in result.output
    assert sorted(p.name for p in (spec.parent / "out" / "mp4-to-mp3").iterdir()) == ["a.mp3", "b.mp3"]


def test_start_task_failure_is_shown_with_its_stderr(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0})
    text = spec.read_text().replace("command -v ffmpeg >/dev/null || (apt-get update && apt-get install -y ffmpeg)",
                                    "\"echo 'E: Unable to locate package ffmpeg' >&2; exit 100\"")
    spec.write_text(text)
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 2, result.output  # no task can run: batchspec cannot do it
    assert "start task failed on node" in result.output
    assert "E: Unable to locate package ffmpeg" in result.output
    assert "the start task failed on every node of pool ffmpeg-pool" in result.output


def test_transient_faults_are_retried(tmp_path: Path, azurite: Azurite) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0, "b": 1.0, "c": 1.0})
    # Fault streams are per operation: with seed 65 the first create_pool meets a 503, create_job
    # a reset and create_task_collection a 429, however the run is timed.
    with running_emulator(nodes=2, faults="http503=0.2,http429=0.1,reset=0.1", seed=65) as emulator:
        world = AzureWorld(emulator, azurite, {
            "AZURE_BATCH_ENDPOINT": emulator.endpoint,
            "AZURE_BATCH_ACCOUNT": emulator.account,
            "AZURE_BATCH_ACCESS_KEY": emulator.key,
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        })
        for container in world.blobs.list_containers():
            world.blobs.delete_container(container.name)
        result = world.run("run", str(spec), "--backend", "azure")
        faults = emulator.fault_counts()
    assert result.exit_code == 0, result.output
    assert min(faults["http503"], faults["http429"], faults["reset"]) >= 1, faults


class _StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, 2**31 - 1)


def test_entra_id_token(tmp_path: Path, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0})
    monkeypatch.setattr("batchspec.backends.azure.config.entra_credential", lambda: _StaticToken("let-me-in"))
    with running_emulator(nodes=1, token="let-me-in") as emulator:
        env = {
            "AZURE_BATCH_ENDPOINT": emulator.endpoint,
            "AZURE_BATCH_ACCOUNT": emulator.account,
            "AZURE_BATCH_ACCESS_KEY": "",
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        }
        world = AzureWorld(emulator, azurite, env)
        for container in world.blobs.list_containers():
            world.blobs.delete_container(container.name)
        result = world.run("run", str(spec), "--backend", "azure")
        assert result.exit_code == 0, result.output
        assert "Entra ID" in result.output
        monkeypatch.setattr("batchspec.backends.azure.config.entra_credential", lambda: _StaticToken("wrong"))
        refused = world.run("run", str(spec), "--backend", "azure", "--force")
    assert refused.exit_code == 2 and "rejected the credentials" in refused.output


def test_inputs_from_a_storage_container(tmp_path: Path, world: AzureWorld) -> None:
    raw = world.blobs.get_container_client("raw-videos")
    raw.create_container()
    for name in ("2024/jan/one.mp4", "2024/feb/two.mp4", "2023/old.mp4"):
        clip = make_mp4(tmp_path / "media" / name.replace("/", "_"), 1.0)
        raw.upload_blob(name, clip.read_bytes())
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs", **{
        "path: inputs/*.mp4": "container: raw-videos\n  prefix: 2024/",
        '["<<stem>>.mp3"]': '["<<dir>>/<<stem>>.mp3"]',
        "<<stem>>.mp3\n": "<<dir>>/<<stem>>.mp3\n",
    })
    planned = world.run("plan", str(spec), "--backend", "azure", "--format", "json")
    assert planned.exit_code == 0, planned.output
    tasks = json.loads(planned.output)["tasks"]
    assert [t["inputs"] for t in tasks] == [
        [{"source": "2024/feb/two.mp4", "path": "feb/two.mp4", "container": "raw-videos"}],
        [{"source": "2024/jan/one.mp4", "path": "jan/one.mp4", "container": "raw-videos"}],
    ]
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    out = spec.parent / "out" / "mp4-to-mp3"
    assert decodes_cleanly(out / "jan" / "one.mp3") and decodes_cleanly(out / "feb" / "two.mp3")
    local = world.run("plan", str(spec), "--backend", "local")
    assert local.exit_code == 2 and "inputs.container 'raw-videos'" in local.output


def test_cleanup_deletes_job_pool_and_containers(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0})
    spec.write_text(spec.read_text().replace("cleanup: {job: delete, pool: keep, inputs: keep}",
                                             "cleanup: {job: keep, pool: keep, inputs: keep}"))
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 0
    containers = {c.name for c in world.blobs.list_containers()}
    assert {"mp4-to-mp3-input", "mp4-to-mp3-output"} <= containers
    result = world.run("cleanup", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    for expected in ("deleting job mp4-to-mp3-", "deleting pool ffmpeg-pool", "deleted container mp4-to-mp3-input",
                     "deleted container mp4-to-mp3-output"):
        assert expected in result.output
    assert not {"mp4-to-mp3-input", "mp4-to-mp3-output"} & {c.name for c in world.blobs.list_containers()}
    counts = world.emulator.request_counts()
    assert counts.get("delete_job") == 1 and counts.get("delete_pool") == 1


def test_force_runs_the_job_again(tmp_path: Path, world: AzureWorld) -> None:
    spec = mp4_spec(tmp_path, {"a": 1.0, "b": 1.0})
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 0
    adds = world.emulator.request_counts()["create_task_collection"]
    result = world.run("run", str(spec), "--backend", "azure", "--force")
    assert result.exit_code == 0, result.output
    assert "added 2 task(s)" in result.output
    assert world.emulator.request_counts()["create_task_collection"] == adds + 1


def test_wildcard_outputs_round_trip(tmp_path: Path, world: AzureWorld) -> None:
    spec = copy_spec("thumbnails.yaml", tmp_path / "specs", **{"every: 10": "every: 1"})
    for stem in ("a", "ab"):  # "a-*.jpg" must not collect "ab-*.jpg" twice, nor miss it
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", 2.5)
    other = world.blobs.get_container_client("thumbnails-output")
    other.create_container()
    other.upload_blob("unrelated.txt", b"not an output of this job")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    out = spec.parent / "out" / "thumbnails"
    got = sorted(p.name for p in out.iterdir())
    assert got == ["a-0001.jpg", "a-0002.jpg", "a-0003.jpg", "ab-0001.jpg", "ab-0002.jpg", "ab-0003.jpg"]
    again = world.run("run", str(spec), "--backend", "azure")
    assert again.exit_code == 0, again.output
    assert "nothing to add" in again.output and "6 unchanged" in again.output


def test_a_kept_pool_holding_every_node_makes_the_next_pool_fail_clearly(tmp_path: Path, world: AzureWorld) -> None:
    """The emulator's --nodes is the account's quota: a kept pool that holds all of it leaves the
    next pool with no nodes and the service's quota resize error, which the backend reports."""
    first = mp4_spec(tmp_path / "first", {"a": 0.5})
    assert world.run("run", str(first), "--backend", "azure").exit_code == 0  # cleanup.pool: keep
    second = mp4_spec(tmp_path / "second", {"b": 0.5})
    second.write_text(second.read_text().replace("id: ffmpeg-pool", "id: other-pool"))

    result = world.run("run", str(second), "--backend", "azure")

    assert result.exit_code == 2, result.output
    assert "pool other-pool has no nodes: AccountLowPriorityCoreQuotaReached" in result.output
    assert "check the account's core quota" in result.output

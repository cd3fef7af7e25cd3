"""Files, merges and stages on the Azure backend, through the real SDKs, against the emulator and
Azurite: the three example specs end to end, how a merge waits (task ids, ranges, gates), what a
failure blocks, and what a rerun redoes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from azure.batch import BatchClient

from batchspec.emulator.testing import batch_client
from batchspec.plan.deps import express
from tests.media import decodes_cleanly, make_mp4, probe_duration

from .conftest import REPO, AzureWorld, copy_spec

pytestmark = pytest.mark.e2e

KEEP_JOB = {"cleanup: {job: delete, pool: keep, inputs: keep}": "cleanup: {job: keep, pool: keep, inputs: keep}"}


def client(world: AzureWorld) -> BatchClient:
    return batch_client(world.emulator)


def job_of(output: str) -> str:
    return next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("job "))


def playlist_spec(tmp_path: Path, stems: tuple[str, ...] = ("a", "clip [b] it's", "c"), **replace: str) -> Path:
    spec = copy_spec("mp3-playlist.yaml", tmp_path / "specs", **{**KEEP_JOB, **replace})
    for i, stem in enumerate(stems):
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", 1.0, frequency=300 + 100 * i)
    return spec


def test_watermark_gets_the_logo_as_a_resource_file(tmp_path: Path, world: AzureWorld) -> None:
    spec = copy_spec("watermark.yaml", tmp_path / "specs", **KEEP_JOB)
    shutil.copytree(REPO / "specs" / "assets", spec.parent / "assets")
    for stem in ("a", "b c"):
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", 1.0)
    result = world.run("run", str(spec), "--backend", "azure", "--set", "corner=top-right")
    assert result.exit_code == 0, result.output
    out = spec.parent / "out" / "watermark"
    assert sorted(p.name for p in out.iterdir()) == ["a-watermarked.mp4", "b c-watermarked.mp4"]
    assert all(decodes_cleanly(p) for p in out.iterdir())
    # Uploaded once, and handed to each task as a resource file at logo.png.
    assert world.blob_names("watermark-input") == ["assets/logo.png", "inputs/a.mp4", "inputs/b c.mp4"]
    tasks = list(client(world).list_tasks(job_of(result.output)))
    assert len(tasks) == 2
    for task in tasks:
        files = {f.file_path or "": f.http_url or "" for f in task.resource_files or []}
        assert sorted(files) in (["a.mp4", "logo.png"], ["b c.mp4", "logo.png"])
        assert "/watermark-input/assets/logo.png?" in files["logo.png"]
    again = world.run("run", str(spec), "--backend", "azure", "--set", "corner=top-right")
    assert "inputs: uploaded 0 file(s)" in again.output and "nothing to add" in again.output


def test_mp3_playlist_merge_waits_through_task_dependencies(tmp_path: Path, world: AzureWorld) -> None:
    spec = playlist_spec(tmp_path)
    planned = world.run("plan", str(spec), "--backend", "azure")
    assert "merge: 1 task(s), one task over every output of task" in planned.output
    assert "waits through dependsOn.taskIds (3 id(s)" in planned.output
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert "OK: 4 succeeded, 0 failed of 4 tasks" in result.output
    out = spec.parent / "out" / "mp3-playlist"
    assert (out / "playlist.m3u").read_text().splitlines() == ["a.mp3", "c.mp3", "clip [b] it's.mp3"]
    assert probe_duration(out / "all.mp3") == pytest.approx(3.0, abs=0.2)
    assert all(decodes_cleanly(out / n) for n in ("a.mp3", "clip [b] it's.mp3", "c.mp3", "all.mp3"))
    batch = client(world)
    job_id = job_of(result.output)
    assert batch.get_job(job_id).uses_task_dependencies
    merge = batch.get_task(job_id, "merge")
    firsts = sorted(t.id for t in batch.list_tasks(job_id) if t.id != "merge")
    assert merge.depends_on is not None and sorted(merge.depends_on.task_ids or []) == firsts
    # The merge reads the MP3s straight from the first stage's work container: one resource file.
    (container,) = merge.resource_files or []
    assert container.storage_container_url and "mp3-playlist-task-" in container.storage_container_url


def test_a_failed_task_blocks_the_merge_and_keeps_its_logs(tmp_path: Path, world: AzureWorld) -> None:
    spec = playlist_spec(tmp_path, ("good", "bad"), **{"retries: 2": "retries: 0"})
    (spec.parent / "inputs" / "bad.mp4").write_text("not a video")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 1, result.output
    assert "FAILED: 1 succeeded, 1 failed, 1 blocked of 3 tasks" in result.output
    assert "blocked merge (not run: task bad-" in result.output
    failed = next(line for line in result.output.splitlines() if "full stdout and stderr:" in line)
    assert "container mp3-playlist-output, .batchspec/jobs/" in failed
    logs = [n for n in world.blob_names("mp3-playlist-output") if "/failed/bad-" in n]
    assert sorted(n.rsplit("/", 1)[1] for n in logs) == ["stderr.txt", "stdout.txt"]
    assert not (spec.parent / "out" / "mp3-playlist" / "all.mp3").exists()


def test_a_rerun_redoes_only_what_depends_on_a_missing_output(tmp_path: Path, world: AzureWorld) -> None:
    spec = playlist_spec(tmp_path)
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 0
    # One first-stage output is gone from storage: that task runs again, so does the merge.
    outputs = world.blobs.get_container_client("mp3-playlist-output")
    outputs.delete_blob("a.mp3")
    again = world.run("run", str(spec), "--backend", "azure", "--json")
    assert again.exit_code == 0, again.output
    events = [json.loads(line) for line in again.output.splitlines()]
    assert events[-1]["skipped"] == 2 and events[-1]["succeeded"] == 4
    # The job had completed, so it was made anew with just the two tasks to run.
    ran = sorted(t.id for t in client(world).list_tasks(events[-1]["job_id"]))
    assert len(ran) == 2 and ran[0].startswith("a-") and ran[1] == "merge"
    assert "a.mp3" in world.blob_names("mp3-playlist-output")


def test_a_long_dependency_list_goes_through_gates(tmp_path: Path, world: AzureWorld,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Five ids of 10 characters, at most 40 characters a list (with separators): gates of 3 ids and 2.
    monkeypatch.setattr("batchspec.backends.azure.express", lambda task_id, deps: express(task_id, deps, limit=40))
    spec = playlist_spec(tmp_path, ("a", "b", "c", "d", "e"))
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert "OK: 6 succeeded, 0 failed of 6 tasks" in result.output
    batch = client(world)
    job_id = job_of(result.output)
    gates = sorted(t.id for t in batch.list_tasks(job_id) if "-gate-" in t.id)
    assert gates == ["merge-gate-0", "merge-gate-1"]
    waits = sorted(len(batch.get_task(job_id, g).depends_on.task_ids or []) for g in gates)  # type: ignore[union-attr]
    assert waits == [2, 3]
    merge = batch.get_task(job_id, "merge")
    assert merge.depends_on is not None and sorted(merge.depends_on.task_ids or []) == gates
    assert probe_duration(spec.parent / "out" / "mp3-playlist" / "all.mp3") == pytest.approx(5.0, abs=0.3)


def test_numeric_task_ids_wait_through_ranges(tmp_path: Path, world: AzureWorld,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchspec.backends.azure.express", lambda task_id, deps: express(task_id, deps, limit=2))
    spec = playlist_spec(tmp_path, ("a", "b", "c"), **{"  retries: 2\n  timeout: 30m\nmerge:":
                                                         "  retries: 2\n  timeout: 30m\n  id: <<index>>\nmerge:"})
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    merge = client(world).get_task(job_of(result.output), "merge")
    assert merge.depends_on is not None
    assert [(r.start, r.end) for r in merge.depends_on.task_id_ranges or []] == [(0, 2)]


def test_chunked_encode_runs_stage_after_stage(tmp_path: Path, world: AzureWorld) -> None:
    spec = copy_spec("chunked-encode.yaml", tmp_path / "specs")
    make_mp4(spec.parent / "inputs" / "long one.mp4", 2.5, keyframes=5)
    make_mp4(spec.parent / "inputs" / "short.mp4", 1.2, keyframes=5)
    planned = world.run("plan", str(spec), "--backend", "azure", "--set", "segment=1")
    assert "encode: one task per output file of split" in planned.output
    assert "known when split has finished" in planned.output
    result = world.run("run", str(spec), "--backend", "azure", "--set", "segment=1")
    assert result.exit_code == 0, result.output
    assert "== stage split: 2 tasks to run" in result.output
    assert "encode: 5 task(s) over the outputs of split (one per file)" in result.output
    assert "OK: 9 succeeded, 0 failed of 9 tasks" in result.output
    out = spec.parent / "out" / "chunked-encode"
    assert sorted(p.name for p in out.iterdir()) == ["long one-encoded.mp4", "short-encoded.mp4"]
    for name, seconds in (("long one-encoded.mp4", 2.5), ("short-encoded.mp4", 1.2)):
        assert decodes_cleanly(out / name)
        assert probe_duration(out / name) == pytest.approx(seconds, abs=0.1)
    # Segments never left storage; with the job deleted (cleanup.job: delete) they are gone too.
    containers = {c.name for c in world.blobs.list_containers()}
    assert not [c for c in containers if c.startswith("chunked-encode-split-")]
    assert "deleted container chunked-encode-encode-" in result.output

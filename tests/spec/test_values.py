"""Batch ids, container names, durations; and the typed model built from a valid spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchspec.errors import SpecError
from batchspec.spec import load_spec
from batchspec.spec.values import batch_id_problem, container_problem, format_duration, parse_duration

from .conftest import VALID, edit


@pytest.mark.parametrize("value", ["a", "job-1", "Job_2", "x" * 64, "0", "-", "_"])
def test_valid_batch_ids(value: str) -> None:
    assert batch_id_problem(value, "id") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "id must not be empty"),
        ("x" * 65, "id 'xxxxxxxxxxxxxxxxxxxx...' is 65 characters; a Batch id has at most 64"),
        ("a b", "id 'a b' may only contain letters, digits, '-' and '_' (found ' ')"),
        ("caf\u00e9", "id 'caf\u00e9' may only contain letters, digits, '-' and '_' (found '\u00e9')"),
        ("a.b/c", "id 'a.b/c' may only contain letters, digits, '-' and '_' (found '.' '/')"),
    ],
)
def test_invalid_batch_ids(value: str, message: str) -> None:
    assert batch_id_problem(value, "id") == message


@pytest.mark.parametrize("value", ["abc", "mp4-to-mp3-output", "a1b", "x" * 63])
def test_valid_containers(value: str) -> None:
    assert container_problem(value, "container") is None


@pytest.mark.parametrize("value", ["ab", "x" * 64, "Upper", "a--b", "-ab", "ab-", "a_b"])
def test_invalid_containers(value: str) -> None:
    assert "is not a valid container name" in (container_problem(value, "container") or "")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("1.5h", 5400), ("PT30M", 1800),
     ("P1DT2H", 93600), ("PT0.5S", 0.5), (" 5m ", 300), ("pt5m", 300)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "30 m", "5x", "P", "PT", "P1DT", "1h 30m", "-5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_parse_duration_zero() -> None:
    with pytest.raises(ValueError, match="must be longer than zero"):
        parse_duration("0m")


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "0.2s"), (45, "45s"), (125, "2m5s"), (5400, "1h30m"),
                                               (90061, "1d1h1m1s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_model_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(VALID)
    spec = load_spec(path)
    assert spec.name == "demo"
    assert spec.defaults() == {"bitrate": "192k"}
    assert (spec.pool.dedicated, spec.pool.spot, spec.pool.task_slots_per_node) == (0, 2, 1)
    assert spec.pool.image.version == "latest"
    assert spec.pool.autoscale is None and spec.pool.start_task is None
    assert spec.inputs is not None and spec.inputs.paths == ("inputs/*.mp4",) and spec.inputs.exclude == ()
    assert spec.task.timeout_seconds == 1800 and spec.task.retries == 0
    assert spec.outputs.container == "demo-output" and spec.outputs.download == "out/demo"
    assert (spec.cleanup.job, spec.cleanup.pool, spec.cleanup.inputs) == ("keep", "keep", "keep")
    assert spec.base_dir == tmp_path
    assert spec.where("$.task.command") == f"{path}:14"


def test_model_of_a_full_spec(tmp_path: Path) -> None:
    text = edit(VALID, "  nodes: {dedicated: 0, spot: 2}",
                "  autoscale: {formula: '$TargetDedicatedNodes = 1;', interval: PT10M}\n"
                "  start_task: {command: 'echo <<params.bitrate>>', elevated: true, env: {A: b}}")
    text = edit(text, "  path: inputs/*.mp4", "  path: [a/*.mp4, b/**/*.mp4]\n  exclude: a/x.mp4\n  allow_empty: true")
    text = edit(text, '"<<stem>>.mp3"', '"<<stem>>-<<matrix.rate>>.mp3"')
    text += "matrix: {rate: [1, 2]}\njob: {id: fixed}\ncleanup: {job: delete}\n"
    text += "outputs: {container: my-out, download: o}\n"
    path = tmp_path / "full.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.pool.autoscale is not None and spec.pool.autoscale.interval_seconds == 600
    assert spec.pool.start_task is not None and spec.pool.start_task.env == {"A": "b"}
    assert spec.pool.start_task.elevated and spec.pool.start_task.wait_for_success
    assert spec.inputs is not None
    assert spec.inputs.paths == ("a/*.mp4", "b/**/*.mp4") and spec.inputs.exclude == ("a/x.mp4",)
    assert spec.inputs.allow_empty
    assert spec.matrix["rate"].values == (1, 2)
    assert spec.job.id == "fixed"
    assert spec.cleanup.job == "delete" and spec.outputs.container == "my-out" and spec.outputs.download == "o"


def test_load_spec_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(edit(edit(VALID, "spot: 2", "spot: -1"), "name: demo", "name: de mo"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert [d.path for d in caught.value.diagnostics] == ["$.name", "$.pool.nodes.spot"]
    assert caught.value.exit_code == 2
    assert f"run `batchspec validate {path}`" in str(caught.value)

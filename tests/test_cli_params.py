"""``batchspec params`` and what ``batchspec plan`` shows of stages, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from batchspec.cli import cli
from batchspec.engine.reporters import stages_line, summary_text, task_line
from batchspec.events import RunFinished, StagesStarted, TaskFinished

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_params_lists_types_defaults_and_meaning() -> None:
    result = run("params", str(REPO / "specs" / "chunked-encode.yaml"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "segment (integer, default 10)",
        "    Segment length in seconds (segments start at keyframes, so they may be longer); at least 1",
    ]
    assert "preset (string, default \"veryfast\")\n    x264 speed preset; one of: ultrafast, superfast" in result.output
    assert "x264 quality, lower is better; at least 0; at most 51" in result.output
    assert "batchspec run" in result.output and "--set NAME=VALUE" in result.output


def test_params_as_json_and_required_ones(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text((REPO / "specs" / "mp4-to-mp3.yaml").read_text().replace(
        "params:\n  bitrate: 192k", "params:\n  bitrate: 192k\n  title: {type: string, description: Album title}"))
    result = run("params", str(spec), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"name": "bitrate", "type": "string", "default": "192k", "required": False, "choices": None,
         "minimum": None, "maximum": None, "description": ""},
        {"name": "title", "type": "string", "default": None, "required": True, "choices": None,
         "minimum": None, "maximum": None, "description": "Album title"},
    ]
    table = run("params", str(spec)).output
    assert "title (string, required)\n    Album title" in table
    assert 'bitrate (default "192k", any value)' in table  # a bare default: not declared, not checked
    planned = run("plan", str(spec))
    assert planned.exit_code == 2 and "required parameter not given: title" in planned.output


def test_params_of_a_spec_without_any() -> None:
    result = run("params", str(REPO / "specs" / "mp3-bitrates.yaml"))
    assert result.exit_code == 0 and "has no parameters" in result.output


def test_plan_shows_every_stage(tmp_path: Path) -> None:
    result = run("plan", str(REPO / "specs" / "chunked-encode.yaml"))
    assert result.exit_code == 0, result.output
    assert "stages 3" in result.output
    assert "split: 5 task(s), one task per input; outputs kept for later stages only" in result.output
    assert "encode: one task per output file of split; outputs kept for later stages only; known when split has " \
           "finished" in result.output
    assert "join: one task per input, over the outputs of encode it led to; outputs published" in result.output
    assert "tasks  5 (later stages add theirs when they are known)" in result.output
    merge = run("plan", str(REPO / "specs" / "mp3-playlist.yaml"))
    assert "merge: 1 task(s), one task over every output of task; outputs published" in merge.output
    assert "waits through dependsOn.taskIds (5 id(s)" in merge.output
    data = json.loads(run("plan", str(REPO / "specs" / "mp3-playlist.yaml"), "--format", "json").output)
    assert data["tasks"][-1]["stage"] == "merge" and len(data["tasks"][-1]["depends_on"]) == 5


def test_reporter_lines_for_stages_blocked_tasks_and_logs() -> None:
    assert stages_line(StagesStarted(("encode", "join"), 10, 2, "encode: 8 task(s)")) == (
        "== stages encode, join: 10 tasks to run (2 done earlier): encode: 8 task(s)")
    blocked = TaskFinished("merge", "blocked", reason="not run: task a failed")
    assert task_line(blocked) == "blocked merge (not run: task a failed)"
    failed = TaskFinished("a", "failed", 1, 0.5, 1, None, ("boom",), logs="/run/job/a")
    text = summary_text(RunFinished("job", "local", 3, 1, 1, 0, 2.0, "out", 1, failures=(failed,), blocked=1,
                                    not_run=("join",)))
    assert "FAILED: 1 succeeded, 1 failed, 1 blocked of 3 tasks" in text
    assert "not run: stage join" in text and "full stdout and stderr: /run/job/a" in text

"""Files, merges and stages on the local backend: order, blocking, fan-out over what a stage
produced, resume per stage, output rules, job environment and wall-clock limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from batchspec.cli import cli

from .conftest import POOL, make_inputs


def write(tmp_path: Path, **spec: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps({"batchspec": 1, "name": "job", "pool": POOL, "inputs": {"path": "inputs/*"},
                                "outputs": {"download": "out"}, **spec}, indent=2))
    return path


def run(spec: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run with --json; the exit code, the events and the plain text of the messages."""
    result = CliRunner().invoke(cli, ["run", str(spec), "--run-dir", str(spec.parent / "run"), "--slots", "2",
                                      "--backend", "local", "--json", *args], catch_exceptions=False)
    events = [json.loads(line) for line in result.output.splitlines()]
    return result.exit_code, events, "\n".join(e.get("text", "") for e in events if e["event"] == "message")


def finished(events: list[dict[str, Any]], state: str = "succeeded") -> list[str]:
    return sorted(e["task_id"] for e in events if e["event"] == "task" and e["state"] == state)


MERGE = {
    "task": {"command": "sleep 0.2; tr a-z A-Z < <<input>> > <<stem>>.up", "outputs": ["<<stem>>.up"]},
    # The merge sees every output; it records what it saw, and that all were complete.
    "merge": {"command": "seen=$(ls); echo $seen > seen.txt; cat <% for f in inputs %><<f>> <% endfor %> > all.txt",
              "outputs": ["all.txt", "seen.txt"]},
}


def test_the_merge_runs_after_every_task_with_all_their_outputs(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt", "c.txt"], "x\n")
    code, events, _ = run(write(tmp_path, **MERGE))
    assert code == 0
    order = [e["task_id"] for e in events if e["event"] == "task"]
    assert order[-1] == "merge" and len(order) == 4
    out = tmp_path / "out"
    assert (out / "all.txt").read_text() == "X\nX\nX\n"
    assert (out / "seen.txt").read_text().split() == ["a.up", "b.up", "c.up"]
    assert sorted(p.name for p in out.iterdir()) == ["a.up", "all.txt", "b.up", "c.up", "seen.txt"]


def test_a_failed_task_blocks_the_merge(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["a.txt", "bad.txt"])
    spec = write(tmp_path, **{**MERGE, "task": {**MERGE["task"], "command": "[ <<stem>> != bad ] && cp <<input>> "
                                                                            "<<stem>>.up"}})
    code, events, _ = run(spec)
    assert code == 1
    assert finished(events, "blocked") == ["merge"]
    summary = events[-1]
    assert (summary["failed"], summary["blocked"], summary["succeeded"]) == (1, 1, 1)
    assert summary["failures"][0]["logs"].endswith(summary["failures"][0]["task_id"])  # its task directory
    assert (tmp_path / "out" / "a.up").exists() and not (tmp_path / "out" / "all.txt").exists()


# A stage that writes as many files as its input has lines, then one task per file, then one per input.
STAGES = {
    "stages": [
        {"name": "split", "publish": False,
         "task": {"command": "mkdir -p <<task_id>> && split -l 1 -d <<input>> <<task_id>>/part-",
                  "outputs": ["<<task_id>>/part-*"]}},
        {"name": "shout",
         "task": {"command": "mkdir -p up/<<dir>> && tr a-z A-Z < <<input>> > up/<<input>>",
                  "outputs": [{"path": "up/<<input>>", "to": "parts/<<dir>>/"}]}},
        {"name": "join", "group": "input", "with_source": True,
         "task": {"command": "cat <% for f in inputs %><<f>> <% endfor %> > <<source.stem>>.joined && "
                             "cmp -s <<source.input>> <<source.name>> && wc -l < <<source.input>> > <<source.stem>>.n",
                  "outputs": ["<<source.stem>>.joined", "<<source.stem>>.n"]}},
    ],
}


def test_a_stage_fans_out_over_what_the_stage_before_produced(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["one.txt"], "a\nb\nc\n")
    make_inputs(tmp_path, ["two.txt"], "d\ne\n")
    spec = write(tmp_path, **STAGES)
    code, events, _ = run(spec)
    assert code == 0
    waves = [(e["stages"], e["tasks"]) for e in events if e["event"] == "stages"]
    assert waves == [(["split"], 2), (["shout", "join"], 7)]
    out = tmp_path / "out"
    assert (out / "one.joined").read_text() == "A\nB\nC\n" and (out / "two.joined").read_text() == "D\nE\n"
    assert (out / "one.n").read_text().strip() == "3"
    # split is not published: its parts stay in the run directory, for later stages only; shout's
    # (upper-cased) parts are published under parts/.
    parts = sorted(str(p.relative_to(out)) for p in out.rglob("part-*"))
    assert len(parts) == 5 and all(p.startswith("parts/") for p in parts)
    assert sorted(p.read_text() for p in out.rglob("part-*")) == ["A\n", "B\n", "C\n", "D\n", "E\n"]
    store = list((tmp_path / "run").rglob("stages/split/*/part-*"))
    assert len(store) == 5


def test_status_of_a_staged_run_counts_every_stage(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["one.txt"], "a\nb\nc\n")
    spec = write(tmp_path, **STAGES)
    assert run(spec)[0] == 0
    result = CliRunner().invoke(cli, ["status", str(spec), "--run-dir", str(tmp_path / "run"), "--backend", "local",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    (job,) = json.loads(result.output)["jobs"]
    assert len(job["tasks"]) == 5  # split, three parts shouted, one join


def test_resume_redoes_only_what_depends_on_a_changed_result(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["one.txt"], "a\nb\nc\n")
    make_inputs(tmp_path, ["two.txt"], "d\ne\n")
    spec = write(tmp_path, **STAGES)
    assert run(spec)[0] == 0
    code, events, _text = run(spec)
    assert code == 0 and finished(events) == [] and events[-1]["skipped"] == 9
    # One published result of the shout stage is gone: its task and its input's join run again.
    gone = sorted((tmp_path / "out" / "parts").rglob("part-*"))[0]
    gone.unlink()
    code, events, _ = run(spec)
    assert code == 0
    again = finished(events)
    assert len(again) == 2 and again[0].startswith("join-") and again[1].startswith("shout-")
    assert gone.exists() and events[-1]["skipped"] == 7


def test_a_stage_that_produces_fewer_files_on_a_rerun_fans_out_over_those(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["one.txt"], "a\nb\nc\n")
    spec = write(tmp_path, **STAGES)
    assert run(spec)[0] == 0
    (tmp_path / "inputs" / "one.txt").write_text("z\n")
    code, events, _ = run(spec, "--force")
    assert code == 0
    assert (tmp_path / "out" / "one.joined").read_text() == "Z\n"
    assert [e["tasks"] for e in events if e["event"] == "stages"] == [1, 2]


def test_output_rules_when_and_where(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["ok.txt", "bad.txt"])
    spec = write(tmp_path, task={
        "command": "echo log-<<stem>> > run.log; echo r > report.txt; mkdir -p img && touch img/<<stem>>-1.png; "
                   "cp <<input>> <<stem>>.out; [ <<stem>> = ok ]",
        "outputs": ["<<stem>>.out",
                    {"path": "run.log", "when": "always", "to": "logs/<<stem>>.log"},
                    {"path": "report.txt", "when": "failure", "to": "failed/<<stem>>/"},
                    {"path": "img/<<stem>>-*.png", "to": "pictures/"}],
    })
    code, _, _ = run(spec)
    assert code == 1
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "failed/bad/report.txt", "logs/bad.log", "logs/ok.log", "ok.out", "pictures/ok-1.png"]
    assert (out / "logs" / "bad.log").read_text() == "log-bad\n"


def test_files_every_task_gets(tmp_path: Path, web: str) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt"])
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "logo.png").write_bytes(b"PNG")
    (tmp_path / "assets" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.srt").write_text("sub a")
    (tmp_path / "subs" / "b.srt").write_text("sub b")
    (tmp_path / "web" / "font.ttf").write_text("font")
    spec = write(tmp_path, files=[{"path": "assets/logo.png"}, {"url": f"{web}/font.ttf", "to": "fonts/f.ttf"},
                                  {"path": "assets/run.sh", "mode": "0755"}],
                 task={"command": "cat logo.png fonts/f.ttf <<stem>>.srt > <<stem>>.out && ./run.sh >> <<stem>>.out",
                       "outputs": ["<<stem>>.out"], "files": [{"path": "subs/<<stem>>.srt"}]})
    code, _, text = run(spec)
    assert code == 0, text
    assert (tmp_path / "out" / "a.out").read_text() == "PNGfontsub aran\n"
    assert (tmp_path / "out" / "b.out").read_text() == "PNGfontsub bran\n"
    assert "downloaded 1 file(s) from URLs" in text


def test_a_url_that_cannot_be_fetched_stops_the_run_before_any_task(tmp_path: Path, web: str) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write(tmp_path, files=[{"url": f"{web}/missing.bin"}], task={"command": "touch x", "outputs": ["x"]})
    result = CliRunner().invoke(cli, ["run", str(spec), "--run-dir", str(tmp_path / "run"), "--backend", "local"])
    assert result.exit_code == 2
    assert f"cannot download {web}/missing.bin" in result.output and "check the URL in `files`" in result.output
    assert not list((tmp_path / "run").rglob("wd"))


def test_job_environment_and_task_environment(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write(tmp_path, params={"level": "info"},
                 job={"env": {"LEVEL": "<<params.level>>", "BOTH": "job", "JOB": "<<job_id>>"}},
                 task={"command": "echo $LEVEL $BOTH $JOB > env.txt", "outputs": ["env.txt"], "env": {"BOTH": "task"}})
    code, events, _ = run(spec, "--set", "level=debug")
    assert code == 0
    level, both, job = (tmp_path / "out" / "env.txt").read_text().split()
    (plan,) = [e for e in events if e["event"] == "plan"]
    assert (level, both, job) == ("debug", "task", plan["job_id"])


def test_the_job_wall_clock_limit_stops_everything(tmp_path: Path) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt", "c.txt", "d.txt"])
    spec = write(tmp_path, job={"timeout": "1s"}, task={"command": "sleep 30", "outputs": []})
    code, events, text = run(spec)
    assert code == 1
    assert "the job's wall-clock limit (1.0s, job.timeout) has passed" in text
    failures = events[-1]["failures"]
    assert len(failures) == 4 and events[-1]["seconds"] < 15
    reasons = sorted(f["reason"] for f in failures)
    assert reasons[0].startswith("not run: the job's wall-clock limit") or reasons[0].startswith("stopped")
    assert all("job.timeout" in r for r in reasons)

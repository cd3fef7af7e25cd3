"""``batchspec validate``, ``schema`` and ``plan`` through the command line (click's CliRunner)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchspec.cli import cli
from batchspec.plan import Plan
from batchspec.spec import schema
from tests.spec.conftest import VALID

REPO = Path(__file__).resolve().parents[1]

SPEC = VALID  # the valid spec the validation tests start from
# Ten levels of nine aliases: a billion nodes once expanded, a few hundred bytes on disk.
ALIAS_BOMB = b"a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n".encode() for i in range(1, 10)
)
BROKEN = SPEC.replace("spot: 2", "spot: -1").replace("<<stem>>.mp3\n", "<<stm>>.mp3\n")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with specs/ holding one valid spec and three inputs."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "specs" / "demo.yaml", SPEC)
    for name in ("a", "b", "c"):
        write(tmp_path / "specs" / "inputs" / f"{name}.mp4", "")
    return tmp_path


# --- validate ---------------------------------------------------------------------------------


def test_validate_defaults_to_specs_dir(project: Path) -> None:
    result = run("validate")
    assert result.exit_code == 0
    assert result.output == "ok: 1 file valid\n"


def test_validate_reports_every_error_as_file_line_column(project: Path) -> None:
    write(project / "specs" / "broken.yaml", BROKEN)
    result = run("validate", "specs")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "specs/broken.yaml:10:31: $.pool.nodes.spot: -1 is less than the minimum of 0",
        "specs/broken.yaml:14:58: $.task.command: unknown template variable 'stm'; did you mean 'stem'?",
        "2 problems in 1 of 2 files",
    ]


def test_validate_json_format(project: Path) -> None:
    write(project / "specs" / "broken.yaml", BROKEN)
    result = run("validate", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.output) == [
        {"file": "specs/broken.yaml", "line": 10, "column": 31, "path": "$.pool.nodes.spot",
         "message": "-1 is less than the minimum of 0"},
        {"file": "specs/broken.yaml", "line": 14, "column": 58, "path": "$.task.command",
         "message": "unknown template variable 'stm'; did you mean 'stem'?"},
    ]


def test_validate_json_format_when_valid(project: Path) -> None:
    result = run("validate", "specs/demo.yaml", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.output) == []


def test_validate_directories_recursively(project: Path) -> None:
    write(project / "jobs" / "a.yaml", SPEC)
    write(project / "jobs" / "deep" / "b.yml", SPEC.replace("demo", "demo-b"))
    write(project / "jobs" / "deep" / "c.json", json.dumps({"batchspec": 1}))
    write(project / "jobs" / "notes.txt", "not a spec")
    write(project / "jobs" / ".hidden" / "d.yaml", "ignored: [")
    result = run("validate", "jobs", "--format", "json")
    assert result.exit_code == 1
    problems = json.loads(result.output)
    assert {p["file"] for p in problems} == {"jobs/deep/c.json"}
    assert [p["message"] for p in problems] == [
        "missing required key 'name' in the spec",
        "missing required key 'pool' in the spec",
        "missing required key 'task' in the spec (or 'stages' for several steps)",
    ]


def test_validate_several_paths(project: Path) -> None:
    write(project / "other.yaml", SPEC)
    result = run("validate", "specs", "other.yaml")
    assert (result.exit_code, result.output) == (0, "ok: 2 files valid\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "specs/bad.yaml: $: empty file: a spec needs at least batchspec, name, pool, inputs and task"),
        (b"\x00\x01binary", "specs/bad.yaml: $: not a text file (it contains binary data)"),
        (b"name: caf\xe9\n", "specs/bad.yaml:1:1: $: not UTF-8 text (byte 0xe9 at offset 9)"),
        (ALIAS_BOMB,
         "specs/bad.yaml: $: too many YAML nodes (over 100,000 after expanding aliases)"),
    ],
    ids=["empty", "binary", "not-utf8", "alias-bomb"],
)
def test_bad_files_exit_1_with_a_message(project: Path, content: bytes, message: str) -> None:
    (project / "specs" / "bad.yaml").write_bytes(content)
    result = run("validate")
    assert result.exit_code == 1
    assert result.output.splitlines() == [message, "1 problem in 1 of 2 files"]


def test_big_file_exits_1(project: Path) -> None:
    with (project / "specs" / "big.yaml").open("wb") as stream:
        stream.truncate(50 * 1000 * 1000)
    result = run("validate", "specs/big.yaml")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "specs/big.yaml: $: file is 50.0 MB; a spec file may be at most 1024 KiB"


def test_unknown_filter_is_a_problem_not_a_crash(project: Path) -> None:
    write(project / "specs" / "f.yaml", SPEC.replace("<<input>>", "<<input | nosuch>>"))
    result = run("validate", "specs/f.yaml")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "specs/f.yaml:14:32: $.task.command: unknown filter 'nosuch'"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["validate", "missing.yaml"], "no such file or directory: missing.yaml"),
        (["validate", "empty-dir"], "no spec files (*.yaml, *.yml, *.json) under empty-dir"),
        (["validate", "--format", "xml"], "'xml' is not one of 'text', 'json'"),
        (["validate", "--bogus"], "No such option"),
    ],
)
def test_validate_usage_errors_exit_2(project: Path, args: list[str], fragment: str) -> None:
    (project / "empty-dir").mkdir()
    result = run(*args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_validate_without_specs_dir_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("validate")
    assert result.exit_code == 2
    assert "no such file or directory: specs" in result.output


# --- schema -----------------------------------------------------------------------------------


def test_schema_prints_the_shipped_schema() -> None:
    result = run("schema")
    assert result.exit_code == 0
    assert json.loads(result.output) == schema()
    assert json.loads(result.output)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --- plan -------------------------------------------------------------------------------------


def test_plan_table(project: Path) -> None:
    result = run("plan", "specs/demo.yaml", "--backend", "local")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"job {4}demo-[0-9a-f]{8}", lines[0])
    assert lines[1] == ("pool   demo-pool: standard_a1_v2, 0 dedicated + 2 spot nodes, 1 slot(s) per node, "
                        "image canonical/ubuntu-24_04-lts/server/latest")
    assert lines[2] == "params bitrate=192k"
    assert lines[3] == "tasks  3"
    for stem in "abc":
        assert re.search(rf"{stem}-[0-9a-f]{{8}} .*ffmpeg -i {stem}.mp4 -b:a 192k {stem}.mp3 .*inputs/{stem}.mp4 "
                         rf".*{stem}.mp3", result.output)
    assert "more" not in result.output


def test_plan_limit(project: Path) -> None:
    result = run("plan", "specs/demo.yaml", "--limit", "1")
    assert result.exit_code == 0
    assert "a.mp4" in result.output and "b.mp4" not in result.output and "c.mp4" not in result.output
    assert result.output.rstrip().endswith("... and 2 more")
    assert run("plan", "specs/demo.yaml", "--limit", "-1").exit_code == 2


def test_plan_shows_20_tasks_by_default(project: Path) -> None:
    for i in range(22):
        write(project / "specs" / "inputs" / f"more-{i:02d}.mp4", "")
    result = run("plan", "specs/demo.yaml")
    assert result.exit_code == 0
    assert "tasks  25" in result.output
    shown = re.findall(r"inputs/[\w-]+\.mp4", result.output)
    assert len(shown) == 20 and shown[-1] == "inputs/more-16.mp4"
    assert result.output.rstrip().endswith("... and 5 more")


def test_plan_json_is_the_whole_plan_and_stable(project: Path) -> None:
    first = run("plan", "specs/demo.yaml", "--format", "json")
    second = run("plan", "specs/demo.yaml", "--format", "json", "--limit", "1")
    assert first.exit_code == 0
    assert first.output == second.output
    plan = Plan.from_json(first.output)
    assert len(plan.tasks) == 3 and plan.tasks[2].command == "ffmpeg -i c.mp4 -b:a 192k c.mp3"
    assert json.loads(first.output)["task_count"] == 3


def test_plan_set(project: Path) -> None:
    base = json.loads(run("plan", "specs/demo.yaml", "--format", "json").output)
    result = run("plan", "specs/demo.yaml", "--format", "json", "--set", "bitrate=320k")
    assert result.exit_code == 0
    plan = json.loads(result.output)
    assert plan["params"] == {"bitrate": "320k"}
    assert plan["tasks"][0]["command"] == "ffmpeg -i a.mp4 -b:a 320k a.mp3"
    assert plan["job_id"] != base["job_id"]


def test_plan_unknown_parameter_lists_the_known_ones(project: Path) -> None:
    result = run("plan", "specs/demo.yaml", "--set", "bitrat=320k")
    assert result.exit_code == 2
    assert result.stderr == "error: --set bitrat: unknown parameter 'bitrat'; known parameters: bitrate\n"
    assert result.stdout == ""


def test_plan_empty_inputs_exit_2(project: Path) -> None:
    write(project / "specs" / "none.yaml", SPEC.replace("inputs/*.mp4", "nothing/*.mp4"))
    result = run("plan", "specs/none.yaml")
    assert result.exit_code == 2  # nothing to run: batchspec cannot do what was asked
    assert result.stdout == ""
    assert re.match(r"error: specs/none\.yaml:[0-9]+: no inputs: patterns 'nothing/\*\.mp4' \(relative to specs\) "
                    "matched nothing", result.stderr), result.stderr
    assert "Traceback" not in result.output


def test_plan_allow_empty(project: Path) -> None:
    write(project / "specs" / "none.yaml",
          SPEC.replace("inputs/*.mp4", "nothing/*.mp4\n  allow_empty: true"))
    result = run("plan", "specs/none.yaml")
    assert result.exit_code == 0
    assert "tasks  0" in result.output
    assert "warning: input pattern 'nothing/*.mp4' matched no files" in result.output


def test_plan_invalid_spec_exit_2(project: Path) -> None:
    write(project / "specs" / "broken.yaml", BROKEN)
    result = run("plan", "specs/broken.yaml")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: specs/broken.yaml:10:31: $.pool.nodes.spot: -1 is less than the minimum of 0",
        "specs/broken.yaml:14:58: $.task.command: unknown template variable 'stm'; did you mean 'stem'?",
        "  hint: run `batchspec validate specs/broken.yaml` after fixing it",
    ]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["plan"], 2, "Missing argument 'SPEC'"),
        (["plan", "specs/demo.yaml", "--format", "yaml"], 2, "'yaml' is not one of 'table', 'json'"),
        (["plan", "specs/demo.yaml", "--set", "bitrate"], 2, "error: --set expects KEY=VALUE, got 'bitrate'"),
        (["plan", "specs/missing.yaml"], 2, "no such spec file: specs/missing.yaml"),
        (["plan", "specs"], 2, "is a directory"),
    ],
)
def test_plan_usage_errors(project: Path, args: list[str], code: int, fragment: str) -> None:
    result = run(*args)
    assert result.exit_code == code
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_plan_container_inputs_on_the_local_backend(project: Path) -> None:
    write(project / "specs" / "blobs.yaml", SPEC.replace("  path: inputs/*.mp4", "  container: raw-videos"))
    result = run("plan", "specs/blobs.yaml", "--backend", "local")
    assert result.exit_code == 2
    assert re.match(r"error: specs/blobs\.yaml:[0-9]+: inputs\.container 'raw-videos' lists blobs in Azure Storage, "
                    "which this backend cannot read", result.output), result.output


def test_plan_template_error_names_field_and_line(project: Path) -> None:
    write(project / "specs" / "t.yaml", SPEC.replace("<<stem>>.mp3\n", "<<item.nope>>.mp3\n"))
    result = run("plan", "specs/t.yaml")
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: specs/t.yaml:14: $.task.command for input 'inputs/a.mp4': undefined variable:"
    )
    assert "nope" in result.output


def test_plan_of_the_tutorial_spec() -> None:
    result = run("plan", str(REPO / "specs" / "mp4-to-mp3.yaml"), "--format", "json")
    assert result.exit_code == 0
    plan = json.loads(result.output)
    assert plan["task_count"] == 5
    assert plan["pool"]["start_task"]["command"] == (
        "command -v ffmpeg >/dev/null || (apt-get update && apt-get install -y ffmpeg)"
    )
    assert [t["outputs"] for t in plan["tasks"]] == [[f"sample-{i}.mp3"] for i in range(1, 6)]

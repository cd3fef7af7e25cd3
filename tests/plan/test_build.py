"""Planning: matrix expansion, variables, ids, job id stability, outputs, --set, the JSON form."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from batchspec.errors import EXIT_USAGE, SpecError
from batchspec.plan import Plan, PlanError, build_plan, parse_overrides
from batchspec.spec import load_spec

from .conftest import SpecMaker, patterns, touch

BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@pytest.fixture
def three_inputs(tmp_path: Path) -> Path:
    touch(tmp_path, "inputs/a.mp4", "inputs/b.mp4", "inputs/c.mp4")
    return tmp_path


# --- tasks and variables ----------------------------------------------------------------------


def test_one_task_per_input(make_spec: SpecMaker, three_inputs: Path) -> None:
    plan = build_plan(make_spec())
    assert [t.command for t in plan.tasks] == [
        "ffmpeg -i a.mp4 -b:a 192k a.mp3",
        "ffmpeg -i b.mp4 -b:a 192k b.mp3",
        "ffmpeg -i c.mp4 -b:a 192k c.mp3",
    ]
    assert [patterns(t) for t in plan.tasks] == [("a.mp3",), ("b.mp3",), ("c.mp3",)]
    assert [(f.source, f.path, f.container) for t in plan.tasks for f in t.inputs] == [
        ("inputs/a.mp4", "a.mp4", None), ("inputs/b.mp4", "b.mp4", None), ("inputs/c.mp4", "c.mp4", None)]
    assert plan.name == "demo" and plan.params == {"bitrate": "192k"}
    assert plan.pool.id == "demo-pool" and plan.pool.spot == 2


def test_every_variable(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "media/2024/clip.one.MP4")
    spec = make_spec({
        "inputs": {"path": "media/**/*.MP4"},
        "task": {
            "command": "echo <<input>> <<name>> <<stem>> <<ext>> <<dir>> <<index>> <<count>> <<task_id>> <<job_id>>"
                       " <<params.bitrate>> <<matrix.q>> <<item>>",
            "outputs": ["<<dir>>/<<stem>>.<<matrix.q>>.out"],
            "env": {"IN": "<<input>>", "JOB": "<<job_id>>"},
        },
        "matrix": {"q": ["low"]},
    })
    (task,) = build_plan(spec).tasks
    plan = build_plan(spec)
    assert task.command == (
        f"echo 2024/clip.one.MP4 clip.one.MP4 clip.one .MP4 2024 0 1 {task.id} {plan.job_id} 192k low "
        "media/2024/clip.one.MP4"
    )
    assert patterns(task) == ("2024/clip.one.low.out",)
    assert task.env == (("IN", "2024/clip.one.MP4"), ("JOB", plan.job_id))


def test_dir_is_dot_at_the_top(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"task": {"command": "echo <<dir>>", "outputs": ["<<dir>>/<<stem>>.x"]}})
    first = build_plan(spec).tasks[0]
    assert (first.command, patterns(first)) == ("echo .", ("a.x",))


def test_matrix_expansion(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/a.mp4", "inputs/b.mp4")
    spec = make_spec({
        "matrix": {"bitrate": ["96k", "128k", "192k"], "mono": [True, False]},
        "task": {"command": "enc <<input>> <<matrix.bitrate>> <<matrix.mono>> <<index>>/<<count>>",
                 "outputs": ["<<stem>>-<<matrix.bitrate>>-<<matrix.mono>>.mp3"]},
    })
    plan = build_plan(spec)
    assert len(plan.tasks) == 2 * 3 * 2
    assert [t.command for t in plan.tasks[:3]] == ["enc a.mp4 96k true 0/12", "enc a.mp4 96k false 1/12",
                                                   "enc a.mp4 128k true 2/12"]
    assert plan.tasks[-1].command == "enc b.mp4 192k false 11/12"
    outputs = [o.pattern for t in plan.tasks for o in t.outputs]
    assert len(set(outputs)) == 12
    assert len({t.id for t in plan.tasks}) == 12
    assert all(t.id.startswith(("a-", "b-")) for t in plan.tasks)


def test_start_task_is_rendered_with_params(make_spec: SpecMaker, three_inputs: Path) -> None:
    command = "apt-get install -y <<params.bitrate>> <<params.bitrate | raw>>"
    spec = make_spec({"pool": {"start_task": {"command": command}}})
    plan = build_plan(spec, ["bitrate=a b"])
    assert plan.pool.start_task is not None
    assert plan.pool.start_task.command == "apt-get install -y 'a b' a b"


# --- ids --------------------------------------------------------------------------------------


def test_default_task_ids_are_valid_stable_and_unique(make_spec: SpecMaker, tmp_path: Path) -> None:
    names = ["a b.mp4", "A B.mp4", "caf\u00e9.mp4", "x" * 200 + ".mp4", "-.mp4", "a..mp4", "a_b.mp4", "\u65e5.mp4"]
    touch(tmp_path, *(f"inputs/{n}" for n in names))
    spec = make_spec()
    ids = [t.id for t in build_plan(spec).tasks]
    assert ids == [t.id for t in build_plan(spec).tasks]  # deterministic
    assert all(BATCH_ID.match(i) for i in ids), ids
    assert len({i.casefold() for i in ids}) == len(names)
    assert "x" * 55 + "-" in " ".join(ids)
    by_name = {t.inputs[0].path: t.id for t in build_plan(spec).tasks}
    assert by_name["a b.mp4"].startswith("a_b-") and by_name["A B.mp4"].startswith("A_B-")
    assert by_name["\u65e5.mp4"].startswith("Ri-")  # transliterated (anyascii), not "task-"


def test_default_ids_do_not_depend_on_the_directory(tmp_path: Path, make_spec: SpecMaker) -> None:
    touch(tmp_path, "inputs/a.mp4")
    first = build_plan(make_spec()).tasks[0].id
    other = tmp_path / "elsewhere"
    touch(other, "inputs/a.mp4")
    (other / "spec.yaml").write_text((tmp_path / "spec.yaml").read_text())
    assert build_plan(load_spec(other / "spec.yaml")).tasks[0].id == first


def test_task_id_template(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"task": {"id": "<<stem>>-<<params.bitrate>>-<<index>>"}})
    assert [t.id for t in build_plan(spec).tasks] == ["a-192k-0", "b-192k-1", "c-192k-2"]


def test_task_id_collision_ignoring_case(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/Clip.mp4", "inputs/clip.mp4")
    spec = make_spec({"task": {"id": "<<stem>>", "outputs": ["<<index>>.mp3"]}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert caught.value.message == (
        "task id 'clip' is used twice (ids are compared ignoring case): "
        "by input 'inputs/Clip.mp4' and input 'inputs/clip.mp4'"
    )


def test_task_id_collision_in_a_matrix(make_spec: SpecMaker, three_inputs: Path) -> None:
    # The same id for every combination of one input is known without inputs: validation says so.
    with pytest.raises(SpecError, match=re.escape("every matrix combination of an input would get the same task id")):
        make_spec({"task": {"id": "<<stem>>", "outputs": []}, "matrix": {"rate": [1, 2]}})
    # Ids that clash across inputs are found when planning.
    spec = make_spec({"task": {"id": "x<<matrix.rate>>", "outputs": []}, "matrix": {"rate": [1, 2]}})
    message = "by input 'inputs/a.mp4' with rate=1 and input 'inputs/b.mp4' with rate=1"
    with pytest.raises(PlanError, match=re.escape(message)):
        build_plan(spec)


def test_task_id_template_must_render_a_batch_id(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"task": {"id": "<<name>>"}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert caught.value.message.endswith(
        "$.task.id for input 'inputs/a.mp4': task id 'a.mp4' may only contain letters, digits, '-' and '_' (found '.')"
    )
    assert caught.value.message.startswith(f"{spec.path}:")


def test_job_id_is_stable_for_the_same_plan(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec()
    job_id = build_plan(spec).job_id
    assert re.fullmatch(r"demo-[0-9a-f]{8}", job_id)
    assert build_plan(spec).job_id == job_id
    assert build_plan(load_spec(spec.path)).job_id == job_id  # a new process would read the file again
    assert build_plan(spec, ["bitrate=192k"]).job_id == job_id  # the same value as the default


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"bitrate": "320k"}},
        {"task": {"command": "ffmpeg -y -i <<input>> -b:a <<params.bitrate>> <<stem>>.mp3"}},
        {"task": {"outputs": ["<<stem>>.mp3", "<<stem>>.log"]}},
        {"task": {"retries": 3}},
        {"pool": {"nodes": {"spot": 3}}},
        {"pool": {"vm_size": "standard_d2s_v3"}},
        {"matrix": {"x": [1]}},
        {"inputs": {"exclude": "inputs/zzz.mp4"}},
        {"description": "now with a description"},
        {"outputs": {"download": "elsewhere"}},
    ],
)
def test_job_id_changes_when_the_spec_changes(make_spec: SpecMaker, three_inputs: Path, change: dict[str, Any]) -> None:
    before = build_plan(make_spec()).job_id
    assert build_plan(make_spec(change)).job_id != before


def test_job_id_changes_with_params_and_inputs(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec()
    before = build_plan(spec).job_id
    assert build_plan(spec, ["bitrate=320k"]).job_id != before
    touch(three_inputs, "inputs/d.mp4")
    after_add = build_plan(spec).job_id
    assert after_add != before
    (three_inputs / "inputs/d.mp4").rename(three_inputs / "inputs/e.mp4")
    assert build_plan(spec).job_id not in (before, after_add)


def test_job_id_override(make_spec: SpecMaker, three_inputs: Path) -> None:
    assert build_plan(make_spec({"job": {"id": "nightly"}})).job_id == "nightly"
    spec = make_spec({"job": {"id": "<<name>>-<<params.bitrate>>"}})
    assert build_plan(spec).job_id == "demo-192k"
    assert build_plan(spec, ["bitrate=320k"]).job_id == "demo-320k"
    with pytest.raises(PlanError, match=r"\$\.job\.id renders to an invalid id: job id 'demo-a b'"):
        build_plan(spec, ["bitrate=a b"])


def test_long_name_keeps_job_id_within_64(make_spec: SpecMaker, three_inputs: Path) -> None:
    job_id = build_plan(make_spec({"name": "n" * 64})).job_id
    assert len(job_id) == 64 and BATCH_ID.match(job_id)


# --- outputs ----------------------------------------------------------------------------------


def test_outputs_are_rendered_not_quoted(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/my clip.mp4")
    spec = make_spec({"task": {"outputs": ["<<stem>>.mp3", "logs/<<stem>>.log", "./<<stem>>/*.png"]}})
    (task,) = build_plan(spec).tasks
    assert patterns(task) == ("my clip.mp3", "logs/my clip.log", "my clip/*.png")
    assert task.command.endswith("'my clip'.mp3")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("<<dir>>/../<<stem>>.mp3", "must not contain '..'"),
        ("sub/../<<stem>>.mp3", "must not contain '..'"),  # even where normalising would hide it
        ("./", "empty output pattern"),
        ("/tmp/<<stem>>.mp3", "must be relative to the task's working directory"),
        ("<<params.bitrate>>", "must be relative"),
        ("<<params.empty>>", "empty output pattern"),
        ("C:\\<<stem>>.mp3", "must be relative"),
    ],
)
def test_unsafe_rendered_outputs(make_spec: SpecMaker, three_inputs: Path, pattern: str, problem: str) -> None:
    spec = make_spec({"params": {"bitrate": "/abs", "empty": " "}, "task": {"outputs": [pattern]}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert "$.task.outputs[0] of task 'a-" in caught.value.message
    assert problem in caught.value.message


def test_a_colon_in_a_name_is_not_a_drive(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/1:2.mp4", "inputs/a:b.mp4")
    assert [patterns(t) for t in build_plan(make_spec()).tasks] == [("1:2.mp3",), ("a:b.mp3",)]


def test_two_tasks_with_the_same_output(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"task": {"outputs": ["<<stem>>.mp3", "summary.txt"]}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    tasks = build_plan(make_spec()).tasks
    assert f"tasks '{tasks[0].id}' and '{tasks[1].id}' would both produce 'summary.txt'" in caught.value.message
    assert caught.value.exit_code == EXIT_USAGE


def test_same_output_after_normalising(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/a/x.mp4", "inputs/b/x.mp4")
    spec = make_spec({"inputs": {"path": "inputs/*/x.mp4"}, "task": {"outputs": ["./out//<<stem>>.mp3"]}})
    with pytest.raises(PlanError, match=re.escape("would both produce 'out/x.mp3'")):
        build_plan(spec)
    spec = make_spec({"inputs": {"path": "inputs/*/x.mp4"}, "task": {"outputs": ["<<dir>>/<<stem>>.mp3"]}})
    assert [patterns(t) for t in build_plan(spec).tasks] == [("a/x.mp3",), ("b/x.mp3",)]


def test_glob_characters_in_names_are_literal_in_outputs(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/Clip [1080p].mp4")
    spec = make_spec({"task": {"outputs": ["<<stem>>.mp3", "<<stem>>-*.jpg"]}})
    (task,) = build_plan(spec).tasks
    assert patterns(task) == ("Clip [[]1080p].mp3", "Clip [[]1080p]-*.jpg")


# --- template errors while planning -------------------------------------------------------------


def test_render_error_names_field_line_and_input(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"task": {"command": "echo <<item.missing>>"}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert caught.value.message.startswith(f"{spec.path}:")
    line = caught.value.message.split(":")[1]
    assert (spec.path.read_text().splitlines()[int(line) - 1].strip()).startswith('"command": "echo <<item.missing>>"')
    assert "$.task.command for input 'inputs/a.mp4': undefined variable" in caught.value.message
    assert "missing" in caught.value.message


def test_sandbox_escape_at_plan_time_is_a_plan_error(make_spec: SpecMaker, three_inputs: Path) -> None:
    # |attr with a computed name gets past validation; the sandbox still refuses it.
    spec = make_spec({"task": {"command": "echo <<input | attr('__cla' ~ 'ss__')>>"}})
    with pytest.raises(PlanError, match="not allowed in a template"):
        build_plan(spec)


def test_error_in_output_names_the_output_field(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"task": {"outputs": ["<<stem>>.mp3", "<<item.missing>>.x"]}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert "$.task.outputs[1] for input 'inputs/a.mp4': undefined variable" in caught.value.message


# --- --set ------------------------------------------------------------------------------------


def test_overrides_are_yaml_scalars() -> None:
    params = dict.fromkeys("abcdefghij")
    got = parse_overrides(["a=320k", "b=10", "c=1.5", "d=true", "e=", "f=null", "g=2024-01-01", "h=x=y",
                           "i=!!binary aGk=", "j=[1"], params)
    assert got == {"a": "320k", "b": 10, "c": 1.5, "d": True, "e": "", "f": None, "g": "2024-01-01", "h": "x=y",
                   "i": "!!binary aGk=", "j": "[1"}


def test_override_errors() -> None:
    with pytest.raises(PlanError, match="unknown parameter 'bitrat'; known parameters: bitrate, crf"):
        parse_overrides(["bitrat=1"], {"crf": 1, "bitrate": "1"})
    with pytest.raises(PlanError, match=r"known parameters: none \(the spec has no params\)"):
        parse_overrides(["x=1"], {})
    with pytest.raises(PlanError, match="--set expects KEY=VALUE, got 'bitrate'"):
        parse_overrides(["bitrate"], {"bitrate": 1})
    with pytest.raises(PlanError, match="must be a single value"):
        parse_overrides(["bitrate=[1, 2]"], {"bitrate": 1})
    with pytest.raises(PlanError, match="must be a single value"):
        parse_overrides(["bitrate={a: 1}"], {"bitrate": 1})


def test_overrides_reach_the_commands(make_spec: SpecMaker, three_inputs: Path) -> None:
    plan = build_plan(make_spec(), ["bitrate=320k"])
    assert plan.params == {"bitrate": "320k"}
    assert plan.tasks[0].command == "ffmpeg -i a.mp4 -b:a 320k a.mp3"


def test_a_date_override_still_makes_json(make_spec: SpecMaker, three_inputs: Path) -> None:
    plan = build_plan(make_spec(), ["bitrate=2024-01-01"])
    assert json.loads(plan.to_json())["params"] == {"bitrate": "2024-01-01"}


# --- the plan as data -------------------------------------------------------------------------


def test_json_round_trip(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/a b.mp4", "inputs/-c.mp4")
    spec = make_spec({
        "description": "round trip",
        "pool": {"nodes": None, "autoscale": {"formula": "$TargetDedicatedNodes = 1;", "interval": "5m"},
                 "start_task": {"command": "echo <<params.bitrate>>", "env": {"A": "1"}, "retries": 2}},
        "matrix": {"q": [1, 2]},
        "task": {"env": {"X": "<<stem>>"}, "timeout": "1h", "retries": 1, "outputs": ["<<stem>>-<<matrix.q>>.mp3"]},
        "cleanup": {"job": "delete"},
    })
    plan = build_plan(spec)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.to_json() == plan.to_json()
    assert Plan.from_json(plan.to_json(indent=None)) == plan
    data = json.loads(plan.to_json())
    assert data["format"] == 1 and data["task_count"] == 4
    assert list(data) == ["format", "spec", "name", "description", "job_id", "pool", "requires", "outputs",
                          "cleanup", "params", "stages", "task_count", "tasks"]
    assert [(s["name"], s["retries"], s["timeout_seconds"], s["task_count"]) for s in data["stages"]] == [
        ("task", 1, 3600, 4)]
    assert data["tasks"][0] == {
        "id": plan.tasks[0].id,
        "command": "ffmpeg -i ./-c.mp4 -b:a 192k ./-c.mp3",
        "inputs": [{"source": "inputs/-c.mp4", "path": "-c.mp4"}],
        "outputs": ["-c-1.mp3"],
        "env": {"X": "-c"},
    }


def test_json_with_container_inputs_round_trips(make_spec: SpecMaker) -> None:
    spec = make_spec({"inputs": {"path": None, "container": "raw"}})
    plan = build_plan(spec, (), lambda c, p: ["x/a.mp4"])
    assert json.loads(plan.to_json())["tasks"][0]["inputs"] == [{"source": "x/a.mp4", "path": "x/a.mp4",
                                                                 "container": "raw"}]
    assert Plan.from_json(plan.to_json()) == plan


def test_unknown_plan_format() -> None:
    with pytest.raises(ValueError, match="unsupported plan format 2"):
        Plan.from_dict({"format": 2})


def test_plan_json_is_identical_across_runs(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec({"matrix": {"q": [3, 1, 2]}, "task": {"outputs": ["<<stem>>-<<matrix.q>>.mp3"]}})
    assert build_plan(spec).to_json() == build_plan(load_spec(spec.path)).to_json()


def test_planning_has_no_side_effects(make_spec: SpecMaker, three_inputs: Path) -> None:
    spec = make_spec()
    before = sorted(p.relative_to(three_inputs) for p in three_inputs.rglob("*"))
    cwd_before = sorted(os.listdir("."))
    build_plan(spec)
    assert sorted(p.relative_to(three_inputs) for p in three_inputs.rglob("*")) == before
    assert sorted(os.listdir(".")) == cwd_before


# --- the fast paths of a large plan ------------------------------------------------------------


def test_each_task_line_is_what_json_dumps_writes_of_its_dict() -> None:
    from batchspec.plan.model import InputFile, Output, PlannedTask, _task_dict, task_json

    files = [InputFile("inputs/a b.mp4", "a b.mp4"), InputFile("x/\u00e9\"q\".mp4", "q", "raw", "blob"),
             InputFile("pre/", "d/", "c", "blobs", "0755"), InputFile("https://h/x", "x", None, "url"),
             InputFile("out.mp3", "out.mp3", None, "output", None, "encode", "t-1")]
    outputs = [Output("a.mp3"), Output("*.log", "always"), Output("b.mp3", "failure", "keep/"),
               Output("c\\d\u2028.mp3", "success", "e.mp3")]
    tasks = [PlannedTask("t", "cmd"),
             PlannedTask("t\t1", "echo 'x' \"y\" \\ \u65e5", (files[0],), (outputs[0],)),
             PlannedTask("t2", "c", tuple(files), tuple(outputs), (("A", "1"), ("B", "\u00e9")), "merge",
                         ("t", "t\t1"), "t", 2, 30),
             PlannedTask("t3", "c", (files[1],), (outputs[3],), origin="t3")]
    for task in tasks:
        assert task_json(task) == json.dumps(_task_dict(task), ensure_ascii=False)


@pytest.mark.parametrize("name", ["a.mp4", "a", ".bashrc", "..x", "a.", "a..b", "...", ".", "", "a.b.c",
                                  ".a.b", "..", "x.tar.gz", "\u00e9.\u65e5"])
def test_split_ext_is_posix_splitext(name: str) -> None:
    import posixpath

    from batchspec.plan.build import split_ext

    assert split_ext(name) == posixpath.splitext(name)


def test_per_task_classes_stay_frozen_dataclasses() -> None:
    import dataclasses

    from batchspec.plan.model import InputFile, Output, PlannedTask

    task = PlannedTask("t", "c", (InputFile("a", "a"),), (Output("o"),))
    assert task == PlannedTask("t", "c", (InputFile("a", "a"),), (Output("o"),)) and hash(task) == hash(
        PlannedTask("t", "c", (InputFile("a", "a"),), (Output("o"),)))
    assert (task.retries, task.timeout_seconds, task.inputs[0].kind, task.outputs[0].when) == (0, None, "local",
                                                                                                "success")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.id = "x"  # type: ignore[misc]
    assert dataclasses.replace(task, id="u").id == "u"
    assert PlannedTask(id="k", command="c", retries=3).retries == 3
    with pytest.raises(TypeError):
        PlannedTask("t")  # type: ignore[call-arg]

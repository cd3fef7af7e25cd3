"""Planning stages and merges, sweeps, typed params, params in the pool and inputs, files, output
rules, and how a long dependency list is expressed for Batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchspec.plan import Plan, PlanError, Planner, build_plan
from batchspec.plan.deps import MAX_TASK_IDS_CHARS, express, stored_length
from batchspec.spec import load_spec

from .conftest import SpecMaker, patterns, touch

UP = {"command": "tr a-z A-Z < <<input>> > <<stem>>.up", "outputs": ["<<stem>>.up"]}


@pytest.fixture
def three(tmp_path: Path) -> Path:
    touch(tmp_path, "inputs/a.mp4", "inputs/b.mp4", "inputs/c.mp4")
    return tmp_path


# --- merge and stages ---------------------------------------------------------------------------


def test_a_merge_is_planned_with_its_inputs_and_dependencies(make_spec: SpecMaker, three: Path) -> None:
    plan = build_plan(make_spec({"task": UP, "merge": {"command": "cat <% for f in inputs %><<f>> <% endfor %>",
                                                       "outputs": ["all.up"]}}))
    assert [s.name for s in plan.stages] == ["task", "merge"] and plan.complete
    first, merge = plan.stages
    assert first.consumed and first.publish and not merge.consumed
    (task,) = merge.tasks or ()
    assert task.id == "merge" and task.command == "cat a.up b.up c.up "
    assert task.depends_on == tuple(t.id for t in first.tasks or ())
    assert [(f.kind, f.source, f.stage, f.task) for f in task.inputs] == [
        ("output", f"{t.id[0]}.up", "task", t.id) for t in first.tasks or ()]


def test_a_stage_over_wildcard_outputs_waits_for_the_listing(make_spec: SpecMaker, three: Path) -> None:
    spec = make_spec({"task": None, "stages": [
        {"name": "split", "publish": False,
         "task": {"command": "split <<input>>", "outputs": ["<<stem>>/part-*"]}},
        {"name": "enc", "match": "*/part-0*", "task": {"command": "enc <<input>> <<source.stem>>",
                                                       "outputs": ["<<dir>>/<<stem>>.enc"]}},
        {"name": "join", "group": "input", "with_source": True,
         "task": {"command": "join <% for f in inputs %><<f>> <% endfor %><<source.input>>",
                  "outputs": ["<<source.stem>>.joined"]}},
    ]})
    planner = Planner(spec)
    plan = planner.plan
    assert [s.known for s in plan.stages] == [True, False, False]
    assert len(plan.tasks) == 3 and not plan.complete
    listing = ["a/part-00", "a/part-01", "b/part-00", "c/part-12", "stale/part-00", "a/notes.txt"]
    plan = planner.expand(plan, {"split": listing})
    assert plan.complete  # join is known as soon as enc's named outputs are
    enc, join = plan.stage("enc").tasks or (), plan.stage("join").tasks or ()
    assert [t.command for t in enc] == ["enc a/part-00 a", "enc a/part-01 a", "enc b/part-00 b"]
    assert all(t.id.startswith("enc-part-0") for t in enc)
    assert [t.command for t in join] == ["join a/part-00.enc a/part-01.enc a.mp4", "join b/part-00.enc b.mp4"]
    assert join[0].depends_on == (enc[0].id, enc[1].id)
    assert join[0].inputs[0].kind == "local" and join[0].inputs[0].path == "a.mp4"  # with_source
    assert plan.stage("join").tasks == Planner(spec).expand(Planner(spec).plan, {"split": listing}).stage(
        "join").tasks  # the same listing gives the same tasks


def test_stage_task_ids_are_unique_and_stable(make_spec: SpecMaker, three: Path) -> None:
    spec = make_spec({"task": None, "stages": [
        {"name": "one", "task": {"command": "x", "outputs": ["<<stem>>/f-*"]}},
        {"name": "two", "task": {"command": "y", "outputs": ["<<input>>.two"]}},
    ]})
    planner = Planner(spec)
    plan = planner.expand(planner.plan, {"one": ["a/f-1", "b/f-1", "a/f-2"]})
    ids = [t.id for t in plan.stage("two").tasks or ()]
    assert len(set(ids)) == 3 and all(i.startswith("two-f-1-") or i.startswith("two-f-2-") for i in ids)
    again = Planner(spec)
    assert [t.id for t in again.expand(again.plan, {"one": ["a/f-1", "b/f-1", "a/f-2"]}).tasks] == [
        t.id for t in plan.tasks]


def test_two_stages_writing_the_same_result_are_refused(make_spec: SpecMaker, three: Path) -> None:
    spec = make_spec({"task": {"command": "x", "outputs": ["<<stem>>.x"]},
                      "merge": {"command": "y", "outputs": ["a.x"]}})
    with pytest.raises(PlanError, match=r"would both produce 'a\.x'"):
        build_plan(spec)


def test_a_multi_stage_plan_round_trips_through_json(make_spec: SpecMaker, three: Path) -> None:
    spec = make_spec({"task": None, "stages": [
        {"name": "s1", "task": {"command": "x <<input>>", "outputs": ["<<stem>>-*.y"], "retries": 2}},
        {"name": "s2", "group": "all", "task": {"command": "z", "outputs": ["all.z"], "timeout": "5m"}},
    ]})
    plan = build_plan(spec)
    data = json.loads(plan.to_json())
    assert [(s["name"], s["from"], s["group"], s["task_count"], s["retries"]) for s in data["stages"]] == [
        ("s1", None, "file", 3, 2), ("s2", "s1", "all", None, 0)]
    assert Plan.from_json(plan.to_json()) == plan
    planner = Planner(spec)
    full = planner.expand(planner.plan, {"s1": ["a-1.y", "b-1.y"]})
    assert Plan.from_json(full.to_json()) == full
    (merged,) = full.stage("s2").tasks or ()
    assert merged.timeout_seconds == 300


# --- sweeps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("axis", "overrides", "values"), [
    ({"start": 1, "stop": 4}, [], [1, 2, 3, 4]),
    ({"start": 1, "stop": 10, "step": 4, "pad": 3}, [], ["001", "005", "009"]),
    ({"start": 3, "stop": 1, "step": -1}, [], [3, 2, 1]),
    ({"start": "<<params.first>>", "stop": "<<params.last>>"}, ["last=3"], [1, 2, 3]),
    ({"range": "<<params.frames>>", "pad": 2}, ["frames=8-12:2"], ["08", "10", "12"]),
    ({"range": "5-5"}, [], [5]),
])
def test_matrix_ranges(make_spec: SpecMaker, tmp_path: Path, axis: dict[str, object], overrides: list[str],
                       values: list[object]) -> None:
    touch(tmp_path, "inputs/a.mp4")
    spec = make_spec({"params": {"first": 1, "last": 10, "frames": "1-10"}, "matrix": {"f": axis},
                      "task": {"command": "render <<matrix.f>>", "outputs": ["f-<<matrix.f>>.png"]}})
    plan = build_plan(spec, overrides)
    assert [t.command for t in plan.tasks] == [f"render {v}" for v in values]


@pytest.mark.parametrize(("axis", "overrides", "message"), [
    ({"start": 5, "stop": 1}, [], "the range from 5 to 1 by 1 is empty"),
    ({"start": 1, "stop": "<<params.last>>"}, ["last=ten"], "renders to 'ten', not an integer"),
    ({"range": "<<params.frames>>"}, ["frames=1..5"], "'1..5' is not a range"),
    # (a range the spec alone sizes is refused by validation; one over params, when planning)
    ({"start": 1, "stop": "<<params.last>>"}, ["last=10000000"], "at most 100,000 are allowed"),
])
def test_matrix_range_errors(make_spec: SpecMaker, tmp_path: Path, axis: dict[str, object], overrides: list[str],
                             message: str) -> None:
    touch(tmp_path, "inputs/a.mp4")
    spec = make_spec({"params": {"last": 10, "frames": "1-10"}, "matrix": {"f": axis},
                      "task": {"command": "render <<matrix.f>>", "outputs": ["f-<<matrix.f>>.png"]}})
    with pytest.raises(PlanError, match=message) as caught:
        build_plan(spec, overrides)
    assert "$.matrix.f" in caught.value.message


def test_a_sweep_without_inputs(make_spec: SpecMaker) -> None:
    spec = make_spec({"inputs": None, "params": {"frames": "1-3"}, "matrix": {"frame": {"range": "<<params.frames>>",
                                                                                       "pad": 4}},
                      "task": {"command": "render --frame <<matrix.frame>> <<index>>/<<count>>",
                               "outputs": ["frame-<<matrix.frame>>.png"]},
                      "merge": {"command": "ffmpeg -i frame-%04d.png out.mp4", "outputs": ["out.mp4"]}})
    plan = build_plan(spec, ["frames=2-4"])
    first = plan.stages[0].tasks or ()
    assert [t.command for t in first] == ["render --frame 0002 0/3", "render --frame 0003 1/3",
                                          "render --frame 0004 2/3"]
    assert [t.id.rsplit("-", 1)[0] for t in first] == ["0002", "0003", "0004"] and not first[0].inputs
    (merge,) = plan.stage("merge").tasks or ()
    assert [f.source for f in merge.inputs] == ["frame-0002.png", "frame-0003.png", "frame-0004.png"]
    single = build_plan(make_spec({"inputs": None, "task": {"command": "echo hello", "outputs": []}}))
    assert [t.command for t in single.tasks] == ["echo hello"]


# --- params -----------------------------------------------------------------------------------

TYPED = {
    "bitrate": {"type": "string", "default": "192k", "enum": ["128k", "192k"]},
    "crf": {"type": "integer", "default": 23, "minimum": 0, "maximum": 51},
    "gain": {"type": "number", "default": 1.5},
    "mono": {"type": "boolean", "default": False},
    "label": {"type": "string", "description": "required"},
    "free": 10,
}


@pytest.mark.parametrize(("overrides", "expected"), [
    (["label=x"], {"bitrate": "192k", "crf": 23, "gain": 1.5, "mono": False, "label": "x", "free": 10}),
    (["label=123", "crf=30", "gain=2", "mono=true", "free=abc"],
     {"bitrate": "192k", "crf": 30, "gain": 2.0, "mono": True, "label": "123", "free": "abc"}),
    (["label=2024-01-01", "bitrate=128k"],
     {"bitrate": "128k", "crf": 23, "gain": 1.5, "mono": False, "label": "2024-01-01", "free": 10}),
])
def test_typed_params_are_checked_and_converted(make_spec: SpecMaker, three: Path, overrides: list[str],
                                                expected: dict[str, object]) -> None:
    plan = build_plan(make_spec({"params": TYPED}), overrides)
    assert plan.params == expected


@pytest.mark.parametrize(("overrides", "message"), [
    ([], r"required parameter not given: label"),
    (["label=x", "crf=fast"], r"--set crf: 'fast' is not an integer"),
    (["label=x", "crf=99"], r"--set crf: 99 is more than the maximum of 51"),
    (["label=x", "bitrate=320k"], r"--set bitrate: '320k' is not one of '128k', '192k' \(one of: 128k, 192k\)"),
    (["label=x", "mono=maybe"], r"--set mono: 'maybe' is not a boolean"),
    (["label=x", "gain=loud"], r"--set gain: 'loud' is not a number"),
])
def test_typed_param_errors(make_spec: SpecMaker, three: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan(make_spec({"params": TYPED}), overrides)


def test_a_required_param_error_says_how_to_give_it(make_spec: SpecMaker, three: Path) -> None:
    with pytest.raises(PlanError) as caught:
        build_plan(make_spec({"params": TYPED}))
    assert "--set label=VALUE" in str(caught.value) and "batchspec params" in str(caught.value)


def test_params_drive_the_pool_inputs_and_outputs(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "media/2024/a.mp4", "media/2024/b.mp4", "media/2023/c.mp4")
    spec = make_spec({
        "params": {"size": "standard_d2s_v3", "nodes": 3, "year": "2024", "out": "mp3s"},
        "pool": {"vm_size": "<<params.size>>", "nodes": {"dedicated": "<<params.nodes>>", "spot": 0}},
        "inputs": {"path": "media/<<params.year>>/*.mp4"},
        "outputs": {"container": "<<name>>-<<params.out>>", "download": "out/<<params.year>>"},
    })
    plan = build_plan(spec, ["year=2023", "nodes=1"])
    assert (plan.pool.vm_size, plan.pool.dedicated, plan.pool.spot) == ("standard_d2s_v3", 1, 0)
    assert [t.inputs[0].source for t in plan.tasks] == ["media/2023/c.mp4"]
    assert (plan.outputs.container, plan.outputs.download) == ("demo-mp3s", "out/2023")
    with pytest.raises(PlanError, match=r"\$.pool.nodes.dedicated renders to 'many', not a node count"):
        build_plan(spec, ["nodes=many"])
    for value in ("²", "1e3", "2147483648", "9" * 5000):  # not ASCII digits, or past Batch's 32-bit counts
        with pytest.raises(PlanError, match=r"\$.pool.nodes.dedicated renders to '.{1,40}', not a node count "
                                            r"\(0 to 2,147,483,647\)"):
            build_plan(spec, [f"nodes={value}"])
    with pytest.raises(PlanError, match="the pool has no nodes with these params"):
        build_plan(spec, ["nodes=0"])
    with pytest.raises(PlanError, match=r"\$.outputs.container renders to an invalid name"):
        build_plan(spec, ["out=Bad_Name"])


# --- files and output rules -------------------------------------------------------------------


def test_files_are_planned_for_the_job_the_start_task_and_each_task(make_spec: SpecMaker, three: Path) -> None:
    touch(three, "assets/logo.png", "subs/a.srt", "subs/b.srt", "subs/c.srt", "setup.sh")
    spec = make_spec({
        "params": {"lut": "film"},
        "files": [{"path": "assets/logo.png"}, {"url": "https://example.com/f/DejaVu%20Sans.ttf"},
                  {"container": "shared", "prefix": "luts/<<params.lut>>/", "to": "luts/"}],
        "pool": {"start_task": {"command": "sh setup.sh", "files": [{"path": "setup.sh", "mode": "0755"}]}},
        "task": {"command": "x", "outputs": ["<<stem>>.x"], "files": [{"path": "subs/<<stem>>.srt", "to": "in.srt"}]},
    })
    plan = build_plan(spec)
    assert [(f.kind, f.source, f.path, f.container) for f in plan.files] == [
        ("local", "assets/logo.png", "logo.png", None),
        ("url", "https://example.com/f/DejaVu%20Sans.ttf", "DejaVu Sans.ttf", None),
        ("blobs", "luts/film/", "luts", "shared")]
    assert plan.pool.start_task is not None
    assert [(f.source, f.mode) for f in plan.pool.start_task.files] == [("setup.sh", "0755")]
    assert [(f.source, f.path) for f in plan.tasks[1].inputs] == [("inputs/b.mp4", "b.mp4"), ("subs/b.srt", "in.srt")]
    assert plan.local_inputs() == ["assets/logo.png", "inputs/a.mp4", "inputs/b.mp4", "inputs/c.mp4", "setup.sh",
                                   "subs/a.srt", "subs/b.srt", "subs/c.srt"]


def test_a_missing_file_is_a_planning_error(make_spec: SpecMaker, three: Path) -> None:
    spec = make_spec({"task": {"command": "x", "outputs": ["<<stem>>.x"], "files": [{"path": "subs/<<stem>>.srt"}]}})
    with pytest.raises(PlanError, match=r"\$.task.files\[0\].path for task 'a-[0-9a-f]+': no such file 'subs/a.srt'"):
        build_plan(spec)


def test_output_rules(make_spec: SpecMaker, three: Path) -> None:
    spec = make_spec({"task": {"command": "x", "outputs": [
        "<<stem>>.x", {"path": "log/<<stem>>-*.txt", "when": "always", "to": "logs/<<stem>>/"},
        {"path": "err.txt", "when": "failure", "to": "failed/<<stem>>.txt"}]}})
    task = build_plan(spec).tasks[0]
    assert patterns(task) == ("a.x", "log/a-*.txt", "err.txt")
    x, logs, err = task.outputs
    assert (x.destination, logs.destination, err.destination) == ("a.x", None, "failed/a.txt")
    assert logs.target("log/a-1.txt") == "logs/a/a-1.txt" and logs.destination_pattern == "logs/a/a-*.txt"
    assert (x.upload_path, logs.upload_path, err.upload_path) == ("a.x", "logs/a", "failed/a.txt")
    assert [o.applies(True) for o in task.outputs] == [True, True, False]


@pytest.mark.parametrize(("output", "message"), [
    ({"path": "<<stem>>-*.png", "to": "<<stem>>.png"}, "has wildcards, so 'to' must be a directory"),
    ({"path": "<<stem>>.x", "to": "../<<stem>>.x"}, "must not contain '..'"),
    ({"path": "<<stem>>.x", "to": "/abs/<<stem>>.x"}, "must be a relative path"),
])
def test_output_rule_errors(make_spec: SpecMaker, three: Path, output: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan(make_spec({"task": {"command": "x", "outputs": [output]}}))


def test_a_rename_of_a_name_with_glob_characters_is_refused(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/clip [1].mp4")
    spec = make_spec({"task": {"command": "x", "outputs": [{"path": "<<stem>>.x", "to": "renamed-<<stem>>.x"}]}})
    with pytest.raises(PlanError, match=r"'clip \[1\].x' has glob characters"):
        build_plan(spec)


# --- dependencies as Batch expresses them -----------------------------------------------------


def test_dependencies_by_ids_ranges_and_gates() -> None:
    ids = [f"clip-{i:05}-abcdef12" for i in range(10_000)]
    few = express("merge", ids[:10])
    assert (few.form, few.task_ids, few.gates) == ("taskIds", tuple(ids[:10]), ())
    numbers = express("merge", [str(i) for i in [*range(0, 40_000), *range(40_001, 40_010)]])
    assert numbers.form == "taskIdRanges" and numbers.ranges == ((0, 39_999), (40_001, 40_009))
    gated = express("merge", ids)
    assert gated.form == "gates" and gated.count == 10_000 and gated.chars == 190_000
    # 19-character ids and a separator each: 3,200 to a gate.
    assert [len(g.task_ids) for g in gated.gates] == [3200, 3200, 3200, 400]
    assert all(stored_length(g.task_ids) <= MAX_TASK_IDS_CHARS for g in gated.gates)
    assert gated.task_ids == tuple(g.id for g in gated.gates)
    assert sorted(i for g in gated.gates for i in g.task_ids) == sorted(ids)
    # When even the gates' ids are too long, they are gated again.
    deep = express("m", ids[:9], limit=39)  # 5 gates of 2 ids; their 5 ids (44 characters) through 2 more
    assert [len(g.task_ids) for g in deep.gates] == [2, 2, 2, 2, 1, 4, 1]
    assert deep.task_ids == ("m-gate-5", "m-gate-6")
    assert "4 gate task(s)" in gated.describe() and "190,000" in gated.describe()


def test_plan_says_how_the_merge_waits(make_spec: SpecMaker, three: Path) -> None:
    from batchspec.report import dependency_text

    plan = build_plan(make_spec({"task": UP, "merge": {"command": "y", "outputs": ["all"]}}))
    assert dependency_text(plan.stage("merge").tasks or ()) == "dependsOn.taskIds (3 id(s), 30 of 64,000 characters)"
    assert dependency_text(plan.stages[0].tasks or ()) is None


def test_a_loaded_example_spec_plans_every_stage(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    plan = build_plan(load_spec(repo / "specs" / "chunked-encode.yaml"))
    assert [(s.name, s.known, s.publish, s.consumed) for s in plan.stages] == [
        ("split", True, False, True), ("encode", False, False, True), ("join", False, True, False)]

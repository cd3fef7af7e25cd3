"""Inputs: glob patterns with ** and exclude, explicit lists, containers; sorted and deterministic."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import pytest

from batchspec.errors import EXIT_USAGE
from batchspec.globs import compile_glob, escape, glob_files, normalize, split_fixed
from batchspec.plan import EmptyInputError, PlanError, build_plan

from .conftest import SpecMaker, touch


def inputs_of(make_spec: SpecMaker, inputs: dict[str, object], **changes: object) -> list[tuple[str, str]]:
    """(source, working-directory path) of every task's input."""
    plan = build_plan(make_spec({"inputs": {"path": None, **inputs}, **changes}))
    return [(t.inputs[0].source, t.inputs[0].path) for t in plan.tasks]


def test_pattern_relative_to_the_spec_sorted(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/b.mp4", "inputs/a.mp4", "inputs/c.MP4", "inputs/d.mov", "inputs/sub/e.mp4",
          "inputs/.hidden.mp4", "other/f.mp4")
    assert inputs_of(make_spec, {"path": "inputs/*.mp4"}) == [("inputs/a.mp4", "a.mp4"), ("inputs/b.mp4", "b.mp4")]


def test_recursive_pattern_keeps_the_tree_below_the_fixed_part(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "media/2024/jan/a.mp4", "media/2024/b.mp4", "media/c.mp4", "media/.cache/d.mp4",
          "media/2024/x.txt")
    assert inputs_of(make_spec, {"path": "media/**/*.mp4"}) == [
        ("media/2024/b.mp4", "2024/b.mp4"),
        ("media/2024/jan/a.mp4", "2024/jan/a.mp4"),
        ("media/c.mp4", "c.mp4"),
    ]


def test_several_patterns_and_exclude(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "in/a.mp4", "in/draft-b.mp4", "in/c.mov", "in/sub/d.mov")
    got = inputs_of(make_spec, {"path": ["in/*.mp4", "in/**/*.mov", "in/a.mp4"], "exclude": ["in/draft-*", "in/sub"]})
    assert got == [("in/a.mp4", "a.mp4"), ("in/c.mov", "c.mov"), ("in/sub/d.mov", "sub/d.mov")]
    got = inputs_of(make_spec, {"path": "in/**", "exclude": "in/**/*.mov"})
    assert got == [("in/a.mp4", "a.mp4"), ("in/draft-b.mp4", "draft-b.mp4")]


def test_literal_path_and_parent_directory(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "clips/one.mp4")
    (tmp_path / "specs").mkdir()
    spec = make_spec({"inputs": {"path": ["../clips/one.mp4", "../clips/*.mp4"]}}, name="specs/s.yaml")
    plan = build_plan(spec)
    assert [(t.inputs[0].source, t.inputs[0].path) for t in plan.tasks] == [("../clips/one.mp4", "one.mp4")]
    assert plan.resolve(plan.tasks[0].inputs[0].source).resolve() == (tmp_path / "clips/one.mp4").resolve()


def test_order_does_not_depend_on_creation_order(make_spec: SpecMaker, tmp_path: Path) -> None:
    names = [f"inputs/{n}.mp4" for n in ("zeta", "Alpha", "beta", "10", "9", "\u00e9t\u00e9")]
    touch(tmp_path, *names)
    first = inputs_of(make_spec, {"path": "inputs/*.mp4"})
    for name in names:
        (tmp_path / name).unlink()
    touch(tmp_path, *reversed(names))
    assert inputs_of(make_spec, {"path": "inputs/*.mp4"}) == first == sorted(first)


def test_empty_input_set_names_the_patterns(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/a.txt")
    spec = make_spec({"inputs": {"path": ["inputs/*.mp4", "more/*.mov"]}})
    with pytest.raises(EmptyInputError) as caught:
        build_plan(spec)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.message == (
        f"{spec.where('$.inputs')}: no inputs: patterns 'inputs/*.mp4', 'more/*.mov' (relative to {tmp_path}) "
        "matched nothing"
    )
    assert "allow_empty" in (caught.value.hint or "")


def test_allow_empty(make_spec: SpecMaker) -> None:
    plan = build_plan(make_spec({"inputs": {"allow_empty": True}}))
    assert plan.tasks == ()
    assert plan.warnings == ("input pattern 'inputs/*.mp4' matched no files",)


def test_a_pattern_that_matches_nothing_is_a_warning(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "inputs/a.mp4")
    plan = build_plan(make_spec({"inputs": {"path": ["inputs/*.mp4", "inputs/*.mkv"]}}))
    assert len(plan.tasks) == 1
    assert plan.warnings == ("input pattern 'inputs/*.mkv' matched no files",)


def test_explicit_list_of_files_and_variables(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4", "dir/b.mp4")
    spec = make_spec({
        "inputs": {"path": None, "list": ["dir/b.mp4", {"path": "a.mp4", "start": 10}, {"label": "no file"}]},
        "task": {"command": "echo <<item.path if item is mapping else item>> <<index>>", "outputs": []},
    })
    with pytest.raises(PlanError, match="has no attribute 'path'"):
        build_plan(spec)  # the third item has no path
    spec = make_spec({
        "inputs": {"path": None, "list": ["dir/b.mp4", {"path": "a.mp4", "start": 10}, {"label": "no file"}]},
        "task": {"command": "echo <<item.label | default(item.path) if item is mapping else item>> <<index>>",
                 "outputs": []},
    })
    plan = build_plan(spec)
    assert [(f.source, f.path) for t in plan.tasks for f in t.inputs] == [("dir/b.mp4", "b.mp4"), ("a.mp4", "a.mp4")]
    assert plan.tasks[2].inputs == ()
    assert [shlex.split(t.command) for t in plan.tasks] == [
        ["echo", "dir/b.mp4", "0"], ["echo", "a.mp4", "1"], ["echo", "no file", "2"]]
    # A mapping is not a value: rendering it whole is an error, not its Python repr.
    spec = make_spec({"inputs": {"path": None, "list": [{"path": "a.mp4"}]},
                      "task": {"command": "echo <<item>>", "outputs": []}})
    with pytest.raises(PlanError, match="this one is a mapping"):
        build_plan(spec)


def test_list_item_fields_are_template_variables(make_spec: SpecMaker, tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    spec = make_spec({
        "inputs": {"path": None, "list": [{"path": "a.mp4", "start": 10, "label": "it's"}]},
        "task": {"command": "cut -ss <<item.start>> -i <<input>> <<item.label>>", "outputs": []},
    })
    (task,) = build_plan(spec).tasks
    assert task.command == "cut -ss 10 -i a.mp4 'it'\"'\"'s'"


def test_list_with_missing_files(make_spec: SpecMaker, tmp_path: Path) -> None:
    spec = make_spec({"inputs": {"path": None, "list": [f"m{i}.mp4" for i in range(7)]}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert caught.value.message == (
        f"{spec.where('$.inputs')}: inputs.list names files that do not exist (relative to {tmp_path}): "
        "'m0.mp4', 'm1.mp4', 'm2.mp4', 'm3.mp4', 'm4.mp4' and 2 more"
    )
    assert caught.value.exit_code == EXIT_USAGE


def test_container_inputs_need_a_lister(make_spec: SpecMaker) -> None:
    spec = make_spec({"inputs": {"path": None, "container": "raw-videos", "prefix": "2024/"}})
    with pytest.raises(PlanError) as caught:
        build_plan(spec)
    assert caught.value.message == (
        f"{spec.where('$.inputs')}: inputs.container 'raw-videos' lists blobs in Azure Storage, which this backend "
        "cannot read"
    )
    assert caught.value.exit_code == EXIT_USAGE


def test_container_inputs_with_a_lister(make_spec: SpecMaker) -> None:
    spec = make_spec({"inputs": {"path": None, "container": "raw-videos", "prefix": "2024/jan"}})
    calls: list[tuple[str, str]] = []

    def lister(container: str, prefix: str) -> list[str]:
        calls.append((container, prefix))
        return ["2024/jan/b.mp4", "2024/jan/", "2024/jan/a.mp4", "2024/january/c.mp4"]

    plan = build_plan(spec, (), lister)
    assert calls == [("raw-videos", "2024/jan")]
    assert [(f.container, f.source, f.path) for t in plan.tasks for f in t.inputs] == [
        ("raw-videos", "2024/jan/a.mp4", "jan/a.mp4"),
        ("raw-videos", "2024/jan/b.mp4", "jan/b.mp4"),
        ("raw-videos", "2024/january/c.mp4", "january/c.mp4"),
    ]
    with pytest.raises(EmptyInputError, match="container 'raw-videos' with prefix '2024/jan' matched nothing"):
        build_plan(spec, (), lambda c, p: [])


def test_container_blob_names_must_stay_in_the_working_directory(make_spec: SpecMaker) -> None:
    spec = make_spec({"inputs": {"path": None, "container": "raw"}})
    plan = build_plan(spec, (), lambda c, p: ["ok.mp4", "a/../../etc/passwd", "/abs.mp4", "x/..", "fine..mp4"])
    assert [t.inputs[0].path for t in plan.tasks] == ["fine..mp4", "ok.mp4"]  # the rest go on (issue 10, item 6)
    assert plan.warnings == (
        "inputs.container 'raw': left out 3 blob(s) whose names cannot be staged in a task's working directory "
        "(a '..' segment or a leading '/'): '/abs.mp4', 'a/../../etc/passwd', 'x/..'",
    )


# --- the glob module --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("*.mp4", ["a.mp4", ".mp4"], ["a/b.mp4", "a.mp4x"]),
        ("**/*.mp4", ["a.mp4", "a/b.mp4", "a/b/c.mp4"], ["a.mov"]),
        ("a/**", ["a/b", "a/b/c"], ["b/a"]),
        ("?.mp4", ["a.mp4"], ["ab.mp4", "/.mp4"]),
        ("[ab].mp4", ["a.mp4", "b.mp4"], ["c.mp4"]),
        ("[!ab].mp4", ["c.mp4"], ["a.mp4"]),
        ("[a-c]x", ["bx"], ["dx"]),
        ("[[]1]", ["[1]"], ["1"]),
        ("a[*]", ["a*"], ["ab"]),
        ("a.b(c)+", ["a.b(c)+"], ["axb(c)+", "a.bc+"]),
    ],
)
def test_compile_glob(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_glob(pattern)
    assert all(regex.match(m) for m in matches), pattern
    assert not any(regex.match(m) for m in misses), pattern


@pytest.mark.parametrize("name", ["Clip [1080p].mp3", "a*b?c.mp3", "[[x]]", "plain.mp3", "]["])
def test_escape_matches_only_itself(name: str) -> None:
    regex = compile_glob(escape(name))
    assert regex.match(name)
    assert not regex.match(name + "x")


def test_literal_brackets_compile_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "[[]" once made re warn about a possible nested set
        regex = compile_glob("warn-check-[[]x]-[&&]-[~~]-[||]")
    assert regex.match("warn-check-[x]-&-~-|")


def test_split_fixed_and_normalize() -> None:
    assert split_fixed("inputs/a/*.mp4") == ("inputs/a", "*.mp4")
    assert split_fixed("**/*.mp4") == ("", "**/*.mp4")
    assert split_fixed("inputs/a.mp4") == ("inputs/a.mp4", "")
    assert normalize("./inputs//a/../*.mp4") == "inputs/*.mp4"
    assert normalize("inputs\\*.mp4") == "inputs\\*.mp4"  # a backslash is part of a name, as on Linux
    assert normalize(".") == ""


def test_glob_files_hidden_only_when_named(tmp_path: Path) -> None:
    touch(tmp_path, "a.txt", ".b.txt", ".d/c.txt", "e/f.txt")
    assert sorted(glob_files(tmp_path, "**/*.txt")) == ["a.txt", "e/f.txt"]
    assert sorted(glob_files(tmp_path, ".*.txt")) == [".b.txt"]
    assert sorted(glob_files(tmp_path, ".d/*.txt")) == [".d/c.txt"]
    assert list(glob_files(tmp_path, "missing/*.txt")) == []


@pytest.mark.parametrize("follow", [True, False])
@pytest.mark.parametrize("pattern", ["*.mp4", ".*.mp4", "*", "?.mp4", "d/*.mp4", "d/[ab]*", "nothing/*"])
def test_one_directory_patterns_find_what_the_walk_finds(tmp_path: Path, pattern: str, follow: bool) -> None:
    """``inputs/*.mp4`` reads one directory without the general walk: same files, links, dot files."""
    from batchspec import globs

    for where in (tmp_path, tmp_path / "d"):
        where.mkdir(exist_ok=True)
        for name in ("a.mp4", ".hidden.mp4", "b.txt", "c d.mp4"):
            (where / name).write_text("x")
        (where / "dir.mp4").mkdir()
        (where / "link.mp4").symlink_to(where / "a.mp4")
        (where / "dangling.mp4").symlink_to(where / "missing")
        (where / "dirlink.mp4").symlink_to(where / "dir.mp4")
    prefix, rest = globs.split_fixed(pattern)
    regex = globs.compile_glob(rest)
    walked = [f"{prefix}/{rel}" if prefix else rel
              for rel in globs._walk(str(tmp_path / prefix), "", 1, False, rest.startswith("."), follow)
              if regex.match(rel)]
    assert list(glob_files(tmp_path, pattern, follow_links=follow)) == walked


def test_two_inputs_at_one_working_directory_path_are_refused(make_spec: SpecMaker, tmp_path: Path) -> None:
    # A byte that is not UTF-8 is written %XX in the working directory: 'a\xff.mp4' lands where 'a%FF.mp4' does.
    bad = b"a\xff.mp4".decode("utf-8", "surrogateescape")
    touch(tmp_path, "in/a%FF.mp4", f"in/{bad}", "in/b.mp4")
    with pytest.raises(PlanError) as caught:
        inputs_of(make_spec, {"path": "in/*.mp4"})
    assert "would both be 'a%FF.mp4' in a task's working directory" in caught.value.message
    assert "'in/a%FF.mp4'" in caught.value.message


def test_more_input_files_than_tasks_allowed_are_refused(make_spec: SpecMaker, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import batchspec.plan.inputs as inputs_module

    monkeypatch.setattr(inputs_module, "MAX_TASKS", 3)
    touch(tmp_path, *(f"in/{i}.mp4" for i in range(3)))
    # Files a second pattern matches again do not count twice.
    assert len(inputs_of(make_spec, {"path": ["in/*.mp4", "in/0.mp4", "in/*"]})) == 3
    touch(tmp_path, "in/3.mp4")
    with pytest.raises(PlanError) as caught:
        inputs_of(make_spec, {"path": ["in/0.mp4", "in/*.mp4"]})
    assert "input patterns match more than 3 files" in caught.value.message

"""Issue 10: hostile or huge specs get a clear error, fast, from `validate` and `plan`.

1. Unbounded templates: sizes, widths, loops and numbers are bounded, in validate (constant
   parts) and in plan (every render), with a located error naming the limit.
2. Tracebacks from templates (a huge power, a huge list) are clean errors.
3. Input globs: a symbolic link loop is walked once; a pattern of many ``*`` matches in linear time.
4. Large matrices: task ids are unique at any size the plan accepts and readable for non-ASCII
   names; the task limit is checked from counts, before expanding.
9. Validate and plan agree: what is knowable without the input files is a validation error,
   ``validate --inputs`` plans against the files, and a huge spec file is refused early.

The worst cases run as processes of their own under a 1 GiB address-space limit: a blow-up
there is a MemoryError (a crash), not a slow machine.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.globs import compile_glob, glob_files
from batchspec.limits import MAX_TASKS
from batchspec.plan import build_plan
from batchspec.plan import ids as ids_module
from batchspec.sandbox import MAX_STEPS, MAX_TEXT
from batchspec.spec import load_spec
from tests.reliability.attacks import BASE, load, spec_with

HERE = Path(__file__).parent
MEMORY = 1 << 30  # bytes of address space the hostile runs get
LOCATED = re.compile(r"spec\.yaml(:[0-9]+)*: \$")  # file[:line[:column]]: $.field


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def bounded(*argv: str, cwd: Path, seconds: float = 60) -> tuple[int, str, float]:
    """Run ``python -m <argv>`` limited to 1 GiB: (exit code, stdout + stderr, seconds)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *argv], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=seconds,
                          preexec_fn=_limit_memory, env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def write(folder: Path, spec: dict[str, Any], inputs: tuple[str, ...] = ("clip.mp4",)) -> Path:
    for name in inputs:
        path = folder / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_attack_corpus_is_stopped_where_it_was_with_a_located_message_fast_and_in_bounded_memory() -> None:
    corpus = HERE / "attacks.yaml"
    code, out, _ = bounded("tests.reliability.attacks", str(corpus), cwd=HERE.parents[1], seconds=240)
    assert code == 0, out[-3000:]
    results = json.loads(out)
    attacks = load(corpus)
    assert len(results) == len(attacks) >= 140
    for attack, result in zip(attacks, results, strict=True):
        assert result["stopped"] != "crash", (attack["name"], result["message"])
        assert result["stopped"] == attack["stopped"], (attack["name"], result)
        if result["stopped"] != "none":
            assert LOCATED.search(result["message"]), result
            assert "Traceback" not in result["message"]
        assert result["seconds"] < 2.5, result


@pytest.mark.parametrize(("template", "limit"), [
    ("<< 'a' * 10**9 >>", f"{MAX_TEXT:,}"),  # folded at compile time: once 10 s and 1 GB
    ("<< '%999999999d' % 1 >>", f"{MAX_TEXT:,}"),
    ("<< 'x'|center(10**9) >>", f"{MAX_TEXT:,}"),
    ("<< 'x'|indent(10**9) >>", f"{MAX_TEXT:,}"),
    ("<< 2**100000 >>", "4,096 bits"),  # once a ValueError traceback from Jinja's compiler
])
def test_validate_refuses_templates_past_a_limit_with_line_and_limit(tmp_path: Path, template: str,
                                                                     limit: str) -> None:
    write(tmp_path, spec_with("task.command", f"echo {template}"))
    code, out, seconds = bounded("batchspec", "validate", "spec.yaml", cwd=tmp_path)
    assert code == 1, out
    assert re.search(r"^spec\.yaml:1:[0-9]+: \$\.task\.command: .*limit of " + re.escape(limit), out, re.M), out
    assert "Traceback" not in out and seconds < 20


@pytest.mark.parametrize(("template", "says"), [
    ("<< lipsum(10**6) >>", f"limit of {MAX_TEXT:,}"),
    ("<% for i in range(100000) %><% for j in range(100000) %>x<% endfor %><% endfor %>", f"{MAX_STEPS:,}"),
    ("<< '{:999999999}'.format(1) >>", f"limit of {MAX_TEXT:,}"),
    ("<< input * 100000000 >>", f"limit of {MAX_TEXT:,}"),
    ("<< [1] * 10**9 >>", f"limit of {MAX_TEXT:,}"),  # once a MemoryError traceback
    ("<< 2**100000 >>", "4,096 bits"),
    ("<% macro f(n) %><% if n %><< f(n-1) >><< f(n-1) >><% endif %><% endmacro %><< f(40) >>", f"{MAX_STEPS:,}"),
])
def test_plan_stops_unbounded_templates_with_a_located_error(tmp_path: Path, template: str, says: str) -> None:
    write(tmp_path, spec_with("task.command", f"echo {template}"))
    code, out, seconds = bounded("batchspec", "plan", "spec.yaml", "--offline", cwd=tmp_path)
    assert code == 2, out
    assert out.startswith("error: ") and re.search(r"spec\.yaml:1(:[0-9]+)?: \$\.task\.command", out), out
    assert says in out and "Traceback" not in out and seconds < 20


def test_a_render_that_works_within_the_limits_is_not_refused(tmp_path: Path) -> None:
    command = ("<% for f in range(2000) %><< '%05d'|format(f) >> <% endfor %>"
               "<< ('-' * 100000)|length >> << '{:>20}'.format(stem) >> << 2**4000 % 7 >>")
    spec = load_spec(write(tmp_path, spec_with("task.command", f"echo {command}")))
    (task,) = build_plan(spec).tasks
    assert "01999" in task.command and "100000" in task.command


def test_a_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    deep = tmp_path / "inputs" / "sub"
    deep.mkdir(parents=True)
    (deep / "clip.mp4").write_bytes(b"x")
    (deep / "up").symlink_to("..")  # a loop: inputs/sub/up/sub/up/...
    (deep / "again").symlink_to("../sub")  # a second one
    (tmp_path / "inputs" / "self").symlink_to(".")
    started = time.monotonic()
    found = list(glob_files(tmp_path, "inputs/**/*.mp4"))
    assert found == ["inputs/sub/clip.mp4"]  # once 41 tasks for one file, and minutes for two loops
    assert time.monotonic() - started < 2
    spec = {**BASE, "inputs": {"path": "inputs/**/*.mp4"}}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    assert len(build_plan(load_spec(tmp_path / "spec.yaml")).tasks) == 1


@pytest.mark.parametrize("pattern", ["*" * 20 + "b", "*a" * 20 + "b", "a*" * 30 + "b", "**/a/**/a/**/a/**/a/**/b",
                                     "*a*a*a*a*a*a*a*a*a*a*/*a*a*a*a*a*a*a*a*b"])
def test_globs_match_in_linear_time(pattern: str) -> None:
    glob = compile_glob(pattern)
    started = time.monotonic()
    for name in ("a" * 255, "/".join(["a" * 50] * 40), "a" * 255 + "/" + "a" * 255):
        assert not glob.match(name + "c")  # each once ran past a minute of regex backtracking
    assert time.monotonic() - started < 1


def test_globs_still_mean_what_they_meant() -> None:
    assert compile_glob("**/a*b").match("a/ab")  # ** then a segment: the segment is not pinned early
    assert compile_glob("*a*b").match("xxaxxb") and not compile_glob("*a*b").match("xxbxxa")
    assert compile_glob("**/x/**/y").match("1/x/2/3/y") and not compile_glob("**/x/**/y").match("1/y/2/x")
    assert compile_glob("a/**").match("a/b/c") and not compile_glob("a/**").match("a")
    assert compile_glob("a\\b.mp3").match("a\\b.mp3") and not compile_glob("a\\b.mp3").match("a/b.mp3")


def test_a_matrix_past_the_task_limit_is_refused_by_validate_and_plan_from_counts(tmp_path: Path) -> None:
    spec = {**BASE, "matrix": {"a": list(range(450)), "b": list(range(450))},
            "task": {"command": "echo <<matrix.a>> <<matrix.b>>", "outputs": ["<<stem>>-<<matrix.a>>-<<matrix.b>>"]}}
    write(tmp_path, spec)
    code, out, seconds = bounded("batchspec", "validate", "spec.yaml", cwd=tmp_path)
    assert code == 1 and f"202,500 combinations, more than the limit of {MAX_TASKS:,} tasks" in out, out
    code, out, seconds = bounded("batchspec", "plan", "spec.yaml", "--offline", cwd=tmp_path)
    assert code == 2 and "202,500 combinations" in out and seconds < 20, out  # once 30 s and 1.9 GB


def test_inputs_times_matrix_past_the_limit_is_refused_before_expanding(tmp_path: Path) -> None:
    spec = {**BASE, "matrix": {"a": list(range(400))},
            "task": {"command": "echo <<matrix.a>>", "outputs": ["<<stem>>-<<matrix.a>>"]}}
    inputs = tuple(f"clip-{i}.mp4" for i in range(251))
    write(tmp_path, spec, inputs)
    code, out, _ = bounded("batchspec", "plan", "spec.yaml", "--offline", cwd=tmp_path)
    assert code == 2, out
    assert f"100,400 tasks (251 inputs x 400 matrix combinations), more than the limit of {MAX_TASKS:,}" in out


def test_task_ids_stay_unique_when_short_hashes_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ids_module.short_hash
    # Short hashes of one hex digit: 2,000 tasks of one stem clash all the time, as 8-digit ones
    # did at 202,500 tasks ("task id ... is used twice").
    monkeypatch.setattr(ids_module, "short_hash", lambda key, chars=8: real(key, chars)[:1] if chars == 8 else
                        real(key, chars)[:2])
    spec = {**BASE, "matrix": {"a": list(range(2000))},
            "task": {"command": "echo <<matrix.a>>", "outputs": ["<<stem>>-<<matrix.a>>"]}}
    plan = build_plan(load_spec(write(tmp_path, spec)))
    ids = [t.id for t in plan.tasks]
    assert len({i.casefold() for i in ids}) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    assert ids == [t.id for t in build_plan(load_spec(tmp_path / "spec.yaml")).tasks]  # the same every time
    assert any(re.fullmatch(r"clip-[0-9a-f]{2}-[0-9]+", i) for i in ids)  # the counter, as a last resort


def test_default_ids_of_non_ascii_names_are_readable(tmp_path: Path) -> None:
    names = ("Größe.mp4", "東京タワー.mp4", "Привет мир.mp4", "مرحبا.mp4", "🎵.mp4", "bad\udcffbyte.mp4")
    for name in names:
        (tmp_path / "inputs").mkdir(exist_ok=True)
        (tmp_path / "inputs" / os.fsencode(name).decode("utf-8", "surrogateescape")).write_bytes(b"x")
    plan = build_plan(load_spec(write(tmp_path, BASE, ())))
    readable = sorted(t.id.rsplit("-", 1)[0] for t in plan.tasks)
    assert readable == sorted(["Grosse", "DongJingtawa", "Privet_mir", "mrhb", "musical_note", "bad_FFbyte"]), readable


def test_a_huge_spec_is_refused_early(tmp_path: Path) -> None:
    spec = {**BASE, "matrix": {"a": list(range(100_000))}}  # 690 KB: once 16.7 s to be refused
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    code, out, seconds = bounded("batchspec", "validate", "spec.yaml", cwd=tmp_path)
    assert code == 1 and "too many YAML nodes (over 100,000)" in out, out
    assert seconds < 15


def test_a_long_command_with_many_values_validates_in_linear_time(tmp_path: Path) -> None:
    command = "echo " + " ".join(f"<<input>>-{i}" for i in range(8_000))  # once quadratic: minutes
    write(tmp_path, spec_with("task.command", command))
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 10


def test_validate_knows_matrix_collisions_without_inputs(tmp_path: Path) -> None:
    spec = {**BASE, "matrix": {"rate": ["96k", "192k"]},
            "task": {"command": "ffmpeg -i <<input>> -b:a <<matrix.rate>> <<stem>>.mp3", "outputs": ["<<stem>>.mp3"]}}
    write(tmp_path, spec, ())  # no input files at all
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 1
    assert ("$.task.outputs[0]: every matrix combination of an input would produce the same '<<stem>>.mp3': "
            "put << matrix.rate >> in it") in result.output


def test_validate_inputs_plans_against_the_files_present(tmp_path: Path) -> None:
    spec = {**BASE, "task": {"command": "cp <<input>> x", "outputs": ["<<stem|lower>>.txt"]}}
    write(tmp_path, spec, ("a.mp4", "A.mp4"))
    assert CliRunner().invoke(cli, ["validate", str(tmp_path / "spec.yaml")]).exit_code == 0
    result = CliRunner().invoke(cli, ["validate", "--inputs", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 1
    assert re.search(r"spec\.yaml:[0-9]+:[0-9]+: \$: planning: tasks '.*' and '.*' would both produce 'a\.txt'",
                     result.output), result.output

"""Issue 9, injection and misleading specs: a value never runs as shell code, in any context.

8. Each << >> is quoted for the shell context it sits in (bare word, "…", '…', a here-document,
   a comment); contexts where no quoting helps (the script of ``bash -c``, ``eval``, an awk
   program, ${…}, `…`, arithmetic on text) are rejected, at validation with the place and the fix.
   A path that begins a word and reads as an option or a protocol (``-x``, ``pipe:0.mp4``) gets
   ``./``; so do inputs.list values.
9. ``$`` in output patterns is escaped (a Batch node expands ``$NAME`` there).
10. Jinja's ``{{ }}``/``{% %}``, ``<< >>`` in a field that is not a template, and a value that is
    not text, a number or a path (``<< input.encode >>``) are errors, not surprises.

Every hostile value is tried in every context under a real bash; the counts are in README's
"Reliability" section (``test_counts_for_the_readme`` checks them).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchspec.plan import PlanError, build_plan, parse_overrides
from batchspec.spec import load_spec, validate_file
from batchspec.templating import needs_dot_slash
from tests.azure.conftest import copy_spec
from tests.plan.test_hostile_names import HOSTILE

from .conftest import AzureWorld, make_inputs, run_local, write_spec

NAMES = [*HOSTILE, "pipe:0.mp4", "concat:a|b.mp4", "file:x.mp4", "-i.mp4", "--.mp4", "$HOME.mp4",
         "${PATH}x.mp4", "a\\\"b'c`d$(e).mp4", "EOF", "x\nEOF\ntouch pwned-heredoc", "%s %n.mp4", "~root.mp4"]
# Values from --set: text, so no ./ guard; the same quoting.
PARAMS = ["10$(touch pwned-p1)", "10`touch pwned-p2`", "a\"; touch pwned-p3; \"", "a'; touch pwned-p4; '",
          "$(touch pwned-p5)", "'x\\n\ntouch pwned-p6'", "\"x\\ntouch pwned-p10\"", "\\\"$(touch pwned-p7)\\\"",
          "${IFS}touch${IFS}pwned-p8", "!$ && touch pwned-p9", "-rf", "'\"'\"'", "\\", "$", "10,movie=x"]

PROBE = "probe() { printf '%s\\0' \"$@\" > argv.bin; cat > stdin.bin; }; "
# (template, how the probe sees the value v): the value as argv, or as standard input.
CONTEXTS: list[tuple[str, str]] = [
    ("probe <<V>>", "{g}"),
    ('probe "<<V>>"', "{g}"),
    ("probe '<<V>>'", "{g}"),
    ('probe x"<<V>>"y', "x{v}y"),
    ("probe 'pre <<V>> post'", "pre {v} post"),
    ("probe --file=<<V>>", "--file={v}"),
    ('probe "$(printf %s "<<V>>")"', "{g}"),
    ("probe <<V>> <<V>>.out", "{g}|{g}.out"),
    ("probe ok # <<V>>", "ok"),
    ("probe - <% raw %><<END<% endraw %>\n<<V>>\nEND", "stdin:{v}\n"),
    ("probe - <% raw %><<'END'<% endraw %>\n<<V>>\nEND", "stdin:{v}\n"),
]


def expected(form: str, value: str, guarded: str) -> tuple[list[str], str]:
    if form.startswith("stdin:"):
        return ["-"], form[6:].format(v=value)
    return [part.format(g=guarded, v=value) for part in form.split("|")], ""


def run_case(wd: Path, command: str) -> tuple[list[str], str]:
    wd.mkdir(parents=True)
    subprocess.run(["/bin/bash", "-c", command], cwd=wd, check=True, stdin=subprocess.DEVNULL,
                   capture_output=True)
    argv = (wd / "argv.bin").read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]
    return argv, (wd / "stdin.bin").read_text("utf-8", "surrogateescape")


def plan_for(folder: Path, template: str, files: list[str] | None = None, params: dict[str, Any] | None = None,
             overrides: tuple[str, ...] = ()) -> list[Any]:
    spec = write_spec(folder, PROBE + template, params=params or {})
    if files is not None:
        make_inputs(folder, dict.fromkeys(files, "x"))
    else:
        data = json.loads(spec.read_text())
        data["inputs"] = {"list": [{"n": 1}]}
        spec.write_text(json.dumps(data))
    return list(build_plan(load_spec(spec), overrides).tasks)


def pwned(root: Path) -> list[Path]:
    return [*root.rglob("pwned*"), *Path.cwd().glob("pwned*")]


@pytest.mark.parametrize(("template", "form"), CONTEXTS)
def test_hostile_file_names_in_every_context(tmp_path: Path, template: str, form: str) -> None:
    names = [n for n in NAMES if "\n" not in n or "stdin" not in form]  # a line break cannot go in a heredoc
    tasks = plan_for(tmp_path / "p", template.replace("V", "name"), names)
    assert len(tasks) == len(names)
    for n, task in enumerate(tasks):
        name = task.inputs[0].path
        argv, stdin = run_case(tmp_path / "wd" / str(n), task.command)
        guarded = "./" + name if needs_dot_slash(name) else name
        assert (argv, stdin) == expected(form, name, guarded), task.command
    assert pwned(tmp_path) == []


def test_a_line_break_cannot_end_a_here_document(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="line break cannot go into a here-document"):
        plan_for(tmp_path / "p", "probe - <% raw %><<END<% endraw %>\n<<name>>\nEND",
                 ["x\nEND\ntouch pwned-heredoc"])


@pytest.mark.parametrize(("template", "form"), [c for c in CONTEXTS if "<<V>>.out" not in c[0]])
def test_hostile_params_in_every_context(tmp_path: Path, template: str, form: str) -> None:
    for n, text in enumerate(PARAMS):
        value = str(parse_overrides([f"x={text}"], {"x": ""})["x"])  # --set reads YAML
        if "\n" in value and "stdin" in form:
            continue
        (task,) = plan_for(tmp_path / f"p{n}", template.replace("V", "params.x"), params={"x": "default"},
                           overrides=(f"x={text}",))
        argv, stdin = run_case(tmp_path / "wd" / str(n), task.command)
        assert (argv, stdin) == expected(form, value, value), task.command  # no ./ for a parameter
    assert pwned(tmp_path) == []


def test_gif_preview_with_a_hostile_fps_runs_no_code(tmp_path: Path) -> None:
    """The issue's example: --set 'fps=10$(touch …)' on the shipped gif-preview spec."""
    spec = copy_spec("gif-preview.yaml", tmp_path / "specs")
    make_inputs(spec.parent, {"clip.mp4": "not really a video"})
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/bash\nprintf '%s\\0' \"$@\" > {tmp_path}/argv.bin\ntouch \"${{@: -1}}\"\n")
    fake.chmod(0o755)
    marker = tmp_path / "pwned"
    result = run_local(spec, "--set", f"fps=10$(touch {marker})", env={"PATH": f"{fake.parent}:/usr/bin:/bin"})
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    argv = (tmp_path / "argv.bin").read_text().split("\0")
    assert f"fps=10$(touch {marker}),scale=320:-1:flags=lanczos,split[a][b];[a]palettegen[p];[b][p]paletteuse" in argv


@pytest.mark.parametrize(("command", "message"), [
    ("bash -c 'ffmpeg -i <<input>> out.mp3'", "`bash -c` runs"),
    ('sh -ec "cp <<input>> x"', "`sh -c` runs"),
    ("eval ffmpeg -i <<input>>", "`eval` runs"),
    ("awk '{print \"<<name>>\"}' <<input>>", "`awk` runs"),
    ("python3 -c 'print(\"<<name>>\")'", "`python -c` runs"),
    ("echo `cat <<input>>`", "inside `…`"),
    ("echo ${X:-<<input>>}", "inside ${…}"),
    ("echo $<<name>>", "follows '$'"),
    ("find . -name x -exec sh -c 'mv {} <<name>>' \\;", "`sh -c` runs"),
    ("bash <% raw %><<END<% endraw %>\necho <<name>>\nEND", "here-document that bash reads as code"),
])
def test_unsafe_contexts_are_located_validation_errors_with_the_fix(tmp_path: Path, command: str,
                                                                    message: str) -> None:
    spec = write_spec(tmp_path, "true")
    lines = spec.read_text()
    spec.write_text(lines.replace('"command": "true"', f'"command": {json.dumps(command)}'))
    _, problems = validate_file(spec)
    assert problems, command
    (problem,) = problems
    assert problem.path == "$.task.command" and message in problem.message, problem.message
    assert problem.line > 1 and problem.column > 1
    assert "instead" in problem.message or "remove" in problem.message or "apart" in problem.message
    # A value meant to be code says so, and passes: << x | raw >>.
    raw = command.replace("<<input>>", "<<input | raw>>").replace("<<name>>", "<<name | raw>>")
    spec.write_text(lines.replace('"command": "true"', f'"command": {json.dumps(raw)}'))
    assert validate_file(spec)[1] == []


def test_arithmetic_takes_integers_only(tmp_path: Path) -> None:
    (task,) = plan_for(tmp_path / "a", "probe $(( <<params.n>> * 2 ))", params={"n": 21})
    assert run_case(tmp_path / "wd", task.command)[0] == ["42"]
    with pytest.raises(PlanError, match="not an integer"):
        plan_for(tmp_path / "b", "probe $(( <<params.n>> * 2 ))", params={"n": "a[$(touch pwned)]"})
    with pytest.raises(PlanError, match="not an integer"):
        plan_for(tmp_path / "c", "[[ <<params.n>> -gt 1 ]] && probe", params={"n": "a[$(touch pwned)]"})
    assert pwned(tmp_path) == []


def test_blocks_that_build_an_unsafe_context_fail_at_planning(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="would run as code"):
        plan_for(tmp_path / "p", "<<'bash' | raw>> -c 'echo <<params.x>>'", params={"x": "$(id)"})


def test_list_values_get_the_same_guard(tmp_path: Path) -> None:
    make_inputs(tmp_path, {"-n.txt": "x", "pipe:1.txt": "y"})
    spec = write_spec(tmp_path, "probe <<item.label>> \"<<item.path>>\" <<name>>", inputs={"list": [
        {"path": "inputs/-n.txt", "label": "--delete"}, {"path": "inputs/pipe:1.txt", "label": "ok"}]})
    tasks = build_plan(load_spec(spec)).tasks
    assert [shlex.split(t.command)[1:] for t in tasks] == [
        ["./--delete", "inputs/-n.txt", "./-n.txt"], ["ok", "inputs/pipe:1.txt", "./pipe:1.txt"]]


# --- 9. $ in output patterns -----------------------------------------------------------------------

DOLLAR_NAMES = ["$HOME.txt", "${USER}.txt", "a$b.txt", "$$.txt"]


def test_dollar_names_are_collected_locally(project: Path) -> None:
    make_inputs(project, dict.fromkeys(DOLLAR_NAMES, "x\n"))
    spec = write_spec(project, "cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"])
    plan = build_plan(load_spec(spec))
    expected = ["[$][$].out", "[$]HOME.out", "[$]{USER}.out", "a[$]b.out"]
    assert sorted(t.outputs[0].pattern for t in plan.tasks) == sorted(expected)
    result = run_local(spec)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (project / "out").iterdir()) == sorted(n[:-4] + ".out" for n in DOLLAR_NAMES)


@pytest.mark.e2e
def test_dollar_names_are_collected_on_azure(project: Path, world: AzureWorld) -> None:
    make_inputs(project, dict.fromkeys(DOLLAR_NAMES, "x\n"))
    spec = write_spec(project, "cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"], name="reldollar")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (project / "out").iterdir()) == sorted(n[:-4] + ".out" for n in DOLLAR_NAMES)


# --- 10. misleading syntax -----------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "message"), [
    (("task", "command"), "ffmpeg -i {{ input }} {{stem}}.mp3", "batchspec templates write values as << input >>"),
    (("task", "command"), "{% if x %}echo{% endif %}", "batchspec templates write blocks as <% if x %>"),
    (("task", "outputs"), ["{{ stem }}.mp3"], "write values as << stem >>"),
    (("pool", "node_agent_sku"), "<<params.size>>", "not replaced in $.pool.node_agent_sku, which is not a template"),
    (("pool", "id"), "pool-<<params.v>>", "is not replaced in $.pool.id"),
    (("task", "command"), "echo << input.encode >>", "'input' is a single value, so 'input.encode' is a method"),
    (("task", "id"), "<< stem.split >>", "'stem' is a single value"),
])
def test_misleading_syntax_is_a_located_error(tmp_path: Path, field: tuple[str, str], value: Any,
                                              message: str) -> None:
    spec = write_spec(tmp_path, "true", params={"size": "x", "dir": "in", "v": "1"})
    data = json.loads(spec.read_text())
    data[field[0]][field[1]] = value
    spec.write_text(json.dumps(data, indent=2))
    _, problems = validate_file(spec)
    assert any(message in p.message and p.line > 1 for p in problems), problems


def test_a_method_or_mapping_value_is_a_plan_error(tmp_path: Path) -> None:
    """What validation cannot see (a method reached by key, a call that returns a list) fails
    when the plan is made, never renders a Python repr into a command."""
    for n, template in enumerate(("echo <<input['encode']>>", "echo <<name.split('.')>>")):
        spec = write_spec(tmp_path / str(n), template)
        make_inputs(spec.parent, {"a.txt": "x"})
        with pytest.raises(PlanError, match="a template value must be text, a number or a path"):
            build_plan(load_spec(spec))


def test_counts_for_the_readme() -> None:
    """README's Reliability section quotes these numbers; keep them in step."""
    file_cases = sum(len([n for n in NAMES if "\n" not in n or "stdin" not in form]) for _, form in CONTEXTS)
    values = [str(parse_overrides([f"x={text}"], {"x": ""})["x"]) for text in PARAMS]
    param_cases = sum(len([v for v in values if "\n" not in v or "stdin" not in form])
                      for t, form in CONTEXTS if "<<V>>.out" not in t)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"{file_cases} file-name cases and {param_cases} parameter cases" in readme, (file_cases, param_cases)

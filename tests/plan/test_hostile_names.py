"""Hostile file names reach the program as exactly one argument, and nothing else runs.

Each task's rendered command runs under a real shell, in a directory laid out as its working
directory, with a probe program in place of ffmpeg that records the arguments it received.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.globs import glob_files
from batchspec.plan import Plan, build_plan
from batchspec.spec import load_spec

HOSTILE = [
    "a b;$(touch pwned-1)'.mp4",
    'double"quote.mp4',
    "back`touch pwned-2`tick.mp4",
    "semi;touch pwned-3.mp4",
    "and&&touch pwned-4.mp4",
    "pipe|touch pwned-5 #.mp4",
    "new\nline.mp4",
    "-rf.mp4",
    "--help.mp4",
    "-",
    "$HOME and ${PATH} $(id).mp4",
    "'single'.mp4",
    "tab\there.mp4",
    "na\u00efve caf\u00e9 \u65e5\u672c\u8a9e \U0001f3ac.mp4",
    "x" * 196 + ".mp4",  # 200 characters
    "\u00e9" * 100 + " 'q' $(touch pwned-6).mp4",  # 200 bytes of accents, then trouble
    "clip [1080p].mp4",
    "star*.mp4",
    "what?.mp4",
    "back\\slash.mp4",
    " leading and trailing space .mp4",
    "percent %d %s.mp4",
    "glob {a,b}.mp4",
    "redirect >out <in.mp4",
    "ampersand & background.mp4",
    "excl!mark.mp4",
]

PROBE = """\
import json, sys
args = sys.argv[1:]
open("argv.json", "w", encoding="utf-8", errors="surrogateescape").write(json.dumps(args))
open(args[-1], "w").close()  # the task's output, named by the last argument
"""


def expected_path(path: str) -> str:
    return "./" + path if path.startswith("-") else path


@pytest.fixture
def hostile_spec(tmp_path: Path) -> Path:
    for name in HOSTILE:
        assert len(name.encode()) <= 255
        (tmp_path / "inputs").mkdir(exist_ok=True)
        (tmp_path / "inputs" / name).write_text(name)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(probe))} <<input>> <<name>> <<stem>>.out"
    spec = {
        "batchspec": 1,
        "name": "hostile",
        "pool": {"id": "p", "vm_size": "x", "image": {"publisher": "a", "offer": "b", "sku": "c"},
                 "node_agent_sku": "n", "nodes": {"dedicated": 1}},
        "inputs": {"path": "inputs/*"},
        "task": {"command": command, "outputs": ["<<stem>>.out"]},
        "outputs": {"download": "out"},
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(json.dumps(spec, indent=2))
    return path


def pwned(root: Path) -> list[Path]:
    return [*root.rglob("pwned*"), *Path.cwd().glob("pwned*")]


def test_every_hostile_name_is_planned(hostile_spec: Path) -> None:
    plan = build_plan(load_spec(hostile_spec))
    assert sorted(t.inputs[0].path for t in plan.tasks) == sorted(HOSTILE)
    ids = [t.id for t in plan.tasks]
    assert len({i.casefold() for i in ids}) == len(HOSTILE)
    assert all(len(i) <= 64 and i.replace("-", "").replace("_", "").isalnum() and i.isascii() for i in ids)


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_probe_receives_exactly_the_file_name(hostile_spec: Path, tmp_path: Path, shell: str) -> None:
    plan: Plan = build_plan(load_spec(hostile_spec))
    for n, task in enumerate(plan.tasks):
        (item,) = task.inputs
        wd = tmp_path / "tasks" / shell.rsplit("/", 1)[1] / str(n)
        (wd / item.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plan.resolve(item.source), wd / item.path)
        result = subprocess.run([shell, "-c", task.command], cwd=wd, capture_output=True, check=False)
        assert result.returncode == 0, (task.command, result.stderr)
        argv = json.loads((wd / "argv.json").read_text(encoding="utf-8", errors="surrogateescape"))
        name = item.path
        stem = name[: -len(".mp4")] if name.endswith(".mp4") else name
        assert argv == [expected_path(name), expected_path(name), expected_path(stem + ".out")], task.command
        # The file the probe opened by that argument is the input itself.
        assert (wd / argv[0]).read_text() == name
        # The output pattern matches the output the task made, and only it.
        (output,) = task.outputs
        pattern = output.pattern
        if "\\" not in name:  # output patterns read "\\" as a path separator (a known limitation)
            assert list(glob_files(wd, pattern)) == [stem + ".out"], pattern
    assert pwned(tmp_path) == []


def test_dash_paths_render_with_dot_slash(hostile_spec: Path) -> None:
    plan = build_plan(load_spec(hostile_spec))
    commands = {t.inputs[0].path: t.command for t in plan.tasks}
    assert commands["-rf.mp4"].endswith(" ./-rf.mp4 ./-rf.mp4 ./-rf.out")
    assert commands["--help.mp4"].endswith(" ./--help.mp4 ./--help.mp4 ./--help.out")
    assert commands["-"].endswith(" ./- ./- ./-.out")


def test_hostile_names_run_end_to_end_on_the_local_backend(hostile_spec: Path, tmp_path: Path) -> None:
    """The real path: batchspec run, bash on the local backend, outputs collected by pattern."""
    for name in HOSTILE:
        if "\\" in name:
            (tmp_path / "inputs" / name).unlink()
    result = CliRunner().invoke(cli, ["run", str(hostile_spec), "--backend", "local", "--run-dir",
                                      str(tmp_path / "run"), "--slots", "2"])
    assert result.exit_code == 0, result.output
    collected = sorted(p.name for p in (tmp_path / "out").iterdir())
    stems = [n[: -len(".mp4")] if n.endswith(".mp4") else n for n in HOSTILE if "\\" not in n]
    assert collected == sorted(s + ".out" for s in stems)
    assert pwned(tmp_path) == []


def test_raw_values_are_not_quoted_control(tmp_path: Path) -> None:
    """Control: the same names *with* ``| raw`` do run code, so the probe above would notice."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "x$(touch pwned-raw).mp4").write_text("")
    spec = {
        "batchspec": 1, "name": "raw",
        "pool": {"id": "p", "vm_size": "x", "image": {"publisher": "a", "offer": "b", "sku": "c"},
                 "node_agent_sku": "n", "nodes": {"dedicated": 1}},
        "inputs": {"path": "inputs/*"},
        "task": {"command": "echo <<input | raw>>"},
    }
    path = tmp_path / "raw.yaml"
    path.write_text(json.dumps(spec))
    (task,) = build_plan(load_spec(path)).tasks
    assert task.command == "echo x$(touch pwned-raw).mp4"
    subprocess.run(["/bin/sh", "-c", task.command], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "pwned-raw").exists()


def test_newline_name_stays_one_argument_through_env(hostile_spec: Path) -> None:
    plan = build_plan(load_spec(hostile_spec))
    (task,) = [t for t in plan.tasks if t.inputs[0].path == "new\nline.mp4"]
    assert shlex.split(task.command)[-3:] == ["new\nline.mp4", "new\nline.mp4", "new\nline.out"]
    assert os.sep not in task.id and "\n" not in task.id

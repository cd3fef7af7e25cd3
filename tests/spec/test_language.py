"""Validation of the spec language beyond one command per file: stages, merge, files, output
rules, typed params, ranges, job settings. Every problem has its line, column, path and a hint;
and the schema is the one place defaults are written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from batchspec.spec import load_spec, schema
from batchspec.spec.defaults import fill_defaults, schema_defaults
from batchspec.spec.model import Spec

from .conftest import VALID, Check, edit, position, problems

STAGES = VALID.replace("""task:
  command: ffmpeg -i <<input>> -b:a <<params.bitrate>> <<stem>>.mp3
  outputs: ["<<stem>>.mp3"]
  timeout: 30m
""", """stages:
  - name: split
    publish: false
    task:
      command: split <<input>>
      outputs: ["<<stem>>/part-*"]
  - name: encode
    task:
      command: enc <<input>> <<source.stem>>
      outputs: ["<<input>>.enc"]
  - name: join
    group: input
    task:
      command: join <% for f in inputs %><<f>> <% endfor %>
      outputs: ["<<source.stem>>.joined"]
""")


def test_the_stages_spec_is_valid(check: Check) -> None:
    assert check(STAGES) == []


# (id, text, [(needle whose position the problem has, path, message fragment)])
CASES: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    ("task-and-stages", STAGES + "task: {command: x}\n",
     [("stages:", "$.stages", "give either 'task' (one step) or 'stages', not both")]),
    ("misspelt-stage-key", edit(STAGES, "    group: input", "    grup: input"),
     [("grup", "$.stages[2].grup", "unknown key 'grup'; did you mean 'group'?")]),
    ("unknown-source", edit(STAGES, "  - name: encode\n", "  - name: encode\n    from: splt\n"),
     [("splt", "$.stages[1].from", "'splt' is not an earlier stage; did you mean 'split'?")]),
    ("from-on-first", edit(STAGES, "  - name: split\n", "  - name: split\n    from: join\n"),
     [("from: join", "$.stages[0].from", "'from' does not apply to the first stage")]),
    ("twice", edit(STAGES, "  - name: join", "  - name: split"),
     [("split\n    group", "$.stages[2].name", "stage name 'split' is used twice")]),
    ("bad-group", edit(STAGES, "group: input", "group: inputs"),
     [("inputs\n", "$.stages[2].group", "'inputs' is not one of ['file', 'input', 'all']; did you mean 'input'?")]),
    ("with-source-on-all", edit(STAGES, "    group: input", "    group: all\n    with_source: true"),
     [("with_source", "$.stages[2].with_source", "'with_source' needs a later stage"),
      ("source.stem>>.joined", "$.stages[2].task.outputs[0]", "unknown template variable 'source'")]),
    ("source-variable", edit(STAGES, "<<source.stem>>.joined", "<<source.stm>>.joined"),
     [("stm", "$.stages[2].task.outputs[0]", "unknown source key 'stm' in 'source.stm'; did you mean 'stem'?")]),
    ("inputs-in-a-file-stage", edit(STAGES, "enc <<input>>", "enc <<inputs>>"),
     [("inputs>>", "$.stages[1].task.command", "unknown template variable 'inputs'; did you mean 'input'?")]),
    ("merge-variables", VALID + "merge: {command: cat <<input>>, outputs: [all]}\n",
     [("input>>,", "$.merge.command", "unknown template variable 'input'; did you mean 'inputs'?")]),
    ("two-file-kinds", VALID + "files:\n  - {path: a.png, url: 'https://x/a.png'}\n",
     [("{path", "$.files[0]", "give exactly one of 'path', 'url' or 'container' (found path, url)")]),
    ("prefix-without-container", VALID + "files:\n  - {path: a.png, prefix: x/}\n",
     [("prefix", "$.files[0].prefix", "'prefix' only applies to 'container'")]),
    ("file-url", VALID + "files:\n  - {url: 'ftp://x/a.png'}\n",
     [("'ftp", "$.files[0].url", "does not match")]),
    ("file-escapes", edit(VALID, "  timeout: 30m\n", "  timeout: 30m\n  files: [{path: a.png, to: ../a.png}]\n"),
     [("../a.png", "$.task.files[0].to", "'../a.png' must not contain '..'")]),
    ("file-mode", VALID + "files:\n  - {path: run.sh, mode: '755x'}\n",
     [("'755x'", "$.files[0].mode", "does not match")]),
    ("output-when", edit(VALID, '["<<stem>>.mp3"]', '[{path: "<<stem>>.mp3", when: sometimes}]'),
     [("sometimes", "$.task.outputs[0].when", "'sometimes' is not one of ['success', 'failure', 'always']")]),
    ("param-type", edit(VALID, "  bitrate: 192k", "  bitrate: {type: int, default: 5}"),
     [("int,", "$.params.bitrate.type", "'int' is not one of ['string', 'integer', 'number', 'boolean']; "
                                          "did you mean 'integer'?")]),
    ("output-rename-wildcard", edit(VALID, '["<<stem>>.mp3"]', '[{path: "*.jpg", to: one.jpg}]'),
     [("one.jpg", "$.task.outputs[0].to", "'*.jpg' has wildcards, so 'to' must be a directory ending in '/'")]),
    ("output-to-absolute", edit(VALID, '["<<stem>>.mp3"]', '[{path: "a.mp3", to: /tmp/}]'),
     [("/tmp/", "$.task.outputs[0].to", "'/tmp/' must be a relative path")]),
    ("output-key", edit(VALID, '["<<stem>>.mp3"]', '[{path: "a.mp3", dest: x/}]'),
     [("dest", "$.task.outputs[0].dest", "unknown key 'dest' (allowed: path, when, to)")]),
    ("param-default-type", edit(VALID, "  bitrate: 192k", "  bitrate: 192k\n  crf: {type: integer, default: fast}"),
     [("fast", "$.params.crf.default", "the default 'fast' is not an integer")]),
    ("param-enum-type", edit(VALID, "  bitrate: 192k", "  bitrate: 192k\n  crf: {type: integer, enum: [1, two]}"),
     [("two", "$.params.crf.enum[1]", "'two' is not an integer")]),
    ("param-default-enum", edit(VALID, "  bitrate: 192k", "  bitrate: {default: 320k, enum: [128k, 192k]}"),
     [("320k", "$.params.bitrate.default", "the default '320k' is not one of '128k', '192k'")]),
    ("param-range-on-string", edit(VALID, "  bitrate: 192k", "  bitrate: {default: 192k, minimum: 1}"),
     [("minimum", "$.params.bitrate.minimum", "'minimum' only applies to integer and number parameters")]),
    ("param-key", edit(VALID, "  bitrate: 192k", "  bitrate: {default: 192k, descripton: x}"),
     [("descripton", "$.params.bitrate.descripton", "unknown key 'descripton'; did you mean 'description'?")]),
    ("node-count-text", edit(VALID, "spot: 2", "spot: lots"),
     [("lots", "$.pool.nodes.spot", "'lots' is not a node count: give an integer or a template over params")]),
    ("node-count-template", edit(edit(VALID, "spot: 2", "spot: '<<params.nods>>'"), "  bitrate: 192k",
                                 "  bitrate: 192k\n  nodes: 2"),
     [("nods", "$.pool.nodes.spot", "unknown params key 'nods' in 'params.nods'; did you mean 'nodes'?")]),
    ("range-both", VALID + "matrix:\n  f: {range: 1-5, start: 1, stop: 5}\n",
     [("f:", "$.matrix.f", "give either 'range' or 'start' and 'stop', not both")]),
    ("range-half", VALID + "matrix:\n  f: {start: 1}\n",
     [("f:", "$.matrix.f", "a range axis needs 'start' and 'stop'")]),
    ("range-step", VALID + "matrix:\n  f: {start: 1, stop: 5, step: 0}\n",
     [("0}", "$.matrix.f.step", "the step must not be 0")]),
    ("range-text", VALID + "matrix:\n  f: {range: 1..5}\n",
     [("1..5", "$.matrix.f.range", "'1..5' is not a range; write e.g. 1-240 or 1-240:2")]),
    ("job-timeout", VALID + "job: {timeout: soon}\n",
     [("soon", "$.job.timeout", "'soon' is not a duration")]),
    ("job-env", VALID + "job: {env: {LEVEL: '<<params.levl>>'}}\n",
     [("levl", "$.job.env.LEVEL", "unknown params key 'levl' in 'params.levl'")]),
    ("last-stage-unpublished", edit(STAGES, "    group: input\n", "    group: input\n    publish: false\n"),
     [("false\n    task:\n      command: join", "$.stages[2].publish", "cannot be unpublished")]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problems_are_located_with_a_hint(check: Check, text: str, expected: list[tuple[str, str, str]]) -> None:
    found = problems(check(text))
    assert len(found) == len(expected), found
    for (line, column, path, message), (needle, want_path, fragment) in zip(found, expected, strict=True):
        assert path == want_path, found
        assert fragment in message, found
        assert (line, column) == position(text, needle), (found, needle)


def test_the_cases_are_distinct() -> None:
    assert len({text for _, text, _ in CASES}) == len(CASES)


# --- one place for defaults ---------------------------------------------------------------------


def _model_defaults(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING]


def test_the_model_holds_no_defaults_of_its_own() -> None:
    from batchspec.spec import model

    classes = [c for c in vars(model).values() if dataclasses.is_dataclass(c) and isinstance(c, type)]
    assert len(classes) > 10
    assert {c.__name__: _model_defaults(c) for c in classes if _model_defaults(c)} == {}


def test_every_schema_default_is_filled_in() -> None:
    data = YAML(typ="safe").load(VALID)
    data["pool"]["start_task"] = {"command": "x"}
    data["stages"] = [{"name": "one", "task": data.pop("task")}, {"name": "two", "task": {"command": "y"}}]
    data["matrix"] = {"f": {"start": 1, "stop": 2}}
    data["files"] = [{"container": "c"}]
    data["params"]["typed"] = {"type": "integer"}
    filled = fill_defaults(data, schema())
    defaults = schema_defaults(schema())
    assert len(defaults) > 25

    def at(document: Any, path: str) -> Any:
        """The value at a schema path (the last list item; the task body under stages)."""
        node: Any = document
        for part in path.replace("[]", ".[]").split("."):
            if part == "[]":
                node = node[-1]
            elif part == "*":
                node = next(v for v in node.values() if isinstance(v, dict))
            elif part == "task" and node is document:
                node = document["stages"][0]["task"]
            else:
                node = node[part]
        return node

    checked = 0
    for path, default in defaults.items():
        if path.startswith(("merge", "task.outputs[]")):
            continue  # no merge in this document; outputs given as plain patterns
        try:
            at(data, path)
            continue  # given in the document: not a default
        except (KeyError, IndexError, StopIteration):
            pass
        try:
            at(filled, path.rsplit(".", 1)[0])
        except (KeyError, IndexError, StopIteration):
            continue  # inside an optional object the document does not have (autoscale)
        value = at(filled, path)
        # An object's default ({}) is filled in, then its own properties' defaults inside it.
        assert value == default or (default == {} and isinstance(value, dict)), path
        checked += 1
    assert checked > 20
    assert "nodes" in filled["pool"]["start_task"] or "env" in filled["pool"]["start_task"]
    assert "env" not in data["pool"]["start_task"]  # the document itself is not changed


def test_spelling_out_every_default_changes_nothing(tmp_path: Path) -> None:
    short = tmp_path / "short.yaml"
    short.write_text(VALID)
    spelled = YAML(typ="safe").load(VALID)
    # (cleanup.pool is left out: `keep` written in the spec also keeps a pool after an error,
    # which the default does not; test_side_effects.py has that.)
    spelled.update({"description": "", "requires": [], "matrix": {}, "files": [], "job": {"env": {}},
                    "outputs": {}, "cleanup": {"job": "keep", "inputs": "keep"}})
    spelled["pool"].update({"task_slots_per_node": 1, "ready_timeout": "30m"})
    spelled["pool"]["image"]["version"] = "latest"
    spelled["inputs"].update({"prefix": "", "allow_empty": False})
    spelled["task"].update({"retries": 0, "env": {}, "files": []})
    long = tmp_path / "long.yaml"
    long.write_text(json.dumps(spelled))
    a, b = load_spec(short), load_spec(long)
    assert {k: v for k, v in vars(a).items() if k not in ("path", "lines")} == {
        k: v for k, v in vars(b).items() if k not in ("path", "lines")}
    assert isinstance(a, Spec) and a.task.retries == 0 and a.pool.image.version == "latest"


def test_whole_floats_where_the_schema_asks_for_integers_are_integers(tmp_path: Path) -> None:
    """JSON Schema counts 2.0 as an integer, so `spot: 2.0` is valid; the model holds 2 (a float
    there once ended `plan` in a traceback), and a float where numbers are allowed stays one."""
    data = YAML(typ="safe").load(VALID)
    data["pool"]["nodes"] = {"dedicated": 1.0, "spot": 0.0}
    data["pool"]["task_slots_per_node"] = 2.0
    data["task"]["retries"] = 3.0
    data["matrix"] = {"part": {"start": 1.0, "stop": 3.0, "step": 1.0, "pad": 2.0}, "q": [0.5, 2.0]}
    filled = fill_defaults(data, schema())
    nodes = filled["pool"]["nodes"]
    assert (nodes["dedicated"], nodes["spot"], filled["pool"]["task_slots_per_node"], filled["task"]["retries"]) == (
        1, 0, 2, 3)
    assert all(type(v) is int for v in (*nodes.values(), filled["pool"]["task_slots_per_node"]))
    assert filled["matrix"]["part"] == {"start": 1, "stop": 3, "step": 1, "pad": 2}
    assert filled["matrix"]["q"] == [0.5, 2.0] and type(filled["matrix"]["q"][1]) is float  # numbers, not integers
    data["task"]["outputs"] = ["<<stem>>-<<matrix.part>>-<<matrix.q>>.mp3"]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    spec = load_spec(path)
    assert (spec.pool.dedicated, spec.pool.spot, spec.pool.task_slots_per_node) == (1, 0, 2)

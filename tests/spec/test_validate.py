"""Broken specs, each with the exact line, column, JSON path and message it must produce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchspec.spec import validate_file, validate_files
from batchspec.spec.validate import PARALLEL_FROM

from .conftest import VALID, Check, Problem, edit, position, problems

COMMAND = "  command: ffmpeg -i <<input>> -b:a <<params.bitrate>> <<stem>>.mp3\n"
BATCH_ID_RULE = "may only contain letters, digits, '-' and '_'"

# (id, broken spec text, every diagnostic expected: line, column, path, a fragment of the message)
CASES: list[tuple[str, str, list[tuple[int, int, str, str]]]] = [
    (
        "negative-spot",
        edit(VALID, "spot: 2", "spot: -1"),
        [(10, 31, "$.pool.nodes.spot", "-1 is less than the minimum of 0")],
    ),
    (
        "misspelt-key-hint",
        edit(VALID, "  vm_size:", "  vm_sise:"),
        [
            (5, 1, "$.pool", "missing required key 'vm_size' in 'pool'"),
            (7, 3, "$.pool.vm_sise", "unknown key 'vm_sise'; did you mean 'vm_size'?"),
        ],
    ),
    (
        "unknown-top-level-key",
        edit(VALID, "name: demo\n", "name: demo\ndescripton: Extract the audio\n"),
        [(3, 1, "$.descripton", "unknown key 'descripton'; did you mean 'description'?")],
    ),
    (
        "unknown-key-without-close-match",
        edit(VALID, "  timeout: 30m\n", "  timeout: 30m\n  priority: 5\n"),
        [(17, 3, "$.task.priority",
          "unknown key 'priority' (allowed: command, outputs, id, retries, timeout, expected_duration, env, files, "
          "container)")],
    ),
    (
        "missing-section",
        edit(VALID, "  node_agent_sku: batch.node.ubuntu 24.04\n", ""),
        [(5, 1, "$.pool", "missing required key 'node_agent_sku' in 'pool'")],
    ),
    (
        "input-variables-without-inputs",
        edit(VALID, "inputs:\n  path: inputs/*.mp4\n", ""),
        [(12, 24, "$.task.command", "'input' is a variable of a task over an input, and the spec has no 'inputs'"),
         (12, 58, "$.task.command", "'stem' is a variable of a task over an input"),
         (13, 16, "$.task.outputs[0]", "'stem' is a variable of a task over an input")],
    ),
    (
        "format-version",
        edit(VALID, "batchspec: 1", "batchspec: 2"),
        [(1, 12, "$.batchspec", "unsupported spec format version 2; this batchspec reads `batchspec: 1`")],
    ),
    (
        "wrong-type",
        edit(VALID, "timeout: 30m", "timeout: 30"),
        [(16, 12, "$.task.timeout", "30 is not of type 'string'")],
    ),
    (
        "slots-below-minimum",
        edit(VALID, "  nodes:", "  task_slots_per_node: 0\n  nodes:"),
        [(10, 24, "$.pool.task_slots_per_node", "0 is less than the minimum of 1")],
    ),
    (
        "cleanup-enum",
        VALID + "cleanup: {job: remove}\n",
        [(17, 16, "$.cleanup.job", "'remove' is not one of ['delete', 'keep']")],
    ),
    (
        "param-name",
        edit(VALID, "  bitrate: 192k\n", "  bitrate: 192k\n  2pass: true\n"),
        [(5, 3, "$.params.2pass", "'2pass' is not a valid name: use letters, digits and '_', not starting with a")],
    ),
    (
        "unknown-template-variable",
        edit(VALID, "<<stem>>.mp3\n", "<<stm>>.mp3\n"),
        [(14, 58, "$.task.command", "unknown template variable 'stm'; did you mean 'stem'?")],
    ),
    (
        "unknown-variable-that-is-a-substring",  # 'in' is inside 'input': point at the tag, not the word
        edit(VALID, "<<stem>>.mp3\n", "<<in>>.mp3\n"),
        [(14, 58, "$.task.command", "unknown template variable 'in' (known: count, dir, ext, index, input, ")],
    ),
    (
        "unknown-param",
        edit(VALID, "<<params.bitrate>>", "<<params.bitrat>>"),
        [(14, 46, "$.task.command", "unknown params key 'bitrat' in 'params.bitrat'; did you mean 'bitrate'?")],
    ),
    (
        "unknown-matrix-key",
        edit(VALID, "<<params.bitrate>>", "<<matrix.rate>>") + "matrix:\n  bitrate: [128k]\n",
        [(14, 46, "$.task.command", "unknown matrix key 'rate' in 'matrix.rate'; did you mean 'bitrate'?")],
    ),
    (
        "template-syntax-error-in-block",
        edit(VALID, COMMAND, "  command: |\n    set -e\n    ffmpeg -i <<input>> <<stem>>.mp3\n    echo <<stem>\n"),
        [(17, 5, "$.task.command", "template syntax error: unexpected 'end of template'")],
    ),
    (
        "unknown-variable-in-folded-block",  # a folded (>) scalar joins lines: find the line anyway
        edit(VALID, COMMAND, "  command: >-\n    ffmpeg -i <<input>>\n    -b:a <<params.bitrate>>\n    <<stm>>.mp3\n"),
        [(17, 7, "$.task.command", "unknown template variable 'stm'; did you mean 'stem'?")],
    ),
    (
        "unknown-variable-in-plain-multiline",
        edit(VALID, COMMAND, "  command: ffmpeg -i <<input>>\n    -b:a <<params.bitrat>> <<stem>>.mp3\n"),
        [(15, 19, "$.task.command", "unknown params key 'bitrat' in 'params.bitrat'; did you mean 'bitrate'?")],
    ),
    (
        "sandbox-escape-mro",
        edit(VALID, COMMAND, "  command: echo << ''.__class__.__mro__ >>\n"),
        [
            (14, 23, "$.task.command", "template may not access '__class__' (sandboxed)"),
            (14, 33, "$.task.command", "template may not access '__mro__' (sandboxed)"),
        ],
    ),
    (
        "sandbox-escape-globals",
        edit(VALID, COMMAND, "  command: echo << cycler.__init__.__globals__ >>\n"),
        [
            (14, 27, "$.task.command", "template may not access '__init__' (sandboxed)"),
            (14, 36, "$.task.command", "template may not access '__globals__' (sandboxed)"),
        ],
    ),
    (
        "sandbox-escape-attr-filter",
        edit(VALID, "-i <<input>>", "-i <<input | attr('__class__')>>"),
        [(14, 38, "$.task.command", "template may not access '__class__' (sandboxed)")],
    ),
    (
        "unknown-filter",
        edit(VALID, "-i <<input>>", "-i <<input | shellquote>>"),
        [(14, 32, "$.task.command", "unknown filter 'shellquote'")],
    ),
    (
        "start-task-variables",
        edit(VALID, "  nodes:", "  start_task: {command: 'cp <<input>> /tmp'}\n  nodes:"),
        [(10, 31, "$.pool.start_task.command", "unknown template variable 'input' (known: params)")],
    ),
    (
        "name-too-long",
        edit(VALID, "name: demo", "name: " + "x" * 65),
        [(2, 7, "$.name", "name 'xxxxxxxxxxxxxxxxxxxx...' is 65 characters; a Batch id has at most 64")],
    ),
    (
        "name-characters",
        edit(VALID, "name: demo", "name: my demo!"),
        [(2, 7, "$.name", f"name 'my demo!' {BATCH_ID_RULE} (found ' ' '!')")],
    ),
    (
        "pool-id-characters",
        edit(VALID, "id: demo-pool", "id: demo.pool"),
        [(6, 7, "$.pool.id", f"pool id 'demo.pool' {BATCH_ID_RULE} (found '.')")],
    ),
    (
        "job-id-characters",
        VALID + "job: {id: nightly run}\n",
        [(17, 11, "$.job.id", f"job id 'nightly run' {BATCH_ID_RULE} (found ' ')")],
    ),
    (
        "no-nodes",
        edit(VALID, "spot: 2", "spot: 0"),
        [(10, 3, "$.pool.nodes", "the pool has no nodes: set nodes.dedicated or nodes.spot to at least 1")],
    ),
    (
        "nodes-and-autoscale",
        edit(VALID, "inputs:\n", "  autoscale: {formula: '$TargetDedicatedNodes = 1;'}\ninputs:\n"),
        [(11, 3, "$.pool.autoscale", "give either 'nodes' or 'autoscale', not both")],
    ),
    (
        "autoscale-interval-too-short",
        edit(VALID, "  nodes: {dedicated: 0, spot: 2}",
             "  autoscale: {formula: '$TargetDedicatedNodes = 1;', interval: 1m}"),
        [(10, 64, "$.pool.autoscale.interval", "'1m' is shorter than the minimum of 300 seconds")],
    ),
    (
        "bad-duration",
        edit(VALID, "timeout: 30m", "timeout: 30 minutes"),
        [(16, 12, "$.task.timeout", "'30 minutes' is not a duration; write e.g. 30m, 1h30m, 90s, 2d or PT30M")],
    ),
    (
        "zero-duration",
        edit(VALID, "timeout: 30m", "timeout: 0s"),
        [(16, 12, "$.task.timeout", "duration '0s' must be longer than zero")],
    ),
    (
        "duplicate-key",
        VALID + "name: again\n",
        [(17, 1, "$.name", "duplicate key 'name' (mapping starts on line 1): each key may appear once")],
    ),
    (
        "duplicate-nested-key",
        edit(VALID, "  id: demo-pool\n", "  id: demo-pool\n  id: other-pool\n"),
        [(7, 3, "$.pool.id", "duplicate key 'id' (mapping starts on line 6): each key may appear once")],
    ),
    (
        "output-outside-working-dir",
        edit(VALID, '["<<stem>>.mp3"]', '["../out.mp3"]'),
        [(15, 13, "$.task.outputs[0]", "output pattern '../out.mp3' must not contain '..'")],
    ),
    (
        "output-absolute",
        edit(VALID, '["<<stem>>.mp3"]', '["<<stem>>.mp3", "/tmp/x.log"]'),
        [(15, 29, "$.task.outputs[1]", "output pattern '/tmp/x.log' must be relative to the task's working directory")],
    ),
    (
        "two-input-sources",
        edit(VALID, "  path: inputs/*.mp4\n", "  path: inputs/*.mp4\n  list: [a.mp4]\n"),
        [(11, 1, "$.inputs", "give exactly one of 'path', 'container' or 'list' (found path, list)")],
    ),
    (
        "exclude-without-path",
        edit(VALID, "  path: inputs/*.mp4\n", "  list: [a.mp4]\n  exclude: b.mp4\n"),
        [(13, 3, "$.inputs.exclude", "'exclude' only applies to 'path' patterns")],
    ),
    (
        "container-name",
        VALID + "outputs: {container: Media_Out}\n",
        [(17, 22, "$.outputs.container", "container 'Media_Out' is not a valid container name")],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_spec_reports_exact_positions(check: Check, text: str, expected: list[Problem]) -> None:
    found = problems(check(text))
    assert len(found) == len(expected), found
    for (line, column, path, message), (*want, fragment) in zip(found, expected, strict=True):
        assert [line, column, path] == want, (found, expected)
        assert fragment in message


def test_the_cases_are_distinct() -> None:
    assert len(CASES) >= 15
    assert len({text for _, text, _ in CASES}) == len(CASES)


def test_the_valid_spec_is_valid(check: Check) -> None:
    assert check(VALID) == []


def test_positions_point_at_the_token_in_the_text(check: Check) -> None:
    """Cross-check a few literal positions above against the text itself."""
    text = edit(VALID, "<<stem>>.mp3\n", "<<stm>>.mp3\n")
    line, column = position(text, "stm>>")
    assert problems(check(text))[0][:2] == (line, column) == (14, 58)
    text = edit(VALID, "spot: 2", "spot: -1")
    assert problems(check(text))[0][:2] == position(text, "-1}")


def test_every_problem_in_a_file_is_reported_in_order(check: Check) -> None:
    text = edit(VALID, "spot: 2", "spot: -1")
    text = edit(text, "name: demo", "name: demo!")
    text = edit(text, "<<params.bitrate>>", "<<params.rate>>")
    text = edit(text, "timeout: 30m", "timeout: soon")
    found = problems(check(text))
    assert [(line, column, path) for line, column, path, _ in found] == [
        (2, 7, "$.name"),
        (10, 31, "$.pool.nodes.spot"),
        (14, 46, "$.task.command"),
        (16, 12, "$.task.timeout"),
    ]


def test_diagnostic_format_is_file_line_column_path_message(check: Check) -> None:
    (diagnostic,) = check(edit(VALID, "spot: 2", "spot: -1"), "specs-x.yaml")
    assert diagnostic.format() == "specs-x.yaml:10:31: $.pool.nodes.spot: -1 is less than the minimum of 0"
    assert diagnostic.as_dict() == {
        "file": "specs-x.yaml",
        "line": 10,
        "column": 31,
        "path": "$.pool.nodes.spot",
        "message": "-1 is less than the minimum of 0",
    }


def test_json_spec_positions(check: Check) -> None:
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(VALID)
    data["pool"]["nodes"]["spot"] = -1
    data["task"]["comand"] = data["task"].pop("command")
    text = json.dumps(data, indent=2)
    found = problems(check(text, "spec.json"))
    assert [(line, column, path) for line, column, path, _ in found] == [
        (*position(text, "-1"), "$.pool.nodes.spot"),
        (*position(text, '"task"'), "$.task"),
        (*position(text, '"comand"'), "$.task.comand"),
    ]
    assert "did you mean 'command'?" in found[2][3]
    assert "missing required key 'command' in 'task'" in found[1][3]


def test_json_with_tabs_and_escapes_is_read(check: Check) -> None:
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(VALID)
    data["description"] = "caf\u00e9 / r\u00e9sum\u00e9"
    text = json.dumps(data, indent="\t", ensure_ascii=True).replace("/", "\\/")
    assert check(text, "spec.json") == []


def test_templates_in_every_templated_field_are_checked(check: Check) -> None:
    text = edit(VALID, "  timeout: 30m\n", "  timeout: 30m\n  id: <<stem>>-<<task_id>>\n  env: {SRC: <<inptu>>}\n")
    text += "job: {id: <<name>>-<<stem>>}\n"
    text = edit(text, '["<<stem>>.mp3"]', '["<<stem>>.mp3", "<<nme>>.log"]')
    found = problems(check(text))
    assert [(line, path, message.split(" (")[0].split(";")[0]) for line, _, path, message in found] == [
        (15, "$.task.outputs[1]", "unknown template variable 'nme'"),
        (17, "$.task.id", "unknown template variable 'task_id'"),
        (18, "$.task.env.SRC", "unknown template variable 'inptu'"),
        (19, "$.job.id", "unknown template variable 'stem'"),
    ]


def test_template_job_id_is_not_checked_as_a_literal_id(check: Check) -> None:
    assert check(VALID + "job: {id: '<<name>>-<<params.bitrate>>'}\n") == []


@pytest.mark.parametrize("duration", ["30m", "1h30m", "90s", "2d", "1.5h", "PT30M", "P1DT2H", "pt5m"])
def test_valid_durations(check: Check, duration: str) -> None:
    assert check(edit(VALID, "timeout: 30m", f"timeout: {duration}")) == []


def test_autoscale_without_nodes_is_valid(check: Check) -> None:
    text = edit(VALID, "  nodes: {dedicated: 0, spot: 2}",
                "  autoscale: {formula: '$TargetLowPriorityNodes = 2;', interval: 5m}")
    assert check(text) == []


def test_autoscale_interval_too_long(check: Check) -> None:
    text = edit(VALID, "  nodes: {dedicated: 0, spot: 2}",
                "  autoscale: {formula: '$TargetDedicatedNodes = 0', interval: 8d}")
    assert [m for *_, m in problems(check(text))] == ["'8d' is longer than the maximum of 168 hours"]


def test_missing_nodes_block_is_an_error_at_the_pool(check: Check) -> None:
    text = edit(VALID, "  nodes: {dedicated: 0, spot: 2}\n", "")
    assert problems(check(text)) == [
        (5, 1, "$.pool", "the pool has no nodes: set nodes.dedicated or nodes.spot to at least 1, or use autoscale")
    ]


def test_list_item_keys_must_be_names(check: Check) -> None:
    text = edit(VALID, "  path: inputs/*.mp4\n", "  list:\n    - {path: a.mp4, start-at: 10}\n")
    assert problems(check(text)) == [
        (13, 21, "$.inputs.list[0].start-at", "'start-at' is not a valid name: use letters, digits and '_'")
    ]


def test_prefix_without_container(check: Check) -> None:
    text = edit(VALID, "  path: inputs/*.mp4\n", "  path: inputs/*.mp4\n  prefix: 2024/\n")
    assert problems(check(text)) == [(13, 3, "$.inputs.prefix", "'prefix' only applies to 'container'")]


def test_merge_keys_are_expanded(check: Check) -> None:
    text = "x-pool: &pool\n  id: demo-pool\n  vm_size: standard_a1_v2\n" + edit(
        VALID, "pool:\n  id: demo-pool\n  vm_size: standard_a1_v2\n", "pool:\n  <<: *pool\n"
    )
    found = problems(check(text))
    assert found == [(1, 1, "$.x-pool", found[0][3])]  # only the extra top-level key
    assert found[0][3].startswith("unknown key 'x-pool'")


def test_many_files_are_checked_in_parallel_with_the_same_results(tmp_path: Path) -> None:
    files = []
    for i in range(PARALLEL_FROM + 6):
        path = tmp_path / f"spec-{i:03}.yaml"
        path.write_text(VALID if i % 3 else edit(VALID, "spot: 2", "spot: -1"))
        files.append(path)
    parallel = validate_files(files)
    assert [name for name, _ in parallel] == [str(p) for p in files]
    assert parallel == [(str(p), validate_file(p, str(p))[1]) for p in files]
    assert sum(1 for _, diags in parallel if diags) == len(range(0, PARALLEL_FROM + 6, 3))

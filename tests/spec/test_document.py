"""Files that are not specs at all: each gets one clear diagnostic, never an exception."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from batchspec.spec import validate_file
from batchspec.spec.document import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES, Document, parse_document, read_document

from .conftest import VALID, Check, edit, problems

ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", (0, 0, "empty file: a spec needs at least batchspec, name, pool, inputs and task", "$")),
        (b"  \n\n\t\n", (0, 0, "empty file: a spec needs at least batchspec, name, pool, inputs and task", "$")),
        (b"# just a comment\n\n# another\n", (0, 0, "empty file: a spec needs", "$")),
        (b"batchspec: 1\n\x00\x01\x02\xff", (0, 0, "not a text file (it contains binary data)", "$")),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", (0, 0, "not a text file (it contains binary data)", "$")),
        ("batchspec: 1\nname: caf\xe9\n".encode("latin-1"), (2, 1, "not UTF-8 text (byte 0xe9 at offset 22)", "$")),
        (b"- a\n- b\n", (1, 1, "a spec must be a mapping of keys to values, not a list value", "$")),
        (b"just words\n", (1, 1, "a spec must be a mapping of keys to values, not a scalar value", "$")),
        (b"~\n", (1, 1, "a spec must be a mapping of keys to values, not an empty value", "$")),
        (b"a: 1\nb: [1, 2\n", (3, 1, "invalid YAML/JSON: expected ',' or ']', but got '<stream end>'", "$")),
        (b"a: 1\n  b: 2\n", (2, 4, "invalid YAML/JSON: mapping values are not allowed here", "$")),
        (b"a: 1\n---\nb: 2\n", (2, 1, "invalid YAML/JSON: but found another document", "$")),
        (b"a: *nope\n", (1, 4, "invalid YAML/JSON: found undefined alias 'nope'", "$")),
        (b"batchspec: 1\nname:\tx\npool:\n\tid: p\n",
         (2, 6, "invalid YAML/JSON: found character '\\t' that cannot", "$")),
        (b'{"name": "a", "name": "b"}', (1, 15, "duplicate key 'name' (mapping starts on line 1)", "$.name")),
        (ALIAS_BOMB.encode(), (0, 0, f"too many YAML nodes (over {MAX_NODES:,} after expanding aliases)", "$")),
        (b"a: " + b"[" * 5000 + b"]" * 5000, (0, 0, f"document nests deeper than {MAX_DEPTH} levels", "$")),
        (b"a: &a [*a]\n", (0, 0, f"document nests deeper than {MAX_DEPTH} levels", "$")),
        (b"a: &a 1\nb:\n  x: 2\n  <<: *a\n", (4, 3, "a merge key (<<) must refer to a mapping", "$.b")),
    ],
    ids=["empty", "blank", "comments-only", "binary", "png", "latin-1", "list", "scalar", "null", "unclosed-flow",
         "bad-indent", "two-documents", "undefined-alias", "tab-indent", "json-duplicate", "alias-bomb", "deep-nesting",
         "recursive-alias", "merge-of-a-scalar"],
)
def test_bad_file_gets_one_clear_diagnostic(check: Check, content: bytes, expected: tuple[int, int, str, str]) -> None:
    started = time.monotonic()
    (diagnostic,) = check(content)
    line, column, message, path = expected
    assert (diagnostic.line, diagnostic.column, diagnostic.path) == (line, column, path)
    assert diagnostic.message.startswith(message), diagnostic.message
    assert time.monotonic() - started < 5  # bounded work, even for a bomb


def test_a_50_mb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "video.yaml"
    with path.open("wb") as stream:  # sparse: 50 MB on paper, nothing on disk
        stream.truncate(50 * 1000 * 1000)
    (diagnostic,) = validate_file(path, "video.yaml")[1]
    assert diagnostic.format() == "video.yaml: $: file is 50.0 MB; a spec file may be at most 1024 KiB"


def test_limit_is_exact(check: Check) -> None:
    padding = MAX_SPEC_BYTES - len(VALID.encode())
    assert check(VALID + "#" * (padding - 1) + "\n") == []
    (diagnostic,) = check(VALID + "#" * padding + "\n")
    assert "a spec file may be at most 1024 KiB" in diagnostic.message


def test_missing_file(tmp_path: Path) -> None:
    (diagnostic,) = validate_file(tmp_path / "nope.yaml", "nope.yaml")[1]
    assert diagnostic.format() == "nope.yaml: $: no such file"


def test_directory(tmp_path: Path) -> None:
    (diagnostic,) = validate_file(tmp_path, "dir")[1]
    assert diagnostic.message == "is a directory, not a spec file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(VALID)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make the read fail as it would for a user

        def refuse(self: Path, *args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "open", refuse)
    (diagnostic,) = validate_file(path, "secret.yaml")[1]
    assert diagnostic.format() == "secret.yaml: $: cannot read the file: Permission denied"


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    (diagnostic,) = validate_file(fifo, "pipe.yaml")[1]
    assert diagnostic.message == "not a regular file"


def test_endless_device_is_refused() -> None:
    (diagnostic,) = validate_file(Path("/dev/zero"), "/dev/zero")[1]
    assert diagnostic.message == "not a regular file"


def test_byte_order_mark_and_crlf_are_read(check: Check) -> None:
    assert check(b"\xef\xbb\xbf" + VALID.encode()) == []
    broken = edit(VALID, "spot: 2", "spot: -1").replace("\n", "\r\n").encode()
    assert problems(check(b"\xef\xbb\xbf" + broken)) == [
        (10, 31, "$.pool.nodes.spot", "-1 is less than the minimum of 0")
    ]


def test_positions_of_keys_values_and_items() -> None:
    text = "a: 1\nb:\n  c: [x, {d: y}]\n  e: |\n    line\n"
    doc = parse_document(text.encode(), "t.yaml")
    assert isinstance(doc, Document)
    assert doc.data == {"a": 1, "b": {"c": ["x", {"d": "y"}], "e": "line\n"}}
    assert doc.keys[("b", "c")] == (3, 3)
    assert doc.values[("b", "c")] == (3, 6)
    assert doc.values[("b", "c", 1)] == (3, 10)
    assert doc.keys[("b", "c", 1, "d")] == (3, 11)
    assert doc.values[("b", "c", 1, "d")] == (3, 14)
    assert doc.block_offset == {("b", "e"): 1}
    assert doc.template_line(("b", "e"), 1) == 5
    assert doc.position(("b", "missing", "deeper")) == doc.values[("b",)]


def test_scalar_types() -> None:
    text = "a: 0o17\nb: 0x1F\nc: yes\nd: 1.5e3\ne: 2024-01-01\nf: ~\ng: !custom text\nh: '007'\ni: true\n"
    doc = parse_document(text.encode(), "t.yaml")
    assert isinstance(doc, Document)
    assert doc.data == {"a": 15, "b": 31, "c": "yes", "d": 1500.0, "e": "2024-01-01", "f": None, "g": "text",
                        "h": "007", "i": True}


def test_read_document_display_name(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("[1]\n")
    diagnostic = read_document(path, "shown/x.yaml")
    assert not hasattr(diagnostic, "data")
    assert diagnostic.format() == "shown/x.yaml:1:1: $: a spec must be a mapping of keys to values, not a list value"


# libyaml's parser (ruamel.yaml.clib) reads specs; what it rejects is read again by the pure
# parser. Both must give the same data, positions and diagnostics.
TRICKY = [
    "a: &x {b: 1, c: [1, 2]}\nd: *x\ne:\n  <<: *x\n  c: 3\n",
    "cmd: |\n  line one\n  line <<two>>\nfolded: >\n  a\n  b\nkept: |+\n  x\n\nstrip: |-\n  y\n",
    "plain: multi\n  line plain\nsingle: 'it''s'\ndouble: \"tab\\tnl\\n\\u00e9\"\n",
    "yes: no\non: off\nn: ~\nnulls: [null, Null, NULL, ~, ]\nbools: [true, True, TRUE, yes, On]\n",
    "ints: [0o17, 0x1F, 017, 1_000, +5, -0]\nfloats: [1.5, .5, 1e3, .inf, -.Inf, .nan, 1_0.5]\n",
    "dates: [2024-01-01, 2024-01-01T10:00:00Z, 2024-1-1]\nbin: !!binary aGk=\nstr: !!str 12\ncustom: !foo bar\n",
    "\"quoted key\": 1\n? complex\n: value\n'single': 2\n12: twelve\ntrue: t\n",
    "unicode: caf\u00e9 \u00fcber \u65e5\u672c\u8a9e \U0001f600\nafter: <<x>> \u00e9\u00e9: 1\nk\u00e9y: v\n",
    "# comment\nlist:\n- a # trailing\n-   b\n- - nested\n  - deeper\n-\n  k: v\n",
    "%YAML 1.2\n---\na: 1\n...\n",
    "%YAML 1.1\n---\na: yes\n",
    "a: 1\r\nb: [x,\r\n  y]\r\n",
    "a: 'unterminated\n",
    "a: [1, 2\n",
    "a: b: c\n",
    "a:\n\t- tab\n",
    "a: @x\n",
    "? [a, b]\n: flow key\n",
    "a: {b: {c: {d: [1, {e: f}]}}}\n",
    "empty:\nvalue: ''\nspace: ' '\n",
    "anchors: &a [&b x, *b]\nmore: *a\n",
    "x: !!int '5'\ny: !!float 1\nz: !!bool yes\n",
    "long: " + "w " * 400 + "\n",
]


def _parsed(raw: bytes) -> object:
    doc = parse_document(raw, "x.yaml")
    if isinstance(doc, Document):
        return (doc.data, doc.values, doc.keys, doc.block_offset, doc.lines)
    return doc


@pytest.mark.parametrize("text", [*TRICKY, *(p.read_text() for p in sorted((Path(__file__).parents[2] / "specs")
                                                                      .glob("*.yaml")))])
def test_libyaml_and_the_pure_parser_read_alike(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchspec.spec import document

    assert document.LIBYAML  # a dependency on CPython: the fast path is the one tested
    fast = _parsed(text.encode())
    monkeypatch.setattr(document, "LIBYAML", False)
    assert fast == _parsed(text.encode())

"""Templating: shell quoting, ``| raw``, dash-leading paths, the sandbox, glob escaping, checks."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from batchspec import templating
from batchspec.globs import compile_glob
from batchspec.templating import (
    Namespace,
    PathValue,
    TemplateError,
    check_variables,
    compile_template,
    is_template,
)


def shell(source: str, **variables: Any) -> str:
    return compile_template(source, shell=True).render(variables)


def text(source: str, **variables: Any) -> str:
    return compile_template(source, shell=False).render(variables)


def glob(source: str, **variables: Any) -> str:
    return compile_template(source, shell=False, glob=True).render(variables)


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("plain.mp4", "plain.mp4"),
        ("a b.mp4", "'a b.mp4'"),
        ("it's", "'it'\"'\"'s'"),
        ("$(rm -rf ~)", "'$(rm -rf ~)'"),
        ("", "''"),
        (3, "3"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, "''"),
    ],
)
def test_values_are_shell_quoted(value: object, rendered: str) -> None:
    assert shell("cmd <<v>>", v=value) == f"cmd {rendered}"
    assert text("<<v>>", v=value) == ("" if value is None else str(value).lower() if isinstance(value, bool)
                                      else str(value))


def test_every_form_of_substitution_is_quoted() -> None:
    params = Namespace({"x": "a b"})
    assert shell("<<params.x>> <<params['x']>> <<params.x ~ ''>> <<params.x | upper>>", params=params) == (
        "'a b' 'a b' 'a b' 'A B'"
    )
    assert shell("<% for v in values %><<v>> <% endfor %>", values=["a;b", "c"]) == "'a;b' c "


def test_raw_and_quote_filters() -> None:
    assert shell("echo <<v | raw>>", v="$HOME && ls") == "echo $HOME && ls"
    assert shell("sh -c <<('echo ' ~ (v | quote)) | raw>>", v="a b") == "sh -c echo 'a b'"
    assert shell("<<v | quote>>", v="x y") == "'x y'"


@pytest.mark.parametrize(
    ("source", "value", "rendered"),
    [
        ("ffmpeg -i <<input>>", "-x.mp4", "ffmpeg -i ./-x.mp4"),
        ("<<input>>", "-x.mp4", "./-x.mp4"),
        ("a;<<input>>", "-x", "a;./-x"),
        ("x <<stem>>.mp3", "-x", "x ./-x.mp3"),
        ("x <<stem>>.mp3", "-a b", "x './-a b'.mp3"),
        ("--file=<<input>>", "-x", "--file=-x"),  # the value of an option, not an option
        ("out_<<stem>>", "-x", "out_-x"),
        ("<<input>>", "x-.mp4", "x-.mp4"),
    ],
)
def test_dash_leading_paths_never_read_as_options(source: str, value: str, rendered: str) -> None:
    assert shell(source, input=PathValue(value), stem=PathValue(value)) == rendered


def test_dash_leading_plain_strings_are_only_quoted() -> None:
    assert shell("x <<v>>", v="-v") == "x -v"  # a parameter may be an option on purpose


def test_nul_in_a_command_is_an_error() -> None:
    with pytest.raises(TemplateError, match="NUL"):
        shell("echo <<v | raw>>", v="a\x00b")


def test_undefined_variable_is_an_error() -> None:
    with pytest.raises(TemplateError, match="undefined variable: 'nope' is undefined"):
        shell("echo <<nope>>")
    with pytest.raises(TemplateError, match="undefined variable"):
        shell("echo <<params.nope>>", params=Namespace({"x": 1}))
    with pytest.raises(TemplateError, match="undefined variable"):
        shell("echo <<nope | upper>>")  # through Jinja proper


@pytest.mark.parametrize(
    "source",
    [
        "<< ''.__class__.__mro__ >>",
        "<< ''.__class__.__mro__ | string >>",
        "<< cycler.__init__.__globals__ >>",
        "<< cycler.__init__.__globals__ | string >>",
        "<< params.__class__ >>",
        "<< params.__init__.__globals__ | list >>",
        "<< input | attr('__class__') >>",
        "<< input['__class__'] >>",
        "<< (input ~ '')['__cla' ~ 'ss__'] >>",
        "<< range.__self__ >>",
        "<< lipsum.__globals__['os'] >>",
        "<% for c in ''.__class__.__mro__[1].__subclasses__() %><<c>><% endfor %>",
        "<< self.__init__ >>",
        "<< config >>",
    ],
)
@pytest.mark.parametrize("shell_env", [True, False])
def test_sandbox_escapes_are_template_errors(source: str, shell_env: bool) -> None:
    template = compile_template(source, shell=shell_env)
    with pytest.raises(TemplateError) as caught:
        template.render({"params": Namespace({"x": 1}), "input": PathValue("a.mp4")})
    assert caught.value.message.startswith(("not allowed in a template: access to attribute", "undefined variable"))


def test_syntax_error_has_a_line() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("a\nb <<x\nc", shell=True)
    assert caught.value.line == 3
    assert "template syntax error" in caught.value.message


def test_glob_environment_escapes_only_path_values() -> None:
    stem = PathValue("Clip [1080p] *?")
    rendered = glob("<<stem>>-*.jpg", stem=stem)
    assert rendered == "Clip [[]1080p] [*][?]-*.jpg"
    assert compile_glob(rendered).match("Clip [1080p] *?-0001.jpg")
    assert not compile_glob(rendered).match("Clip 1 xy-0001.jpg")
    assert glob("<<p.ext>>/<<stem | raw>>", p=Namespace({"ext": "*.png"}), stem=stem) == "*.png/Clip [1080p] *?"
    assert text("<<stem>>", stem=stem) == "Clip [1080p] *?"


@pytest.mark.parametrize(
    "source",
    [
        "ffmpeg -i <<input>> -b:a <<params.bitrate>> <<stem>>.mp3",
        "<<params.bitrate>><<params.bitrate>>",
        "{<<job_id>>} {{}} <<count>> <<input>>",
        "<<params.missing>> <<input>>",
        "<<params.bitrate | upper>> <<input>>",
        "plain text",
        "",
    ],
)
def test_bind_renders_like_the_unbound_template(source: str) -> None:
    constants = {"params": Namespace({"bitrate": "192k"}), "job_id": "job-1", "count": 7}
    variables = {**constants, "input": PathValue("-a b.mp4")}
    template = compile_template(source, shell=True)
    bound = template.bind(constants)
    try:
        expected = template.render(variables)
    except TemplateError as exc:
        with pytest.raises(TemplateError, match=exc.message):
            bound.render(variables)
        return
    assert bound.render(variables) == expected
    if "input" not in source and "|" not in source:
        assert bound.render({}) == expected  # nothing left to look up


def test_templates_are_compiled_once() -> None:
    assert compile_template("<<a>>", shell=True) is compile_template("<<a>>", shell=True)
    assert compile_template("<<a>>", shell=True) is not compile_template("<<a>>", shell=False)


@pytest.mark.parametrize(
    ("source", "expected"), [("a", False), ("<<a>>", True), ("<% if x %><% endif %>", True), ("<# c #>", True),
                             ("a < b >> c", False)]
)
def test_is_template(source: str, expected: bool) -> None:
    assert is_template(source) is expected


KNOWN = {"input": None, "stem": None, "name": None, "params": frozenset({"bitrate", "crf"}), "matrix": frozenset()}


@pytest.mark.parametrize(
    "source",
    [
        "ffmpeg -i <<input>> <<stem>>.mp3",
        "<<in>>",
        "<< params.bitrat >>",
        "<<params.bitrate>> <<params.nope>> <<params.crf>>",
        "<<cycler.__init__.__globals__>>",
        "<<input.__class__.__mro__>>",
        "a\n<<nope>>\n<<params.y>>\n<<nope>>",
        "<<range>> <<dict>>",
        "<< true >> << none >>",
        "<<params.x.y>>",
        "<<matrix.q>>",
        "<< input >> >> x",
        "x << y",
        "<<stem.upper>>",
        "<<   name   >>",
        "<<a\n>> <<b>>",
        "{{ x }} <<input>>",
        "<<_x>> <<input._y>>",
        "<<input>><<input>><<zz>><<zz>>",
        "<< input | upper >>",
        "<% if x %><<y>><% endif %>",
    ],
)
def test_fast_variable_check_agrees_with_jinja(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = check_variables(source, KNOWN, shell=True)
    monkeypatch.setattr(templating, "_check_simple", lambda *args: None)
    slow = check_variables(source, KNOWN, shell=True)
    assert sorted(fast, key=repr) == sorted(slow, key=repr)


def test_check_reports_unknown_filters_and_tests() -> None:
    problems = check_variables("<<input | shellquote>> <% if input is nosuchtest %>x<% endif %>", KNOWN, shell=True)
    assert [(p.message, p.token) for p in problems] == [
        ("unknown filter 'shellquote'; did you mean 'quote'?", "shellquote"),
        ("unknown test 'nosuchtest'", "nosuchtest"),
    ]


def test_check_reports_line_of_each_problem() -> None:
    problems = check_variables("set -e\nffmpeg <<inptu>>\necho <<params.crff>>\n", KNOWN, shell=True)
    assert [(p.line, p.token) for p in problems] == [(2, "inptu"), (3, "crff")]
    assert problems[0].message.startswith("unknown template variable 'inptu'; did you mean 'input'?")


def test_rendered_command_splits_into_the_same_words() -> None:
    names = ["a b", "it's", "x\ny", "-dash", "$(id)", "`id`", "semi;colon", "caf\u00e9"]
    for name in names:
        command = shell("prog <<input>> end", input=PathValue(name))
        expected = "./" + name if name.startswith("-") else name
        assert shlex.split(command) == ["prog", expected, "end"]


def test_templates_cannot_change_shared_values() -> None:
    template = compile_template("<< params.update({'bitrate': '1k'}) >><< params.bitrate >>", shell=False)
    params = Namespace({"bitrate": "192k"})
    with pytest.raises(TemplateError, match="not allowed in a template"):
        template.render({"params": params})
    assert params == {"bitrate": "192k"}


# --- the fast path: templates of text and lookups, lexed, checked and rendered without Jinja ----------

FAST_SOURCES = [
    "ffmpeg -hide_banner -y -i <<input>> -vn -b:a <<params.bitrate>> <<stem>>.mp3",
    "ffmpeg -i << input >> -c copy out/<<name>>",
    'echo "<<name>> is $HOME" > "<<stem>>.txt"',
    "echo '<<name>>' # about <<name>>",
    "cat > <<stem>>.txt <<EOF\nname: <<name>>\nEOF\n",
    "cat > x <<'EOF'\n<<name>>\nEOF",
    "x=<<name>>; mv -- <<input>> <<dir>>/<<stem>><<ext>>",
    "<<stem>><<ext>> and <<item.path>>",
    "[[ <<params.n>> -gt 1 ]] && echo <<matrix.crf>>",
    "echo $(( <<params.n>> + 1 ))",
    "tar czf <<stem>>.tgz <<input>>\r\n",
    "no values at all\n\n",
    "{braces} <<name>> {{double}}",
    "<<stem>>.mp3",
    "out/<<dir>>/<<name>>",
    "<<params.bitrate>>",
    "<<undefined_name>>",
    "<<params.missing>>",
    "<<input.encode>>",
    "<<params.table>>",
]
HOSTILE = ["plain.mp4", "-rf", "--help", "pipe:0.mp4", "concat:a|b", "a b.mp4", "it's", "$(touch pwned)", "`id`",
           "a\nb", "caf\u00e9 \u65e5.mp4", "[x]*?.mp4", "$HOME", "${x}", "-", "", "a\\b", "sub/dir/f.mp4", "."]


def _jinja(source: str, kind: str) -> templating.Template:
    """``source`` compiled for Jinja's full sandboxed render (the path every template took before)."""
    fast = compile_template(source, shell=kind == "shell", glob=kind == "glob")
    template = templating.environment(kind).from_string(source)
    return templating.Template(source, fast.shell, template, None, (), kind)


def _outcome(template: templating.Template, variables: dict[str, Any]) -> str:
    try:
        return template.render(variables)
    except TemplateError as exc:
        return f"error: {exc.message}"


@pytest.mark.parametrize("source", FAST_SOURCES)
@pytest.mark.parametrize("kind", ["shell", "text", "glob"])
def test_the_fast_path_renders_exactly_as_jinja(source: str, kind: str) -> None:
    try:
        fast = compile_template(source, shell=kind == "shell", glob=kind == "glob")
    except TemplateError:
        return  # rejected at compile time (a value where no quoting is safe), on both paths
    assert fast._template is None and fast._parts is not None  # the fast path, no Jinja
    jinja = _jinja(source, kind)
    for i, value in enumerate(HOSTILE):
        other = HOSTILE[-1 - i]
        for wrap in (PathValue, str):  # the planner's values (Raw comes only from | raw, inside Jinja)
            variables: dict[str, Any] = {
                "input": wrap(value), "name": wrap(other), "stem": wrap(value), "ext": wrap(".mp4"),
                "dir": wrap(other), "item": Namespace({"path": PathValue(value)}),
                "matrix": Namespace({"crf": i}),
                "params": Namespace({"bitrate": value, "n": i if wrap is str else value, "table": {"a": 1}}),
            }
            assert _outcome(fast, variables) == _outcome(jinja, variables), (value, wrap)
            bound = fast.bind({"params": variables["params"]})
            assert _outcome(bound, variables) == _outcome(jinja, variables), (value, wrap)


def test_values_of_other_types_render_as_in_jinja() -> None:
    for kind in ("shell", "text", "glob"):
        fast = compile_template("a <<x>> b", shell=kind == "shell", glob=kind == "glob")
        jinja = _jinja("a <<x>> b", kind)
        for value in (1, 2.5, True, False, None, [1], {"a": 1}, Namespace({"a": 1}), str.upper, object()):
            assert _outcome(fast, {"x": value}) == _outcome(jinja, {"x": value}), (kind, value)


@pytest.mark.parametrize("source", [
    *FAST_SOURCES, "<<<x>>", "a << b", "<<x>> <<", "<< true >>", "<<a.if>>", "<<-x>>", "<<x->>", "<<a.0>>",
    "<% if x %><<x>><% endif %>", "<# c #><<x>>", "<<x|raw>>", "<<x | quote>>", "<< a . b >>", "x\r<<y>>\r\n",
    "\n\n<<a>>\n\n", "<<\ta\t>>", "<< _x >>", "<<a>><<b>>",
])
def test_the_fast_lexer_reads_templates_as_jinja_reads_them(source: str) -> None:
    lexed = templating.lex_simple(source)
    for kind in ("shell", "text"):
        try:
            ast = templating.environment(kind).parse(source)
        except Exception:  # a syntax error: the fast lexer must not accept it
            assert lexed is None
            continue
        if lexed is not None:
            assert templating._lexed_parts(*lexed) == templating._simple_parts(ast)
            assert lexed == templating._lex_shell(source)


def test_jinjas_globals_are_known_to_the_fast_checks() -> None:
    assert set(templating.environment("text").globals) == templating.JINJA_GLOBALS

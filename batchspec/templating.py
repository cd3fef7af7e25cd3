"""Jinja templating for spec fields: sandboxed, strict, and shell-safe for commands.

Spec templates use ``<< value >>``, ``<% block %>`` and ``<# comment #>`` so they never clash
with shell syntax (``${VAR}``, ``{a,b}``) or YAML. Three environments exist:

* the **shell** environment (``task.command``, ``pool.start_task.command``) quotes every
  interpolated value for the shell context it lands in (a bare word, ``"…"``, ``'…'``, a
  here-document, a comment; see :func:`scan_shell`) unless the template says ``| raw``, rejects
  the places where no quoting can keep a value from running as code (the script of ``bash -c``,
  ``eval``, an awk program, ``${…}``, backticks), and renders a path value that begins a shell
  word and starts with ``-`` or looks like a protocol (``pipe:0.mp4``) as ``./…``, so a file
  name can never become an option or run code;
* the **glob** environment (``task.outputs``, which are glob patterns) escapes the glob
  characters ``*``, ``?`` and ``[`` in path values, so ``Clip [1].mp4`` yields an output pattern
  that matches ``Clip [1].mp3`` and nothing else, and ``$`` in every value (a Batch node expands
  ``$NAME`` in output patterns);
* the **text** environment (ids, env values) renders values as they are.

A value must be text, a number or a path: a method (``<< input.encode >>``), a mapping or a
list is an error, never its Python repr.

All are :class:`batchspec.sandbox.BoundedEnvironment` (Jinja's immutable sandbox with bounded
work and sizes) with ``StrictUndefined``: an unknown variable, an attempt to reach Python
internals, to change shared values (one task's render must not alter the next's ``params``) or
to go past a limit (see :mod:`batchspec.sandbox`) is an error, never a crash, a hang or an escape.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import re
import shlex
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from .globs import escape as escape_glob
from .limits import MAX_TEXT, LimitError, budget, need

if TYPE_CHECKING:
    import jinja2
    import jinja2.nodes
    from jinja2.runtime import Context

    from .sandbox import BoundedEnvironment

# Jinja is imported when a template first needs it (blocks, filters, expressions): templates
# that are text and plain ``<< name.attr >>`` lookups, nearly all of them, are validated and
# rendered without it, and importing it costs more than validating a whole spec.


class Raw(str):
    """A value the template marked ``| raw``: inserted into a command without quoting."""

    __slots__ = ()


class Namespace(dict[str, Any]):
    """A read-only mapping whose keys also read as attributes (``params.bitrate``).

    Jinja reads ``a.b`` as ``getattr(a, "b")`` first and falls back to ``a["b"]``; on a plain
    dict that fallback raises and catches an exception per lookup, the bulk of the cost of a
    short template. Keeping the keys in the instance ``__dict__`` too makes it a plain lookup.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.__dict__.update(values)


class PathValue(str):
    """A path-like variable (input, name, stem, dir): guarded against reading as an option."""

    __slots__ = ()


def _text(value: Any) -> str:
    """A value as template output: text, a number or a path; anything else is an error."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if _is_undefined(value):  # an unknown name, or what the sandbox refused
        value._fail_with_undefined_error()
    raise TemplateError(_not_a_value(value))


def _is_undefined(value: Any) -> bool:
    """Is ``value`` Jinja's stand-in for an unknown name (only Jinja, once imported, makes one)?"""
    jinja = sys.modules.get("jinja2")
    return jinja is not None and isinstance(value, jinja.Undefined)


def _not_a_value(value: Any) -> str:
    if callable(value):
        what = "a method or function, not a value (write << input >>, not << input.encode >>; call it with ())"
    elif isinstance(value, Mapping):
        what = "a mapping, not a value (use one of its keys, e.g. << item.path >>)"
    elif isinstance(value, Iterable):
        what = "a list, not a value (pick an element, or join them: << values | join(' ') >>)"
    else:
        what = f"a {type(value).__name__}, not a value"
    return f"a template value must be text, a number or a path; this one is {what}"


def _finalize_text(value: Any) -> str:
    return value if type(value) is str else _text(value)


# Values in a rendered Jinja-path shell command are placeholders (NUL, index, \x01) until the
# shell context of each is known; NUL cannot occur in a file name or in a command exec can run.
_MARK = re.compile("\x00([0-9]+)\x01")
_pending = threading.local()  # the values of the shell command being rendered on this thread


def _finalize_shell(value: Any) -> str:
    if isinstance(value, Raw):  # | raw (and | quote): the text goes in as it is
        return str.__str__(value)
    values: list[Any] = _pending.values
    values.append(value)
    return f"\x00{len(values) - 1}\x01"


def _finalize_glob(value: Any) -> str:
    if type(value) is PathValue and not _GLOB_OR_NODE.search(value):  # a plain file name: as it is
        return value
    if isinstance(value, PathValue):  # a file name: its glob characters are literal
        return _escape_node(escape_glob(value))
    return _escape_node(_text(value))


_GLOB_OR_NODE = re.compile(r"[*?\[$]")  # what escape_glob or _escape_node would change


def _escape_node(pattern: str) -> str:
    """A Batch node expands ``$NAME`` and ``${NAME}`` in an output file pattern; ``[$]`` is a
    one-character set that matches a literal ``$`` and is never expanded."""
    return pattern.replace("$", "[$]") if "$" in pattern else pattern


def _raw(value: Any) -> Raw:
    return Raw(_text(value))


def _shell_quote(value: Any) -> Raw:
    """``<< x | quote >>``: explicit quoting, e.g. inside a ``| raw`` expression's parts."""
    return Raw(shlex.quote(_text(value)))


def _make_env(finalize: Callable[[Any], Any]) -> BoundedEnvironment:
    import jinja2

    from .sandbox import BoundedEnvironment  # Jinja's sandbox, bounded: imported with Jinja

    env = BoundedEnvironment(
        variable_start_string="<<",
        variable_end_string=">>",
        block_start_string="<%",
        block_end_string="%>",
        comment_start_string="<#",
        comment_end_string="#>",
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        finalize=finalize,
    )
    env.add_filter("raw", _raw)
    env.add_filter("quote", _shell_quote)
    return env


#: The finalize function of each environment: how a value becomes text in its kind of field.
_FINALIZE: dict[str, Callable[[Any], str]] = {"shell": _finalize_shell, "text": _finalize_text,
                                              "glob": _finalize_glob}


@cache
def environment(kind: str) -> BoundedEnvironment:
    """The Jinja environment of a kind of field: "shell", "text" or "glob" (made on first use)."""
    return _make_env(_FINALIZE[kind])


#: Names Jinja defines in every environment (range, dict, ...): a template may use them.
JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace"})


class TemplateError(Exception):
    """A template could not be parsed or rendered; ``line`` is 1-based within the template."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _template_error(exc: Exception, template: jinja2.Template | None) -> TemplateError | None:
    """The message for an error raised while rendering ``template`` (None: not a template's
    fault). Called while the error is handled (its traceback gives the template's line)."""
    jinja = sys.modules.get("jinja2")  # a Jinja error can only come from Jinja, once imported
    if jinja is not None:
        if isinstance(exc, jinja.UndefinedError):
            return TemplateError(f"undefined variable: {exc.message}")
        if isinstance(exc, jinja.exceptions.SecurityError):
            return TemplateError(f"not allowed in a template: {exc}")
        if isinstance(exc, jinja.TemplateError):
            return TemplateError(str(exc), getattr(exc, "lineno", None))
    if isinstance(exc, LimitError):
        return TemplateError(str(exc), _template_line(template) if template is not None else None)
    if isinstance(exc, RecursionError):
        return TemplateError("macros or recursive loops call themselves too deeply")
    if isinstance(exc, TypeError | ValueError | ArithmeticError | LookupError | AttributeError):
        # What a filter or method says of a value it cannot take (<< 1|xmlattr >>).
        return TemplateError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, MemoryError):
        return TemplateError("the template needs more memory than this machine has")
    return None


# A template that is only text and ``<< name >>`` / ``<< name.attr >>`` substitutions (nearly
# every real one) renders through a precomputed list of parts instead of Jinja's generated code:
# the same sandboxed attribute access and finalize function, without a Context per call.
_Sub = tuple[str, tuple[str, ...]]
_Part = str | _Sub


@dataclass(frozen=True)
class Template:
    """A compiled spec template."""

    source: str
    shell: bool
    _template: jinja2.Template | None  # Jinja's compiled template; None on the fast path
    _parts: tuple[_Part, ...] | None  # the fast path, when the template is simple enough
    _slots: tuple[Slot, ...] = ()  # shell fast path: the shell context of each substitution
    kind: str = "text"  # the environment: "shell", "text" or "glob"
    # Derived from _parts: the text as a str.format string with one {} per substitution.
    _format: str = field(init=False, repr=False, compare=False)
    _subs: tuple[_Sub, ...] = field(init=False, repr=False, compare=False)
    _finalize: Callable[[Any], str] = field(init=False, repr=False, compare=False)
    # The whole render in one call, when every value can be read and quoted on its own.
    _direct: Callable[[Mapping[str, Any]], str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self._parts or ()
        text = "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}" for p in parts)
        object.__setattr__(self, "_format", text)
        object.__setattr__(self, "_subs", tuple(p for p in parts if not isinstance(p, str)))
        object.__setattr__(self, "_finalize", _FINALIZE[self.kind])
        direct = None
        if self._parts is not None and not (self.shell and any(slot.word_start for slot in self._slots)):
            finalizers = [_quoter(slot) for slot in self._slots] if self.shell else [self._finalize] * len(self._subs)
            direct = _direct_render(_texts(self._parts),
                                    [(_getter(*sub), f) for sub, f in zip(self._subs, finalizers, strict=True)])
        object.__setattr__(self, "_direct", direct)

    @property
    def variables(self) -> frozenset[str] | None:
        """The variables a rendering reads (None when Jinja renders it: not known ahead)."""
        return None if self._parts is None else frozenset(name for name, _ in self._subs)

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render with ``variables`` (Jinja's globals such as ``range`` are added as needed)."""
        if self._direct is not None:
            try:
                out = self._direct(variables)
            except Exception:  # rendered again below, to report the error as every path does
                pass
            else:
                return self._checked(out)
        try:
            if self._parts is None:
                out = self._render_jinja(variables)
            elif self.shell:
                out = self._format.format(*shell_values(self._values(variables), self._slots))
            else:
                finalize = self._finalize
                out = self._format.format(*[finalize(v) for v in self._values(variables)])
        except TemplateError:
            raise
        except Exception as exc:
            error = _template_error(exc, self._template)
            if error is None:
                raise
            raise error from None
        return self._checked(out)

    def _checked(self, out: str) -> str:
        """A rendered text, refused where no text may go (on every path of :meth:`render`)."""
        if len(out) > MAX_TEXT:
            raise TemplateError(f"renders to {len(out):,} characters, more than the limit of {MAX_TEXT:,} (128 KiB, "
                                "what Linux passes as one argument: bash -c gets the command as one)")
        if self.shell and "\x00" in out:
            raise TemplateError("the rendered command contains a NUL character")
        return out

    def _render_jinja(self, variables: Mapping[str, Any]) -> str:
        from jinja2.runtime import Context

        template = self._template
        assert template is not None
        env = template.environment
        # One merged dict as the context's parent: Template.render copies the globals ChainMap
        # into fresh dicts and sets on every call.
        context = Context(env, {**env.globals, **variables}, template.name, template.blocks)
        if not self.shell:
            return _bounded_render(template, context)
        # Values come out as placeholders; once the whole command is known, each is quoted for
        # the shell context it landed in (blocks and | raw text can open or close quotes).
        values: list[Any] = []
        _pending.values = values
        try:
            out = _bounded_render(template, context)
        finally:
            _pending.values = None
        pieces = _MARK.split(out)
        texts, order = pieces[0::2], [values[int(i)] for i in pieces[1::2]]
        quoted = shell_values(order, tuple(scan_shell(texts)))
        return "".join(itertools.chain.from_iterable(itertools.zip_longest(texts, quoted, fillvalue="")))

    def _values(self, variables: Mapping[str, Any]) -> list[Any]:
        return [self._value(name, attrs, variables) for name, attrs in self._subs]

    def _value(self, name: str, attrs: tuple[str, ...], variables: Mapping[str, Any]) -> Any:
        try:
            value = variables[name]
        except KeyError:
            raise TemplateError(f"undefined variable: '{name}' is undefined") from None
        for attr in attrs:
            # A Namespace key is user data, never a Python internal: no sandbox check needed.
            if type(value) is Namespace and attr in value:
                value = value[attr]
            else:  # anything else goes through the sandbox, as in Jinja's own rendering
                value = environment(self.kind).getattr(value, attr)
                if _is_undefined(value):
                    value._fail_with_undefined_error()
        return value

    def bind(self, constants: Mapping[str, Any]) -> Template:
        """This template with the substitutions that read only ``constants`` rendered once.

        The planner binds the variables every task shares (``params``, ``job_id``, ``count``),
        so per task only the per-input values are looked up. A substitution that fails here is
        left as it is, to fail (with its usual message) when a task renders it.
        """
        if not self._parts:
            return self
        parts: list[_Part] = []
        slots: list[Slot] = []
        # What became of each substitution: its new index, or "" / "text" when bound to an
        # empty / non-empty value (which decides whether a later value still begins a word).
        fate: list[int | str] = []
        for part in self._parts:
            if isinstance(part, str):
                text = part
            else:
                index = len(fate)
                bound: str | None = None
                if part[0] in constants:
                    with contextlib.suppress(Exception):  # rendered again, and reported, per task
                        value = self._value(*part, constants)
                        plain = _text(value)
                        bound = (shell_values([value], (self._slots[index],))[0] if self.shell
                                 else self._finalize(value))
                if bound is None:
                    fate.append(len(slots) if self.shell else index)
                    if self.shell:
                        slots.append(self._slots[index])
                    parts.append(part)
                    continue
                fate.append("text" if plain else "")
                text = bound
            if parts and isinstance(parts[-1], str):
                parts[-1] = f"{parts[-1]}{text}"
            else:
                parts.append(text)
        return replace(self, _parts=tuple(parts), _slots=tuple(_renumber(s, fate) for s in slots))


class _Indirect(Exception):
    """A value that needs the sandbox's attribute lookup (see :meth:`Template._values`)."""


def _getter(name: str, attrs: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    """Reads ``name.attr...`` from the variables when that is a plain lookup: the variable, then
    Namespace keys (user data, never Python internals); anything else raises."""
    if not attrs:
        return operator.itemgetter(name)

    def get(variables: Mapping[str, Any]) -> Any:
        value = variables[name]
        for attr in attrs:
            if type(value) is not Namespace or attr not in value:
                raise _Indirect
            value = value[attr]
        return value

    return get


def _direct_render(texts: list[str], subs: list[tuple[Callable[[Mapping[str, Any]], Any], Callable[[Any], str]]]
                   ) -> Callable[[Mapping[str, Any]], str]:
    """A template's render as one function: the literal ``texts`` with, between each two, a
    value read by its getter and made text by its finalizer (quoting, glob escapes). Joined,
    not str.format'ed: format parses its template anew on every call."""
    join = "".join
    if not subs:
        (text,) = texts
        return lambda variables: text
    if len(subs) == 1:
        ((get0, fin0),) = subs
        t0, t1 = texts
        return lambda variables: join((t0, fin0(get0(variables)), t1))
    if len(subs) == 2:
        (get0, fin0), (get1, fin1) = subs
        t0, t1, t2 = texts
        return lambda variables: join((t0, fin0(get0(variables)), t1, fin1(get1(variables)), t2))

    def render(variables: Mapping[str, Any]) -> str:
        out = [texts[0]]
        for (get, fin), text in zip(subs, texts[1:], strict=True):
            out += (fin(get(variables)), text)
        return join(out)

    return render


def _bounded_render(template: jinja2.Template, context: Context) -> str:
    """The template's text, within the sandbox's work budget and length limit."""
    pieces: list[str] = []
    total = 0
    with budget():
        for piece in template.root_render_func(context):
            total += len(piece)
            need(total, "the rendered template")
            pieces.append(piece)
    return "".join(pieces)


def _template_line(template: jinja2.Template) -> int | None:
    """The template line being rendered when the current exception was raised, if known."""
    tb = sys.exc_info()[2]
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _renumber(slot: Slot, fate: list[int | str]) -> Slot:
    if not slot.word_start:
        return slot
    indices: list[int] = []
    for j in slot.word_start:
        if fate[j] == "text":
            return replace(slot, word_start=None)
        if isinstance(fate[j], int):
            indices.append(int(fate[j]))
    return replace(slot, word_start=tuple(indices))


# --- shell contexts ------------------------------------------------------------------------
#
# Every value in a command is quoted for the place it lands in: a bare word, "…", '…', a
# here-document, a comment. scan_shell reads the literal text around the values as bash would
# and says, for each value, where it is; shell_values quotes each value for that place. Places
# where no quoting can keep a value from running as code (the script of `bash -c`, `eval`, an
# awk program, $(( … )) with text, ${ … }, `…`) are rejected: at validation for the spec's text,
# at planning for what blocks and | raw produced.

WORD, DOUBLE, SINGLE, HEREDOC, HEREDOC_LITERAL, COMMENT = (
    "word", "double", "single", "heredoc", "heredoc-literal", "comment")


@dataclass(frozen=True)
class Slot:
    """Where one value sits in a shell command."""

    context: str  # WORD, DOUBLE, SINGLE, HEREDOC, HEREDOC_LITERAL or COMMENT
    # The earlier values that must all render empty for this one to begin a shell word (where a
    # dash-leading path would read as an option); None when text of the word comes before it.
    word_start: tuple[int, ...] | None = None
    problem: str | None = None  # why no value may go here, with the fix
    numeric: bool = False  # bash evaluates it as arithmetic: only an integer may go here


_DOUBLE_SPECIAL = re.compile(r'[\\$`"]')  # what a backslash escapes inside "…"
_HEREDOC_SPECIAL = re.compile(r"[\\$`]")  # ... and in an unquoted here-document
_INTEGER = re.compile(r"[-+]?[0-9]+")


def needs_dot_slash(path: str) -> bool:
    """A path a program could read as something else when it begins an argument: an option
    (``-x``) or a protocol (``pipe:0.mp4``, ``concat:a|b.mp4`` for ffmpeg, ``http:x``)."""
    return path[:1] == "-" or ":" in path.partition("/")[0]


def quote_value(text: str, slot: Slot) -> str:
    """``text`` quoted for its place in a shell command (see :class:`Slot`)."""
    if slot.problem:
        raise TemplateError(f"a value {slot.problem}")
    if slot.numeric and not _INTEGER.fullmatch(text):
        raise TemplateError(f"'{text}' is not an integer, and bash evaluates this place as arithmetic")
    context = slot.context
    if context == WORD:
        return shlex.quote(text)
    if context == DOUBLE:
        return _DOUBLE_SPECIAL.sub(r"\\\g<0>", text)
    if context == SINGLE:
        return text.replace("'", "'\\''")
    if context == COMMENT:
        return text.replace("\n", " ")
    if "\n" in text:
        raise TemplateError("a value with a line break cannot go into a here-document (it could end it early)")
    return _HEREDOC_SPECIAL.sub(r"\\\g<0>", text) if context == HEREDOC else text


def shell_values(values: Iterable[Any], slots: tuple[Slot, ...]) -> list[str]:
    """Each value as text quoted for its slot; a path value that begins a word and could read as
    an option or a protocol gets ``./`` in front."""
    plain: list[str] = []  # each value's own text: is anything in front of a value in its word?
    out: list[str] = []
    for value, slot in zip(values, slots, strict=True):
        if isinstance(value, Raw):
            text = str.__str__(value)
            plain.append(text)
            out.append(text)
            continue
        text = value if type(value) is str else _text(value)
        if (isinstance(value, PathValue) and slot.word_start is not None and needs_dot_slash(text)
                and all(plain[j] == "" for j in slot.word_start)):
            text = "./" + text
        plain.append(text)
        out.append(quote_value(text, slot))
    return out


def _quoter(slot: Slot) -> Callable[[Any], str]:
    """:func:`shell_values` for one value whose slot no other value shares a word with."""
    begins_word = slot.word_start is not None
    plain_word = slot.context == WORD and slot.problem is None and not slot.numeric
    quote = shlex.quote

    def quoted(value: Any) -> str:
        if type(value) is PathValue and plain_word:  # a file name as a shell word: most values
            return quote("./" + value if begins_word and needs_dot_slash(value) else value)
        if isinstance(value, Raw):
            return str.__str__(value)
        text = value if type(value) is str else _text(value)
        if begins_word and isinstance(value, PathValue) and needs_dot_slash(text):
            text = "./" + text
        return shlex.quote(text) if plain_word else quote_value(text, slot)

    return quoted


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "fish", "su", "runuser"})
_EVALS = frozenset({"eval", "watch"})
# Interpreters and the option letters whose argument is code to run.
_CODE_OPTIONS = {"python": "c", "perl": "eE", "ruby": "e", "node": "ep", "nodejs": "ep", "php": "r",
                 "Rscript": "e", "lua": "e", "tclsh": ""}
_AWKS = frozenset({"awk", "gawk", "mawk", "nawk"})
_ARITHMETIC_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})


def _program(word: str) -> str:
    name = word.rpartition("/")[2]
    return "python" if re.fullmatch(r"python[0-9.]*", name) else name


_FREE, _ARGUMENT, _DASHES = "free", "argument", "dashes"  # where awk's option parsing stands


def _awk_step(state: str, word: str) -> str | None:
    """awk's option parsing after one more word; None once the program text has been read."""
    if state == _ARGUMENT:  # the value of -F or -v
        return _FREE
    if state == _DASHES or word[:1] != "-" or word == "-" or word.startswith("-f"):
        return None  # the program (or -f FILE instead of one)
    return _DASHES if word == "--" else _ARGUMENT if word in ("-F", "-v") else _FREE


class _Words:
    """The words of a simple command so far, and what would run the next one as code.

    Each word is looked at once, so a command with thousands of values is checked in linear
    time: the shell (``bash -c``) and interpreter (``python -c``) that could take the next word
    as code can only be the last word before the trailing options, and awk's option parsing is
    followed as a state per awk word.
    """

    def __init__(self) -> None:
        self.words: list[str] = []
        self.eval_at = -1  # the first eval or watch
        self.shell_at = -1  # the last word that is not a short option (-x or +x)
        self.shell_c = False  # ... followed by an option with c in it (-c, -ec, -lc)
        self.code_at = -1  # the last word that does not start with -
        self.awks: dict[str, int] = {}  # awk's parse state -> the earliest awk word in it
        self.first = -1  # the first shell, interpreter or awk (for a here-document's reader)
        self.operand: str | None = None  # ... its first operand
        self.dash_s = False  # ... and whether -s follows it

    def __bool__(self) -> bool:
        return bool(self.words)

    def append(self, word: str) -> None:
        j = len(self.words)
        self.words.append(word)
        name = _program(word)
        if self.eval_at < 0 and name in _EVALS:
            self.eval_at = j
        if word[:1] in "-+" and word[:2] != "--":
            self.shell_c = self.shell_c or (word[:1] == "-" and "c" in word)
        else:
            self.shell_at, self.shell_c = j, False
        if word[:1] != "-":
            self.code_at = j
        awks: dict[str, int] = {}
        for state, at in self.awks.items():
            after = _awk_step(state, word)
            if after is not None:
                awks[after] = min(at, awks.get(after, at))
        if name in _AWKS:
            awks.setdefault(_FREE, j)
        self.awks = awks
        if self.first >= 0:
            if self.operand is None and (word[:1] != "-" or word == "-"):
                self.operand = word
            self.dash_s = self.dash_s or word == "-s"
        elif name in _SHELLS or name in _CODE_OPTIONS or name in _AWKS:
            self.first = j

    def runner(self) -> str | None:
        """The program that would run the next word as code, if any: ``bash -c`` (and other
        shells), ``eval``, ``watch``, ``trap``, interpreters' inline-code options (``python -c``,
        ``perl -e``), awk programs. A later argument (``bash -c '…' _ <<x>>``, read as ``$1``) is
        data, so it is fine."""
        words, last = self.words, len(self.words) - 1
        found: list[tuple[int, str]] = []
        if self.eval_at >= 0:
            found.append((self.eval_at, _program(words[self.eval_at])))
        if last >= 0 and _program(words[last]) == "trap":
            found.append((last, "trap"))
        if self.shell_at >= 0 and self.shell_c and _program(words[self.shell_at]) in _SHELLS:
            found.append((self.shell_at, f"{_program(words[self.shell_at])} -c"))
        if 0 <= self.code_at < last:
            name, option = _program(words[self.code_at]), words[last]
            letters = _CODE_OPTIONS.get(name)
            if letters and option[:2] != "--" and option[-1] in letters:
                found.append((self.code_at, f"{name} {option}"))
        found += [(at, _program(words[at])) for state, at in self.awks.items() if state != _ARGUMENT]
        return min(found)[1] if found else None

    def reads_code(self) -> str | None:
        """The shell or interpreter that reads its standard input as code, when these words
        start it (it has no operand, or ``-``, or ``-s``)."""
        if self.first < 0:
            return None
        if self.operand is None or self.operand == "-" or self.dash_s:
            return _program(self.words[self.first])
        return None


def _fix(runner: str) -> str:
    """How to get a value to ``runner`` as data instead of code."""
    name = runner.split(maxsplit=1)[0]
    if name in _SHELLS:
        return f"pass it as an argument after the script instead: {runner} '… \"$1\" …' _ << value >>"
    if name in _AWKS:
        return f"pass it as a variable instead: {name} -v v=<< value >> '… v …'"
    if name in _CODE_OPTIONS:
        return f"pass it as an argument after the code instead ({runner} '…' << value >>), or in task.env"
    return f"run the command directly instead of through {name}"


@dataclass
class _Command:
    """Bash's top level, or the inside of $( … ), <( … ) or [[ … ]]: words and commands."""

    closer: str | None = None  # ")" or "]]"; None at the top level
    depth: int = 0  # open "(" within it
    words: _Words = field(default_factory=_Words)  # finished words of the current simple command
    word: list[str] = field(default_factory=list)  # the current word, quotes removed, a value as NUL
    in_word: bool = False
    literal: bool = False  # the current word has text of its own (not only quotes and values)
    values: list[int] = field(default_factory=list)  # values in the current word so far
    heredocs: list[_Heredoc] = field(default_factory=list)  # announced on the current line
    test_values: list[int] = field(default_factory=list)  # in [[ … ]]: its values
    arithmetic: bool = False  # in [[ … ]]: it compares numbers


@dataclass
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool
    code: str | None  # the program that reads it as code
    line: list[str] = field(default_factory=list)
    has_value: bool = False  # the current line has a value (so it is not the delimiter)


@dataclass
class _Region:
    """A quoted or otherwise delimited region: "…", '…', $'…', `…`, ${…}, $((…)), # comment."""

    kind: str
    depth: int = 0


_REGION_PROBLEMS = {
    "`": "is inside `…`, where quoting cannot be done safely; use $( … ) instead",
    "${": "is inside ${…}, where it cannot be quoted; set a variable first (v=<< x >>) and use ${v…} instead",
    "$'": "is inside $'…', where it cannot be quoted; use '…' or \"…\" instead",
}


class _Scanner:
    """Reads shell text piece by piece, a value between each two pieces (see scan_shell)."""

    def __init__(self) -> None:
        self.stack: list[_Command | _Region | _Heredoc] = [_Command()]
        self.slots: list[Slot] = []
        self.after = ""  # "$" or "\\" when the text so far ends with one (right before a value)

    # --- bookkeeping ---------------------------------------------------------------------

    def command(self) -> _Command | None:
        """The command whose word is being read, through quotes; None in a heredoc or region."""
        for frame in reversed(self.stack):
            if isinstance(frame, _Command):
                return frame
            if not (isinstance(frame, _Region) and frame.kind in ('"', "'")):
                return None
        return None

    def literal(self, char: str) -> None:
        command = self.command()
        if command is not None:
            command.in_word = command.literal = True
            command.word.append(char)

    def end_word(self, command: _Command) -> None:
        if not command.in_word:
            return
        word = "".join(command.word)
        command.words.append(word)
        command.word, command.in_word, command.literal, command.values = [], False, False, []
        if command.closer == "]]" and word in _ARITHMETIC_TESTS:
            command.arithmetic = True

    def end_command(self, command: _Command) -> None:
        self.end_word(command)
        command.words = _Words()

    def push(self, frame: _Command | _Region) -> None:
        command = self.command()
        if command is not None:  # $( … ) or "…" in a word: the word goes on
            command.in_word = True
            if not (isinstance(frame, _Region) and frame.kind in ('"', "'", "$'")):
                command.literal = True
        self.stack.append(frame)

    def pop(self) -> None:
        frame = self.stack.pop()
        if isinstance(frame, _Command) and frame.closer == "]]" and frame.arithmetic:
            for i in frame.test_values:
                self.slots[i] = replace(self.slots[i], numeric=True)

    # --- a value ---------------------------------------------------------------------------

    def value(self) -> None:
        frame = self.stack[-1]
        command = self.command()
        problem: str | None = None
        word_start: tuple[int, ...] | None = None
        numeric = False
        if isinstance(frame, _Heredoc):
            context = HEREDOC_LITERAL if frame.quoted else HEREDOC
            frame.has_value = True
            if frame.code:
                problem = (f"is in a here-document that {frame.code} reads as code, so the value would run; "
                           "pass it as an argument or in task.env instead")
        elif isinstance(frame, _Region) and frame.kind == "#":
            context = COMMENT
        elif isinstance(frame, _Region) and frame.kind not in ('"', "'"):
            context = WORD
            numeric = frame.kind == "(("
            problem = _REGION_PROBLEMS.get(frame.kind)
        else:
            context = DOUBLE if isinstance(frame, _Region) and frame.kind == '"' else (
                SINGLE if isinstance(frame, _Region) else WORD)
        if command is not None:
            word_start = None if command.literal else tuple(command.values)
            runner = command.words.runner()
            if runner and problem is None:
                problem = f"is part of the code that `{runner}` runs, so the value would run as code; {_fix(runner)}"
            command.values.append(len(self.slots))
            command.in_word = True
            command.word.append("\x00")
            if command.closer == "]]":
                command.test_values.append(len(self.slots))
        if self.after == "$" and problem is None:
            problem = "follows '$', so it would be read as (part of) a variable name; put it apart from the '$'"
        elif self.after == "\\" and context != SINGLE and problem is None:
            problem = "follows a backslash, which would escape its first character; remove the backslash"
        self.slots.append(Slot(context, word_start, problem, numeric))

    # --- text ------------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        self.after = ""
        i, n = 0, len(text)
        while i < n:
            frame = self.stack[-1]
            if isinstance(frame, _Command):
                i = self.command_char(frame, text, i)
            elif isinstance(frame, _Heredoc):
                i = self.heredoc_char(frame, text, i)
            else:
                i = self.region_char(frame, text, i)

    def dollar(self, text: str, i: int, *, quoted: bool) -> int:
        """``$`` at ``text[i]``: an expansion opens, or a plain ``$``."""
        ahead = text[i + 1 : i + 3]
        if i + 1 == len(text):
            self.after = "$"
            self.literal("$")
            return i + 1
        if ahead == "((":
            self.push(_Region("((", 2))
            return i + 3
        if ahead[:1] == "(":
            self.push(_Command(")"))
            return i + 2
        if ahead[:1] == "{":
            self.push(_Region("${", 1))
            return i + 2
        if ahead[:1] in ("'", '"') and not quoted:
            self.push(_Region("$'" if ahead[:1] == "'" else '"'))
            return i + 2
        self.literal("$")
        return i + 1

    def command_char(self, cmd: _Command, text: str, i: int) -> int:
        c = text[i]
        if c == "\\":
            if i + 1 == len(text):
                self.after = "\\"
                cmd.in_word = cmd.literal = True
                return i + 1
            if text[i + 1] != "\n":
                self.literal(text[i + 1])
            return i + 2
        if c in " \t":
            self.end_word(cmd)
        elif c == "\n":
            self.end_command(cmd)
            self.stack.extend(reversed(cmd.heredocs))  # the first announced body comes first
            cmd.heredocs = []
        elif c == "#" and not cmd.in_word:
            self.stack.append(_Region("#"))
        elif c in ("'", '"', "`"):
            self.push(_Region(c))
        elif c == "$":
            return self.dollar(text, i, quoted=False)
        elif c in ";&|":
            self.end_command(cmd)
        elif c == "(":
            if text.startswith("((", i) and not cmd.in_word and not cmd.words:
                self.stack.append(_Region("((", 2))
                return i + 2
            self.end_command(cmd)
            cmd.depth += 1
        elif c == ")":
            self.end_command(cmd)
            if cmd.depth == 0 and cmd.closer == ")":
                self.pop()
            else:
                cmd.depth = max(0, cmd.depth - 1)
        elif c in "<>":
            self.end_word(cmd)
            if text.startswith("<<<", i):
                return i + 3
            if text.startswith("<<", i):
                return self.heredoc_start(cmd, text, i + 2)
            if text.startswith(("<(", ">("), i):
                self.push(_Command(")"))
                return i + 2
            j = i + 1
            while j < len(text) and text[j] in "<>&|":
                j += 1
            return j
        elif c == "[" and text.startswith("[[", i) and not cmd.in_word and not cmd.words:
            self.stack.append(_Command("]]"))
            return i + 2
        elif c == "]" and text.startswith("]]", i) and cmd.closer == "]]" and not cmd.in_word:
            self.end_command(cmd)
            self.pop()
            return i + 2
        else:
            self.literal(c)
        return i + 1

    def heredoc_start(self, cmd: _Command, text: str, i: int) -> int:
        """After ``<<``: read the delimiter word and announce the body (it starts next line)."""
        strip_tabs = text.startswith("-", i)
        i += strip_tabs
        while i < len(text) and text[i] in " \t":
            i += 1
        delimiter: list[str] = []
        quoted = False
        while i < len(text) and text[i] not in " \t\n;&|<>()":
            c = text[i]
            if c in ("'", '"'):
                end = text.find(c, i + 1)
                end = len(text) if end < 0 else end
                delimiter.append(text[i + 1 : end])
                quoted, i = True, end + 1
            elif c == "\\":
                delimiter.append(text[i + 1 : i + 2])
                quoted, i = True, i + 2
            else:
                delimiter.append(c)
                i += 1
        if delimiter:
            cmd.heredocs.append(_Heredoc("".join(delimiter), quoted, strip_tabs, cmd.words.reads_code()))
        return i

    def heredoc_char(self, doc: _Heredoc, text: str, i: int) -> int:
        c = text[i]
        if c == "\n":
            line = "".join(doc.line)
            if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter and not doc.has_value:
                self.stack.pop()
            doc.line, doc.has_value = [], False
            return i + 1
        doc.line.append(c)
        if doc.quoted:
            return i + 1
        if c == "\\":
            if i + 1 == len(text):
                self.after = "\\"
                return i + 1
            doc.line.append(text[i + 1])
            return i + 2
        if c == "$":
            return self.dollar(text, i, quoted=True)
        if c == "`":
            self.stack.append(_Region("`"))
        return i + 1

    def region_char(self, region: _Region, text: str, i: int) -> int:
        c, kind = text[i], region.kind
        if kind == "#":
            if c == "\n":
                self.stack.pop()
                command = self.command()
                if command is not None:  # a comment ends the line like a newline does
                    return self.command_char(command, text, i)
            return i + 1
        if kind == "'":
            if c == "'":
                self.stack.pop()
            else:
                self.literal(c)
            return i + 1
        if c == "\\" and kind != "((":
            if i + 1 == len(text):
                self.after = "\\"
                return i + 1
            if kind == '"':
                self.literal(text[i + 1])
            return i + 2
        if kind == '"':
            if c == '"':
                self.stack.pop()
            elif c == "$":
                return self.dollar(text, i, quoted=True)
            elif c == "`":
                self.push(_Region("`"))
            else:
                self.literal(c)
            return i + 1
        if (kind == "$'" and c == "'") or (kind == "`" and c == "`"):
            self.stack.pop()
        elif kind == "${":
            region.depth += {"{": 1, "}": -1}.get(c, 0)
            if region.depth == 0:
                self.stack.pop()
        elif kind == "((":
            region.depth += {"(": 1, ")": -1}.get(c, 0)
            if region.depth == 0:
                self.stack.pop()
        return i + 1


def scan_shell(texts: Iterable[str]) -> list[Slot]:
    """Where each value goes in a command made of ``texts`` with a value between each two."""
    scanner = _Scanner()
    for n, text in enumerate(texts):
        if n:
            scanner.value()
        scanner.feed(text)
    return scanner.slots


def check_shell(source: str) -> list[VariableProblem]:
    """Values of a command template that would land where they cannot be quoted (see
    :class:`Slot`), found from the spec's text (``<% %>`` blocks are read as empty)."""
    simple = lex_simple(source)
    texts, tags = simple if simple is not None else _lex_shell(source)
    problems: list[VariableProblem] = []
    for slot, (line, expr) in zip(scan_shell(texts), tags, strict=False):
        if re.search(r"\|\s*(raw|quote)\s*$", expr):
            continue  # the author asked for the text as it is
        if slot.problem:
            token = expr.split("|")[0].strip() or expr
            problems.append(VariableProblem(f"<< {expr} >> {slot.problem}", line, token))
    return problems


def _lex_shell(source: str) -> tuple[list[str], list[tuple[int, str]]]:
    """The literal texts and the (line, expression) of each ``<< >>`` of a template, by Jinja's
    lexer (blocks read as empty; nothing when the template does not lex)."""
    import jinja2

    texts = [""]
    tags: list[tuple[int, str]] = []  # (line, expression) of each << >>
    expression: list[str] | None = None
    start = 1
    try:
        for line, kind, value in environment("shell").lex(source):
            if expression is not None:
                if kind == "variable_end":
                    tags.append((start, "".join(expression).strip()))
                    texts.append("")
                    expression = None
                else:
                    expression.append(value)
            elif kind == "data":
                texts[-1] += value
            elif kind == "variable_begin":
                expression, start = [], line
    except jinja2.TemplateSyntaxError:
        return [""], []  # reported by check_variables
    return texts, tags


# ``<< name >>`` and ``<< name.attr.attr >>``: what nearly every template consists of.
_SIMPLE_TAG = re.compile(r"<<\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*>>")
# Words the Jinja parser reads as constants or operators, never as variables.
_JINJA_WORDS = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is",
                          "if", "else"})
_NEWLINE = re.compile(r"(\r\n|\r|\n)")  # Jinja's line breaks


def lex_simple(source: str) -> tuple[list[str], list[tuple[int, str]]] | None:
    """The literal texts and the (line, ``name.attr``) of each substitution of a template that
    is only text and ``<< name.attr >>`` substitutions, read exactly as Jinja reads it (line
    breaks as ``\\n``, a final one dropped); None for any other template, which Jinja reads.

    Texts are one more than substitutions. No Jinja is imported or run.
    """
    if "<%" in source or "<#" in source:
        return None
    if "\r" in source or source.endswith("\n"):
        lines = _NEWLINE.split(source)[::2]
        if lines[-1] == "":
            del lines[-1]
        source = "\n".join(lines)
    texts: list[str] = []
    tags: list[tuple[int, str]] = []
    end, line = 0, 1
    for tag in _SIMPLE_TAG.finditer(source):
        text = source[end : tag.start()]
        # Jinja starts a tag at the first "<<": "<<<x>>" is not text "<" and << x >>.
        if "<<" in text or text.endswith("<"):
            return None
        expr = tag.group(1)
        names = expr.split(".")
        if len(names) > 33 or any(word in _JINJA_WORDS for word in names):
            return None  # (a chain that long is left to the compiler, which may find it too deep)
        line += text.count("\n")  # lines counted tag by tag: linear, however many tags
        texts.append(text)
        tags.append((line, expr))
        line += tag.group(0).count("\n")
        end = tag.end()
    rest = source[end:]
    if "<<" in rest:
        return None
    texts.append(rest)
    return texts, tags


def _lexed_parts(texts: list[str], tags: list[tuple[int, str]]) -> tuple[_Part, ...]:
    """:func:`lex_simple`'s result as template parts (text, and (name, attrs) substitutions)."""
    parts: list[_Part] = []
    for i, text in enumerate(texts):
        if text:
            parts.append(text)
        if i < len(tags):
            name, *attrs = tags[i][1].split(".")
            parts.append((name, tuple(attrs)))
    return tuple(parts)


def _simple_parts(ast: jinja2.nodes.Template) -> tuple[_Part, ...] | None:
    """The parts of a text-and-substitutions template, or None when it needs Jinja proper."""
    import jinja2.nodes

    if len(ast.body) != 1 or not isinstance(ast.body[0], jinja2.nodes.Output):
        return None if ast.body else ()
    parts: list[_Part] = []
    for output in ast.body[0].nodes:
        if isinstance(output, jinja2.nodes.TemplateData):
            parts.append(output.data)
            continue
        attrs: list[str] = []
        node = output
        while isinstance(node, jinja2.nodes.Getattr):
            attrs.append(node.attr)
            node = node.node
        if not isinstance(node, jinja2.nodes.Name) or node.ctx != "load":
            return None
        parts.append((node.name, tuple(reversed(attrs))))
    return tuple(parts)


@cache
def compile_template(source: str, *, shell: bool, glob: bool = False) -> Template:
    """Parse and compile ``source`` (cached: a plan renders the same few templates many times).

    ``shell`` quotes values for a shell command; ``glob`` escapes glob characters in path
    values for an output pattern.
    """
    kind = "shell" if shell else "glob" if glob else "text"
    if shell and ("\x00" in source or "\x01" in source):
        raise TemplateError("the command contains a NUL or \\x01 character")
    lexed = lex_simple(source)
    template = None
    if lexed is not None:  # text and plain lookups: no Jinja needed
        parts: tuple[_Part, ...] | None = _lexed_parts(*lexed)
    else:
        import jinja2

        env = environment(kind)
        try:
            parts = _simple_parts(env.parse(source))
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}", exc.lineno) from None
    slots: tuple[Slot, ...] = ()
    if shell and parts is not None:
        slots = tuple(scan_shell(_texts(parts)))
        for slot, sub in zip(slots, (p for p in parts if not isinstance(p, str)), strict=True):
            if slot.problem:
                raise TemplateError(f"<< {'.'.join((sub[0], *sub[1]))} >> {slot.problem}")
    return Template(source, shell, template, parts, slots, kind)


def _texts(parts: tuple[_Part, ...]) -> list[str]:
    """The literal texts around the substitutions of a fast-path template (one more than them)."""
    texts = [""]
    for part in parts:
        if isinstance(part, str):
            texts[-1] += part
        else:
            texts.append("")
    return texts


@cache
def variables_used(source: str) -> frozenset[str]:
    """The variables a template reads (empty when it does not parse: that is reported apart)."""
    if not is_template(source):
        return frozenset()
    lexed = lex_simple(source)
    if lexed is not None:  # text and lookups: the names they start with, without Jinja
        return frozenset(expr.partition(".")[0] for _, expr in lexed[1])
    import jinja2
    import jinja2.meta

    from .sandbox import parse_guard

    try:
        with parse_guard():
            return frozenset(jinja2.meta.find_undeclared_variables(environment("text").parse(source)))
    except jinja2.TemplateSyntaxError:
        return frozenset()


def is_template(source: str) -> bool:
    return "<<" in source or "<%" in source or "<#" in source


class _Scalar(frozenset[str]):
    """The type of :data:`SCALAR`."""


#: In ``check_variables``' ``known``: a variable that is a single value, with no keys.
SCALAR: frozenset[str] = _Scalar()


@dataclass(frozen=True)
class VariableProblem:
    message: str
    line: int  # 1-based within the template
    token: str = ""  # the text at fault, to point at its column


def check_variables(
    source: str, known: Mapping[str, Collection[str] | None], *, shell: bool
) -> list[VariableProblem]:
    """Problems with the variables a template uses, found without rendering it.

    ``known`` maps each allowed variable to the names of its allowed attributes (for
    ``params`` and ``matrix``), to :data:`SCALAR` for a single value (text or a number, whose
    attributes are methods: ``<< input.encode >>`` is reported), or to None when any attribute
    is fine. Attribute names starting with ``_`` are reported as sandbox escapes.
    """
    simple = _check_simple(source, known)
    if simple is not None:
        return simple
    import jinja2
    import jinja2.meta
    import jinja2.nodes

    from .sandbox import constant_problems, is_callable_name, parse_guard

    env = environment("shell" if shell else "text")
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [VariableProblem(f"template syntax error: {exc.message}", exc.lineno or 1)]
    problems: list[VariableProblem] = []
    for call in ast.find_all((jinja2.nodes.Filter, jinja2.nodes.Test)):
        is_filter = isinstance(call, jinja2.nodes.Filter)
        table = env.filters if is_filter else env.tests
        kind = "filter" if is_filter else "test"
        if call.name not in table:
            import difflib

            names = sorted(n for n in table if not n.startswith("_"))
            close = difflib.get_close_matches(call.name, names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(VariableProblem(f"unknown {kind} '{call.name}'{hint}", call.lineno, call.name))
        elif is_filter and call.name == "attr" and call.args and isinstance(call.args[0], jinja2.nodes.Const):
            attr = call.args[0].value
            if isinstance(attr, str) and attr.startswith("_"):
                problems.append(VariableProblem(f"template may not access '{attr}' (sandboxed)", call.lineno, attr))
    problems += [VariableProblem(message, line) for line, message in constant_problems(env, ast)]
    for other in ast.find_all((jinja2.nodes.Include, jinja2.nodes.Extends, jinja2.nodes.Import,
                               jinja2.nodes.FromImport)):
        problems.append(VariableProblem("a spec template cannot include, extend or import other templates",
                                        other.lineno))
    for method in ast.find_all(jinja2.nodes.Call):
        target = method.node
        if (isinstance(target, jinja2.nodes.Getattr) and not is_callable_name(target.attr)
                and not (isinstance(target.node, jinja2.nodes.Name) and target.node.name in ("self", "loop"))):
            problems.append(VariableProblem(f"the method '{target.attr}' cannot be called in a template",
                                            method.lineno, target.attr))
    try:
        with parse_guard():
            undeclared = jinja2.meta.find_undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as exc:  # TemplateAssertionError: found while compiling
        return problems or [VariableProblem(f"template error: {exc.message}", exc.lineno or 1)]
    for name in sorted(undeclared - set(known)):
        line = next((n.lineno for n in _names(ast) if n.name == name), 1)
        problems.append(_unknown_variable(name, known, line))
    called = {id(call.node) for call in ast.find_all(jinja2.nodes.Call)}  # << stem.upper() >> is fine
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        attr = _attr_name(node)
        if attr is None:
            continue
        if attr.startswith("_"):
            problems.append(VariableProblem(f"template may not access '{attr}' (sandboxed)", node.lineno, attr))
            continue
        base = node.node  # type: ignore[attr-defined]  # Getattr and Getitem both have .node
        if isinstance(base, jinja2.nodes.Name) and base.name in undeclared:
            allowed = known.get(base.name)
            if allowed is SCALAR:
                if isinstance(node, jinja2.nodes.Getattr) and id(node) not in called:
                    problems.append(_method_reference(base.name, attr, node.lineno))
            elif allowed is not None and attr not in allowed:
                problems.append(_unknown_key(base.name, attr, allowed, node.lineno))
    return problems


def _check_simple(source: str, known: Mapping[str, Collection[str] | None]) -> list[VariableProblem] | None:
    """:func:`check_variables` for a text-and-substitutions template without running Jinja's
    parser and compiler (most of the cost of validating a spec); None for any other template."""
    lexed = lex_simple(source)
    if lexed is None:
        return None
    uses: list[tuple[str, tuple[str, ...], int]] = []
    for line, expr in lexed[1]:
        head, *tail = expr.split(".")
        uses.append((head, tuple(tail), line))
    problems: list[VariableProblem] = []
    undeclared = {name for name, _, _ in uses if name not in JINJA_GLOBALS}
    first_line: dict[str, int] = {}
    for name, _, line in uses:
        first_line.setdefault(name, line)
    for name in sorted(undeclared - set(known)):
        problems.append(_unknown_variable(name, known, first_line[name]))
    for name, attrs, line in uses:
        for i, attr in enumerate(attrs):
            if attr.startswith("_"):
                problems.append(VariableProblem(f"template may not access '{attr}' (sandboxed)", line, attr))
            elif i == 0 and name in undeclared:
                allowed = known.get(name)
                if allowed is SCALAR:
                    problems.append(_method_reference(name, attr, line))
                elif allowed is not None and attr not in allowed:
                    problems.append(_unknown_key(name, attr, allowed, line))
    return problems


def _method_reference(name: str, attr: str, line: int) -> VariableProblem:
    return VariableProblem(f"'{name}' is a single value, so '{name}.{attr}' is a method, not a value; "
                           f"write << {name} >>", line, attr)


def _unknown_variable(name: str, known: Mapping[str, object], line: int) -> VariableProblem:
    return VariableProblem(f"unknown template variable '{name}'{_suggest(name, known)}", line, name)


def _unknown_key(name: str, attr: str, allowed: Collection[str], line: int) -> VariableProblem:
    return VariableProblem(f"unknown {name} key '{attr}' in '{name}.{attr}'{_suggest(attr, allowed)}", line, attr)


def _suggest(name: str, choices: Iterable[str]) -> str:
    """A "did you mean" hint, or the list of choices when nothing is close."""
    import difflib

    options = sorted(choices)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f" (known: {', '.join(options) or 'none'})"


def _names(ast: jinja2.nodes.Node) -> Iterator[jinja2.nodes.Name]:
    import jinja2.nodes

    return ast.find_all(jinja2.nodes.Name)


def _attr_name(node: jinja2.nodes.Node) -> str | None:
    import jinja2.nodes

    if isinstance(node, jinja2.nodes.Getattr):
        return str(node.attr)
    if isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
        value = node.arg.value
        return value if isinstance(value, str) else None
    return None

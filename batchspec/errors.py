"""Errors a user can cause, each carrying one clear message, a hint and an exit code.

The CLI catches :class:`BatchspecError` and prints it without a traceback; anything else that
escapes is a bug in batchspec.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Exit codes, one rule for every command (README, "Exit codes"): 0 the answer is yes (valid,
#: every task succeeded); 1 the answer is no (invalid, tasks failed, outputs not all placed);
#: 2 batchspec could not do what was asked (usage, a spec it cannot run, no inputs, missing
#: tools, configuration, credentials, the service, nothing to report on); 3 not finished yet
#: (status of a run that is going on); 130 interrupted.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNNING = 3
EXIT_INTERRUPTED = 130


class BatchspecError(Exception):
    """An error the user can fix: ``message`` says what, ``hint`` says what to do."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec file, pointing at a line, a column and a JSON path."""

    file: str
    line: int  # 1-based; 0 when the problem is about the whole file
    column: int  # 1-based; 0 when unknown
    path: str  # JSON path such as "$.pool.nodes.spot"
    message: str
    severity: str = "error"  # or "warning": worth knowing, but the spec is valid

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        where = self.file if self.line == 0 else f"{self.file}:{self.line}:{self.column}"
        label = "" if self.is_error else f"{self.severity}: "
        return f"{where}: {self.path}: {label}{self.message}"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }
        if not self.is_error:  # errors carry no severity, as before warnings existed
            out["severity"] = self.severity
        return out


class SpecError(BatchspecError):
    """A spec is invalid; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], hint: str | None = None) -> None:
        self.diagnostics = diagnostics
        text = "\n".join(d.format() for d in diagnostics)
        super().__init__(text or "invalid spec", hint)


class ToolMissingError(BatchspecError):
    """A tool listed in ``requires:`` is not installed."""


class BackendError(BatchspecError):
    """A backend could not do what was asked (credentials, quota, service errors)."""

"""The ``batchspec`` command line: parses arguments and delegates; no logic of its own.

Every user-caused error arrives here as a :class:`~batchspec.errors.BatchspecError` and leaves as
one message on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

from . import __version__
from .display import printable
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNNING, EXIT_USAGE, BatchspecError
from .redact import redact

if TYPE_CHECKING:
    from .backends import RunOptions

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {printable(message)}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn user errors into a message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchspecError as exc:
            _fail(redact(str(exc)), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        return None

    return wrapper  # type: ignore[return-value]


class _Commands(click.Group):
    """The command group; the emulator's command is imported only when it is used (it pulls in
    the HTTP server and the storage SDK, which every other command can do without), and
    ``--help`` lists it by its summary (tests check that it is the command's own)."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "emulator": ("batchspec.emulator.cli:emulator",
                     "Run a local Azure Batch service that runs tasks for real (or simulates them), until Ctrl-C."),
    }
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            target, summary = self.lazy[cmd_name]
            if self._listing:
                return click.Command(cmd_name, help=summary)
            module, _, name = target.partition(":")
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="batchspec")
def cli() -> None:
    """Run parallel batch jobs on Azure Batch (or this machine) from a declarative spec.

    \b
    Example:
      batchspec validate specs/
      batchspec plan specs/mp4-to-mp3.yaml
      batchspec run specs/mp4-to-mp3.yaml
    """


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Report format; json prints a list of {file, line, column, path, message} (warnings "
                   "also have severity: warning).")
@click.option("--inputs", "with_inputs", is_flag=True,
              help="Also plan each valid spec against the input files present (clashing names, the task limit).")
def validate(paths: tuple[Path, ...], fmt: str, with_inputs: bool) -> None:
    """Validate spec files against the schema and batchspec's rules.

    PATHS are files or directories (searched recursively for *.yaml, *.yml and *.json);
    default: specs/. Exit 0 when every file is valid (warnings allowed), 1 when any is invalid,
    2 for a usage error (such as a path that does not exist).

    \b
    Example:
      batchspec validate specs/ --format json
      batchspec validate specs/mp4-to-mp3.yaml --inputs
    """
    from .report import validation_json, validation_text
    from .spec.validate import discover, validate_files

    targets = list(paths) or [Path("specs")]
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        raise click.BadParameter(f"no such file or directory: {', '.join(missing)}", param_hint="PATHS")
    files = discover(targets)
    if not files:
        raise click.UsageError(f"no spec files (*.yaml, *.yml, *.json) under {', '.join(map(str, targets))}")
    results = validate_files(files)
    if with_inputs:
        from .plan.check import plan_problems  # the planner: only for --inputs

        results = [(name, diags or plan_problems(Path(name), name)) for name, diags in results]
    click.echo(validation_json(results) if fmt == "json" else validation_text(results))
    sys.exit(EXIT_FAILED if any(d.is_error for _, diags in results for d in diags) else EXIT_OK)


@cli.command()
def schema() -> None:
    """Print the spec JSON Schema (draft 2020-12).

    \b
    Example:
      batchspec schema > batchspec.schema.json
    """
    from .spec import schema as load_schema

    click.echo(json.dumps(load_schema(), indent=2))


def _set_option(func: F) -> F:
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a spec parameter (repeatable); the value is read as YAML.")(func)


#: CLI options that stand for Azure environment variables (secrets come from the environment only).
_AZURE_OPTIONS = (
    ("--batch-endpoint", "AZURE_BATCH_ENDPOINT", "Azure Batch account URL [env: AZURE_BATCH_ENDPOINT]."),
    ("--batch-account", "AZURE_BATCH_ACCOUNT", "Azure Batch account name [env: AZURE_BATCH_ACCOUNT]."),
    ("--storage-account", "AZURE_STORAGE_ACCOUNT", "Storage account for inputs and outputs "
                                                   "[env: AZURE_STORAGE_ACCOUNT]."),
)


def _backend_option(func: F) -> F:
    """--backend plus the Azure account options; keys and connection strings are read from
    AZURE_BATCH_ACCESS_KEY, AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING only."""
    for flag, env_name, text in reversed(_AZURE_OPTIONS):
        func = click.option(flag, env_name.lower(), default=None, metavar="VALUE", help=text)(func)
    return click.option("--backend", type=click.Choice(["auto", "local", "azure"]), default="auto",
                        show_default=True,
                        help="Where to run: azure when AZURE_BATCH_ENDPOINT or AZURE_BATCH_ACCOUNT is set "
                             "(auto), else this machine.")(func)


def _environment(azure: dict[str, str | None]) -> dict[str, str]:
    """The process environment with the Azure CLI options applied over it."""
    env = dict(os.environ)
    env.update({name.upper(): value for name, value in azure.items() if value})
    return env


def _price_options(func: F) -> F:
    """--region and --offline, for commands that show what nodes cost."""
    func = click.option("--offline", is_flag=True,
                        help="Use only cached VM prices; never ask the Azure Retail Prices API.")(func)
    return click.option("--region", default=None, metavar="REGION",
                        help="Azure region for VM prices, e.g. westeurope [env: BATCHSPEC_REGION; default: "
                             "from AZURE_BATCH_ENDPOINT].")(func)


def _run_dir_option(func: F) -> F:
    return click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                        help="Where runs of SPEC keep their records (and local task directories); default: "
                             ".batchspec/ next to the spec.")(func)


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@_set_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table for people; json prints the whole plan, stable enough to diff.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Tasks shown in the table.")
@_price_options
@_run_dir_option
@_backend_option
@handle_errors
def plan(spec: Path, overrides: tuple[str, ...], fmt: str, limit: int, region: str | None, offline: bool,
         run_dir: Path | None, backend: str, **azure: str | None) -> None:
    """Show what SPEC expands to, and what running it should cost, without running anything.

    The estimate takes node-hours from task.expected_duration in the spec, or from the
    measured durations of the last run of SPEC, and prices them at the VM size's
    pay-as-you-go price in the account's region (Azure Retail Prices API, cached for a week).

    \b
    Example:
      batchspec plan specs/mp4-to-mp3.yaml --set bitrate=320k --limit 5 --region westeurope
    """
    from .backends import RunOptions
    from .plan import gc_paused

    options = RunOptions(env=_environment(azure), run_dir=run_dir)
    with gc_paused():  # the plan is freed before the collector could scan it
        _show_plan(spec, overrides, fmt, limit, region, offline, backend, options)


def _show_plan(spec: Path, overrides: tuple[str, ...], fmt: str, limit: int, region: str | None, offline: bool,
               backend: str, options: RunOptions) -> None:
    if fmt == "json":  # the plan alone: no estimate, so nothing of pricing or past runs is loaded
        from .engine.planning import make_plan

        make_plan(spec, overrides, backend, options.env).write_json(sys.stdout)
        sys.stdout.write("\n")
        return
    from .engine.observe import plan_with_estimate
    from .observe.text import estimate_lines
    from .report import console, print_plan

    view = plan_with_estimate(spec, overrides, backend, options, offline=offline, region=region)
    print_plan(view.plan, limit, console(), estimate_lines(view.estimate, view.price) if view.plan.tasks else ())




@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@_set_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json prints the whole record: every task with its attempts, counts, usage and ETA.")
@_run_dir_option
@_backend_option
@handle_errors
def status(spec: Path, overrides: tuple[str, ...], fmt: str, run_dir: Path | None, backend: str,
           **azure: str | None) -> None:
    """Show where the run of SPEC stands: job state, task counts, running and failed tasks,
    pool and nodes (Azure), ETA. Works from any terminal, while a run goes on or after it.

    Exit 0 when every task succeeded, 1 when tasks failed or the run stopped with work
    left, 2 when SPEC has not been run (or cannot be read), 3 while it is running.

    \b
    Example:
      batchspec status specs/mp4-to-mp3.yaml --format json
    """
    from .backends import RunOptions
    from .engine.observe import status as get_status
    from .observe.records import dumps, verdict
    from .observe.text import status_text

    record = get_status(spec, overrides, backend, RunOptions(env=_environment(azure), run_dir=run_dir))
    if record is None:
        if fmt == "json":
            click.echo(json.dumps({"verdict": "not found"}))
        else:
            click.echo("no run of this spec found (batchspec run SPEC starts one)")
        sys.exit(EXIT_USAGE)
    click.echo(dumps(record) if fmt == "json" else printable(redact(status_text(record))))
    codes = {"succeeded": EXIT_OK, "running": EXIT_RUNNING, "not started": EXIT_USAGE}
    sys.exit(codes.get(verdict(record), EXIT_FAILED))


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("task", required=False)
@click.option("--stream", type=click.Choice(["both", "stdout", "stderr"]), default="both", show_default=True,
              help="Which output to show.")
@click.option("--attempt", type=click.IntRange(min=1), default=None,
              help="Which attempt of the task (default: the last).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the task finishes.")
@click.option("--node", default=None, metavar="NODE",
              help="Show a node's start task output instead of a task's (Azure).")
@_set_option
@_run_dir_option
@_backend_option
@handle_errors
def logs(spec: Path, task: str | None, stream: str, attempt: int | None, follow: bool, node: str | None,
         overrides: tuple[str, ...], run_dir: Path | None, backend: str, **azure: str | None) -> None:
    """Print the stdout and stderr of TASK (an id, or a unique start of one) from the run of
    SPEC; without TASK, those of every failed task (and of failed start tasks on Azure).

    \b
    Example:
      batchspec logs specs/mp4-to-mp3.yaml sample-3 --stream stderr --follow
    """
    from .backends import RunOptions
    from .engine.observe import logs as show_logs
    from .engine.reporters import make_reporter

    if task is not None and node is not None:
        raise click.UsageError("give TASK or --node, not both")
    reporter = make_reporter(False, sys.stderr)
    options = RunOptions(env=_environment(azure), run_dir=run_dir)
    try:
        show_logs(spec, overrides, backend, options, reporter, sys.stdout.buffer, task=task, stream=stream,
                  attempt=attempt, follow=follow, node=node)
    finally:
        reporter.close()


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the report; default: <run dir>/<job id>/report.html.")
@_price_options
@_set_option
@_run_dir_option
@_backend_option
@handle_errors
def report(spec: Path, output: Path | None, region: str | None, offline: bool, overrides: tuple[str, ...],
           run_dir: Path | None, backend: str, **azure: str | None) -> None:
    """Write the HTML report of the run of SPEC: a timeline of every task attempt on its node
    or slot, a histogram of durations, failed and slowest tasks with their stderr, totals and
    cost. One self-contained file that opens offline. Every run also writes one.

    \b
    Example:
      batchspec report specs/mp4-to-mp3.yaml -o report.html
    """
    from .backends import RunOptions
    from .engine.observe import report as write_report

    options = RunOptions(env=_environment(azure), run_dir=run_dir)
    path, _ = write_report(spec, overrides, backend, options, output, offline=offline, region=region)
    click.echo(f"report: {path}")


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json prints a list of {name, type, default, required, choices, description}.")
@handle_errors
def params(spec: Path, fmt: str) -> None:
    """List the parameters of SPEC: each one's type, default, allowed values and meaning.

    Set them with `batchspec run SPEC --set NAME=VALUE` (or `plan`).

    \b
    Example:
      batchspec params specs/chunked-encode.yaml
    """
    from .report import console, params_json, print_params
    from .spec import load_spec

    loaded = load_spec(spec)
    if fmt == "json":
        click.echo(params_json(loaded))
    else:
        print_params(loaded, console())


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@_backend_option
@_set_option
@click.option("--slots", type=click.IntRange(min=1), default=None,
              help="Tasks run at once on this machine (local backend); default: CPU count.")
@click.option("--force", is_flag=True, help="Rerun tasks that already succeeded in an earlier run.")
@click.option("--overwrite", is_flag=True,
              help="Let outputs replace files in outputs.download that batchspec did not write there.")
@click.option("--json", "json_lines", is_flag=True, help="Print one JSON event per line instead of progress.")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where task directories and run state go (local backend); default: .batchspec/ "
                   "next to the spec.")
@handle_errors
def run(spec: Path, backend: str, overrides: tuple[str, ...], slots: int | None, force: bool, overwrite: bool,
        json_lines: bool, run_dir: Path | None, **azure: str | None) -> None:
    """Run SPEC: validate, plan, and run every task, then collect the outputs.

    A rerun of the same spec resumes: finished tasks are skipped. Exit 0 when all tasks
    succeed, 1 when some fail, 2 for spec or usage errors, 130 when interrupted.

    \b
    Example:
      batchspec run specs/mp4-to-mp3.yaml --set bitrate=320k
    """
    from .backends import RunOptions
    from .engine.reporters import make_reporter
    from .engine.run import run as run_spec

    reporter = make_reporter(json_lines)
    options = RunOptions(env=_environment(azure), slots=slots, run_dir=run_dir, force=force, overwrite=overwrite)
    try:
        summary = run_spec(spec, overrides, backend, options, reporter)
    finally:
        reporter.close()
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@_backend_option
@_set_option
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The local backend's run directory, if not the default.")
@handle_errors
def cleanup(spec: Path, backend: str, overrides: tuple[str, ...], run_dir: Path | None, **azure: str | None) -> None:
    """Delete what runs of SPEC left behind: on Azure the job, the pool and the input and
    output containers; locally the task directories and run record.

    \b
    Example:
      batchspec cleanup specs/mp4-to-mp3.yaml --backend azure
    """
    from .backends import RunOptions
    from .engine.reporters import make_reporter
    from .engine.run import remove

    reporter = make_reporter(False)
    try:
        remove(spec, overrides, backend, RunOptions(env=_environment(azure), run_dir=run_dir), reporter)
    finally:
        reporter.close()


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - click handles most cases itself
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["EXIT_USAGE", "cli", "main"]

"""``batchspec emulator``: the command-line entry to the Batch emulator (parsing only)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from batchspec.emulator.execution import Simulation
from batchspec.emulator.faults import FaultSpec
from batchspec.emulator.requestlog import RequestLog
from batchspec.emulator.server import Emulator, EmulatorConfig

EXAMPLE = """\b
Example:
  batchspec emulator --port 8765 --nodes 2 --data-dir .emulator
  # then, in another shell, paste the printed export lines and run a spec's Azure path.

\b
Faults for reliability tests (reproducible with --seed):
  batchspec emulator --faults http503=0.1,http429=0.05,reset=0.02,preempt=0.1 --seed 7
  # commit-drop / commit-reset: the request is handled, then its answer is lost
  batchspec emulator --faults commit-drop=0.05,commit-reset=0.05

\b
Simulation at cloud scale (tasks do not run; an hour passes in 3.6 s):
  batchspec emulator --simulate duration=20m,distribution=lognormal,spread=0.5 --nodes 1000 --time-scale 1000
"""


@click.command(name="emulator", epilog=EXAMPLE)
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Port (0: a free port).")
@click.option("--account", default="batchspec", show_default=True, help="Batch account name.")
@click.option("--key", default=None, help="Account key, base64 (default: a random key, printed).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Persist pools, jobs and tasks here (and keep node files); default: in memory.",
)
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(0), help="Nodes actually run at once.")
@click.option(
    "--faults",
    default="",
    help="Injected faults, e.g. http503=0.1,http429=0.05,reset=0.02,commit-drop=0.02,commit-reset=0.02,preempt=0.1.",
)
@click.option("--seed", default=None, type=int, help="Seed for the fault injection.")
@click.option("--token", default=None, help="Accept this bearer token too (Entra ID path); never printed.")
@click.option(
    "--auto-storage",
    envvar="BATCHSPEC_EMULATOR_AUTO_STORAGE",
    default=None,
    help="Connection string of the account's auto-storage account, for autoStorageContainerName resource files "
    "(or $BATCHSPEC_EMULATOR_AUTO_STORAGE); never printed.",
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Service time runs this many times faster: allocation, boot, autoscale intervals and samples, "
    "timestamps (and simulated task durations).",
)
@click.option(
    "--simulate",
    "simulate",
    default=None,
    metavar="SETTINGS",
    help="Do not run tasks: each takes a drawn duration, e.g. duration=90s,distribution=lognormal,spread=0.5,"
    "failures=0.01,node-failures=0.001 (distributions: fixed, uniform, exponential, lognormal); "
    "spec=PATH draws around the spec's task.expected_duration.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log one line per request on stderr.")
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append one line per request to this file.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the export lines to this file (mode 0600) once listening, for `. FILE` in a shell.",
)
def emulator(
    *,
    host: str,
    port: int,
    account: str,
    key: str | None,
    data_dir: Path | None,
    nodes: int,
    faults: str,
    seed: int | None,
    token: str | None,
    auto_storage: str | None,
    time_scale: float,
    simulate: str | None,
    verbose: bool,
    log_file: Path | None,
    env_file: Path | None,
) -> None:
    """Run a local Azure Batch service that runs tasks for real (or simulates them), until Ctrl-C."""
    try:
        spec = FaultSpec.parse(faults)
        simulation = Simulation.parse(simulate, seed) if simulate is not None else None
        log = RequestLog.to_file(log_file) if log_file else RequestLog.to_stderr() if verbose else None
        config = EmulatorConfig(
            host=host,
            port=port,
            account=account,
            key=key,
            token=token,
            data_dir=data_dir,
            nodes=nodes,
            faults=spec,
            seed=seed,
            auto_storage=auto_storage,
            time_scale=time_scale,
            simulation=simulation,
            log=log,
        )
        emu = Emulator(config)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        emu.start()
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        shown_key = emu.key if key is None else "<the --key you gave>"
        mode = "simulated" if simulation else "real"
        click.echo(f"Batch emulator listening on {emu.endpoint} (account {account}, {nodes} node(s), {mode} tasks"
                   + (f", time x{time_scale:g}" if time_scale != 1 else "") + ")")
        if token:
            click.echo("Bearer tokens: the --token value is accepted (not shown).")
        exports = (
            f"export AZURE_BATCH_ENDPOINT={shlex.quote(emu.endpoint)}\n"
            f"export AZURE_BATCH_ACCOUNT={shlex.quote(account)}\n"
        )
        if env_file is not None:
            env_file.touch(mode=0o600)
            env_file.chmod(0o600)
            env_file.write_text(exports + f"export AZURE_BATCH_ACCESS_KEY={shlex.quote(emu.key)}\n")
        click.echo(exports + f"export AZURE_BATCH_ACCESS_KEY={shlex.quote(shown_key)}")
        click.echo("Press Ctrl-C to stop.")
        emu.serve_until_interrupted()
    finally:
        emu.stop()
        click.echo("Batch emulator stopped.")

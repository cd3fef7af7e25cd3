"""``batchspec emulator``: the command-line entry to the Batch emulator (parsing only)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from batchspec.emulator.faults import FaultSpec
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
) -> None:
    """Run a local Azure Batch service that runs tasks for real, until Ctrl-C."""
    try:
        spec = FaultSpec.parse(faults)
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
        )
        emu = Emulator(config)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        emu.start()
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        shown_key = emu.key if key is None else "<the --key you gave>"
        click.echo(f"Batch emulator listening on {emu.endpoint} (account {account}, {nodes} node(s))")
        if token:
            click.echo("Bearer tokens: the --token value is accepted (not shown).")
        click.echo(f"export AZURE_BATCH_ENDPOINT={shlex.quote(emu.endpoint)}")
        click.echo(f"export AZURE_BATCH_ACCOUNT={shlex.quote(account)}")
        click.echo(f"export AZURE_BATCH_ACCESS_KEY={shlex.quote(shown_key)}")
        click.echo("Press Ctrl-C to stop.")
        emu.serve_until_interrupted()
    finally:
        emu.stop()
        click.echo("Batch emulator stopped.")

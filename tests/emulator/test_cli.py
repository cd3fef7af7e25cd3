"""The ``batchspec emulator`` command: help, export lines, serving, clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import click
import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from click.testing import CliRunner

from batchspec.emulator.cli import emulator

RUN_CLI = "import sys; from batchspec.emulator.cli import emulator; emulator(prog_name='batchspec emulator')"


def test_help_has_the_options_and_an_example() -> None:
    group = click.Group("batchspec")
    group.add_command(emulator)  # as the main CLI registers it
    result = CliRunner().invoke(group, ["emulator", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--account", "--key", "--data-dir", "--nodes", "--faults", "--seed", "--token",
                   "--auto-storage", "--time-scale", "--simulate", "--verbose", "--log", "--env-file"):
        assert option in result.output
    assert "Example:" in result.output
    assert "batchspec emulator --port" in result.output


def test_bad_faults_are_a_usage_error() -> None:
    result = CliRunner().invoke(emulator, ["--faults", "http999=1"])
    assert result.exit_code != 0
    assert "unknown fault" in result.output
    bad_simulation = CliRunner().invoke(emulator, ["--simulate", "distribution=normal"])
    assert bad_simulation.exit_code != 0
    assert "expected one of fixed, uniform, exponential, lognormal" in bad_simulation.output


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serves_prints_exports_and_stops_cleanly(stop: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "--port", "0", "--nodes", "1", "--account", "cliacct", "--token", "t0k3n"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        exports = dict(re.findall(r"^export (AZURE_BATCH_\w+)=(\S+)$", "\n".join(lines), re.MULTILINE))
        assert set(exports) == {"AZURE_BATCH_ENDPOINT", "AZURE_BATCH_ACCOUNT", "AZURE_BATCH_ACCESS_KEY"}
        assert exports["AZURE_BATCH_ACCOUNT"] == "cliacct"
        assert "t0k3n" not in "\n".join(lines)  # the token is never printed
        client = BatchClient(
            exports["AZURE_BATCH_ENDPOINT"],
            AzureNamedKeyCredential(exports["AZURE_BATCH_ACCOUNT"], exports["AZURE_BATCH_ACCESS_KEY"]),
        )
        assert list(client.list_pools()) == []

        proc.send_signal(stop)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in out

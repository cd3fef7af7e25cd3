"""Helpers shared by the benchmarks: run a child process and measure it; run the emulator in
its own process, as users run it (in the benchmark's process it would share the GIL with the
client and hide what concurrency buys)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: a benchmark's own process stays small (its children's RSS is measured)
    from azure.batch import BatchClient

SPEC_HEAD = """\
# yaml-language-server: $schema=../schemas/batchspec.schema.json
batchspec: 1
name: {name}
description: {description}
params:
  bitrate: {bitrate}
pool:
  id: ffmpeg-pool
  vm_size: standard_a1_v2
  image: {{publisher: canonical, offer: ubuntu-24_04-lts, sku: server, version: latest}}
  node_agent_sku: batch.node.ubuntu 24.04
  nodes: {{dedicated: 0, spot: {spot}}}
  task_slots_per_node: 1
  start_task:
    command: apt-get update && apt-get install -y ffmpeg
    elevated: true
requires: [ffmpeg]
inputs:
  path: inputs/*.mp4
task:
  command: ffmpeg -hide_banner -y -i <<input>> -vn -b:a <<params.bitrate>> <<stem>>{suffix}.mp3
  outputs: ["<<stem>>{suffix}.mp3"]
  retries: 2
  timeout: {timeout}m
outputs:
  container: {name}-output
  download: out/{name}
cleanup: {{job: delete, pool: keep, inputs: keep}}
"""


#: The environment of measured children: they write bytecode, as an installed package has it.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass(frozen=True)
class Measured:
    seconds: float  # wall time of the child, measured by the parent
    peak_rss_mb: float  # the child's peak resident set size (ru_maxrss from wait4)
    returncode: int
    stdout: str


def run_child(argv: list[str], cwd: Path | None = None) -> Measured:
    """Run ``argv``; its wall time, and its own peak RSS (reaped with ``os.wait4``, which reports
    the usage of that one child, not of the parent or other children)."""
    started = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        process = subprocess.Popen(argv, cwd=cwd, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=devnull, text=True)
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.stdout.close()
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return Measured(seconds, rusage.ru_maxrss / 1024, process.returncode, stdout)


@contextmanager
def emulator_exports(*options: str) -> Iterator[dict[str, str]]:
    """``batchspec emulator OPTIONS`` in a child process; yields the AZURE_BATCH_* variables it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "batchspec", "emulator", *options],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    try:
        for line in proc.stdout:
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                exports[name] = shlex.split(value)[0]
            if len(exports) == 3:
                break
        yield exports
    finally:
        stop_emulator(proc)


def stop_emulator(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a user stops it; killed (and said so) if it has not stopped in 30 s, so that a
    slow shutdown costs the figures already measured nothing."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print("warning: the emulator did not stop within 30 s of Ctrl-C; killed", file=sys.stderr)
        proc.kill()
        proc.wait()


def client_for(exports: dict[str, str]) -> BatchClient:
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    credential = AzureNamedKeyCredential(exports["AZURE_BATCH_ACCOUNT"], exports["AZURE_BATCH_ACCESS_KEY"])
    return BatchClient(exports["AZURE_BATCH_ENDPOINT"], credential)


@contextmanager
def emulator_process(*options: str) -> Iterator[tuple[BatchClient, str]]:
    """``batchspec emulator --nodes 0 OPTIONS`` in a child process; yields a client and the endpoint."""
    with emulator_exports("--nodes", "0", *options) as exports, client_for(exports) as client:
        yield client, exports["AZURE_BATCH_ENDPOINT"]


def request_counts(client: BatchClient) -> dict[str, int]:
    """Requests the emulator served per operation (its signed, emulator-only stats endpoint)."""
    from azure.core.rest import HttpRequest

    response = client.send_request(HttpRequest("GET", "/batchspec/stats?api-version=2025-06-01"))
    response.raise_for_status()
    counts: dict[str, int] = json.loads(response.text())["requests"]
    return counts

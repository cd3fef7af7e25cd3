"""Helpers shared by the validate and plan benchmarks: run a child process and measure it."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
        process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=devnull, text=True)
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.stdout.close()
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return Measured(seconds, rusage.ru_maxrss / 1024, process.returncode, stdout)

"""A whole ``batchspec run --backend azure`` under injected faults ends as a fault-free run does.

The spec is ``specs/mp4-to-mp3.yaml`` as shipped (spot nodes, start task, retries), over generated
clips. The faulty emulator answers 503s and 429s, resets connections before handling requests,
handles requests and then loses the answer (connection closed or reset: "task added, response
lost"), and preempts spot nodes under running tasks. The outputs must be byte-identical to those
of a fault-free run, and no task may be added to the job twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.emulator import Emulator
from batchspec.emulator.testing import running_emulator
from tests.azure.conftest import copy_spec
from tests.azurite import Azurite
from tests.media import make_mp4

pytestmark = pytest.mark.e2e

FAULTS = "http503=0.1,http429=0.08,reset=0.08,commit-drop=0.1,commit-reset=0.1,preempt=0.5"
#: Fault streams are per operation, so with this seed the first create_task_collection is handled
#: and its answer lost, create_job and create_pool are committed then reset, and 503, 429 and
#: resets hit other requests, whatever the timing of the run.
SEED = 718
CLIPS = {"clip-a": 1.0, "clip b": 1.5, "clip-c": 0.8, "clip-d": 1.2}


def _run(azurite: Azurite, emulator: Emulator, workdir: Path) -> tuple[dict[str, bytes], str]:
    for container in BlobServiceClient.from_connection_string(azurite.connection_string).list_containers():
        BlobServiceClient.from_connection_string(azurite.connection_string).delete_container(container.name)
    spec = copy_spec("mp4-to-mp3.yaml", workdir / "specs")
    for stem, seconds in CLIPS.items():
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", seconds)
    env = {
        "AZURE_BATCH_ENDPOINT": emulator.endpoint,
        "AZURE_BATCH_ACCOUNT": emulator.account,
        "AZURE_BATCH_ACCESS_KEY": emulator.key,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
    }
    result = CliRunner().invoke(cli, ["run", str(spec), "--backend", "azure"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = spec.parent / "out" / "mp4-to-mp3"
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}, result.output


@pytest.fixture
def faulty() -> Iterator[Emulator]:
    with running_emulator(nodes=3, faults=FAULTS, seed=SEED) as emu:
        yield emu


def test_run_under_faults_matches_a_fault_free_run(azurite: Azurite, faulty: Emulator, tmp_path: Path) -> None:
    with running_emulator(nodes=3) as clean:
        expected, _ = _run(azurite, clean, tmp_path / "clean")

    outputs, log = _run(azurite, faulty, tmp_path / "faulty")

    assert sorted(expected) == sorted(f"{stem}.mp3" for stem in CLIPS)
    assert outputs == expected, log  # byte for byte
    faults = faulty.fault_counts()
    for kind in ("http503", "http429", "reset", "commit-drop", "commit-reset", "preempt"):
        assert faults[kind] > 0, (kind, faults)  # every kind of fault was really injected
    additions = faulty.state.additions
    assert len(additions) == len(CLIPS) and set(additions.values()) == {1}, additions  # none added twice

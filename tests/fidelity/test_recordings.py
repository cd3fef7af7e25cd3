"""The emulator's answers held against recordings of the real Azure Batch service.

Each recording (see README.md here for their source) is replayed request by request; every
operation the emulator supports is compared (status, headers, body shape, enums, defaults). The
few recorded requests that are skipped are listed below with the reason, and the test checks that
nothing else was skipped. Scenario setups recreate what a recording assumes exists beforehand.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from batchspec.emulator import Emulator
from batchspec.emulator.scheduler import Timings
from batchspec.emulator.testing import batch_client, running_emulator
from tests.fidelity.replay import Entry, Replayer, load

#: Slow enough that the recorded intermediate states (resizing, starting) can be observed.
TIMINGS = Timings(allocation=0.4, node_start=1.5, delete=0.1, tick=0.02)

PY = "python/test_batch.pyTestBatchtest_batch_{}[sync].json"
WINDOWS_IMAGE = m.VirtualMachineConfiguration(
    image_reference=m.BatchVmImageReference(
        publisher="MicrosoftWindowsServer", offer="WindowsServer", sku="2016-Datacenter-smalldisk", version="latest"
    ),
    node_agent_sku_id="batch.node.windows amd64",
)


def _files_setup(client: BatchClient) -> None:
    """The pool with one node and the job the files recording was made with."""
    client.create_pool(
        m.BatchPoolCreateOptions(
            id="2b751f41",
            vm_size="standard_d2_v2",
            virtual_machine_configuration=WINDOWS_IMAGE,
            target_dedicated_nodes=1,
        )
    )
    client.create_job(m.BatchJobCreateOptions(id="batch", pool_info=m.BatchPoolInfo(pool_id="2b751f41")))
    while not list(client.list_nodes("2b751f41")):  # the recording starts while the node is starting
        time.sleep(0.02)


def _scale_setup(client: BatchClient) -> None:
    """The pool the scale recording was made with (user account, inbound NAT pool, no nodes)."""
    client.create_pool(
        m.BatchPoolCreateOptions(  # raw JSON, as the recording's setup sent it
            {
                "id": "f50021c2",
                "displayName": "test_pool",
                "vmSize": "standard_d2_v2",
                "virtualMachineConfiguration": {
                    "imageReference": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS"},
                    "nodeAgentSKUId": "batch.node.ubuntu 18.04",
                },
                "userAccounts": [{"name": "task-user", "password": "not-returned", "elevationLevel": "admin"}],
                "networkConfiguration": {
                    "endpointConfiguration": {
                        "inboundNATPools": [
                            {
                                "name": "ruleName",
                                "protocol": "tcp",
                                "backendPort": 3389,
                                "frontendPortRangeStart": 15000,
                                "frontendPortRangeEnd": 15100,
                            }
                        ]
                    }
                },
            }
        )
    )


@dataclass
class Scenario:
    recording: str
    setup: Callable[[BatchClient], None] | None = None
    skip: dict[int, str] = field(default_factory=dict)


SCENARIOS = [
    Scenario("net/AddTask.json"),
    Scenario("net/AddTaskCollection.json"),
    Scenario("net/BulkAddTasks.json"),
    Scenario("net/PoolExists.json"),
    Scenario("net/TaskUpdate.json"),
    Scenario("net/TerminateJob.json"),
    Scenario(
        PY.format("create_pools"),
        skip={2: "the subnet belongs to another subscription: a check only Azure Resource Manager can make"},
    ),
    Scenario(PY.format("exception_policy")),
    Scenario(
        PY.format("files"),
        setup=_files_setup,
        skip={12: "recorded while the task was still active: the emulator's idle node runs it at once"},
    ),
    Scenario(PY.format("jobs")),
    Scenario(PY.format("scale_pools"), setup=_scale_setup),
    Scenario(PY.format("update_pools")),
]


@pytest.fixture
def cmd_shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``cmd`` on PATH for the Windows command lines of the recordings (``cmd /c ...``)."""
    shim = tmp_path / "bin" / "cmd"
    shim.parent.mkdir()
    shim.write_text(
        '#!/bin/sh\n# stands in for cmd.exe: "cmd /c COMMAND"\n[ "$1" = "/c" ] && shift\nexec /bin/sh -c "$*"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with running_emulator(nodes=2, timings=TIMINGS) as emu:
        yield emu


def _polling_repeat(entries: list[Entry], entry: Entry) -> bool:
    """A GET the recorder repeated while polling, with the same answer: replayed once."""
    if entry.index == 0:
        return False
    before = entries[entry.index - 1]
    return entry.method == "GET" and (before.method, before.uri, before.body) == (entry.method, entry.uri, entry.body)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: Path(s.recording).stem.split("test_batch_")[-1])
@pytest.mark.usefixtures("cmd_shim")
def test_replay_matches_the_service(scenario: Scenario, emulator: Emulator) -> None:
    client = batch_client(emulator)
    entries = load(scenario.recording)
    if scenario.setup:
        scenario.setup(client)
    replayer = Replayer(client, emulator.endpoint)
    skipped, repeats = [], 0
    for entry in entries:
        if entry.index in scenario.skip:
            skipped.append(entry.index)
            continue
        if _polling_repeat(entries, entry):
            repeats += 1
            continue
        replayer.replay(entry)
    assert skipped == sorted(scenario.skip)
    assert replayer.compared == len(entries) - len(skipped) - repeats  # every other entry was compared


def test_every_recording_is_replayed() -> None:
    recordings = {
        str(p.relative_to(Path(__file__).parent / "recordings"))
        for p in Path(__file__).parent.glob("recordings/*/*.json")
    }
    assert recordings == {s.recording for s in SCENARIOS}

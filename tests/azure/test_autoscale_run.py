"""specs/mp4-to-mp3-autoscale.yaml end to end through the Azure backend, against the emulator
(its service clock 100 times faster, so a 5-minute evaluation interval passes in 3 s) and Azurite:
the pool starts with no nodes, grows with the pending tasks and goes back to none when idle."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batchspec.emulator.testing import running_emulator
from tests.azurite import Azurite
from tests.media import decodes_cleanly, make_mp4

from .conftest import AzureWorld, copy_spec

pytestmark = pytest.mark.e2e


def test_autoscale_spec_scales_up_with_its_tasks_and_back_to_zero(tmp_path: Path, azurite: Azurite) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in service.list_containers():
        service.delete_container(container.name)
    spec = copy_spec("mp4-to-mp3-autoscale.yaml", tmp_path / "specs")
    for name in ("a", "b", "c"):
        make_mp4(spec.parent / "inputs" / f"{name}.mp4", 1.0)
    with running_emulator(nodes=3, time_scale=100) as emulator:
        sizes: list[int] = []
        done = threading.Event()

        def watch() -> None:  # the pool's node count over the run, read from the emulator's state
            while not done.wait(0.05):
                with emulator.state.lock:
                    pool = emulator.state.pools.get("ffmpeg-autoscale-pool")
                    sizes.append(len(pool.nodes) if pool else 0)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        world = AzureWorld(emulator, azurite, {
            "AZURE_BATCH_ENDPOINT": emulator.endpoint,
            "AZURE_BATCH_ACCOUNT": emulator.account,
            "AZURE_BATCH_ACCESS_KEY": emulator.key,
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        })
        result = world.run("run", str(spec), "--backend", "azure")
        assert result.exit_code == 0, result.output
        assert "creating pool ffmpeg-autoscale-pool: standard_a1_v2, autoscale (5m)" in result.output
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not sizes or sizes[-1] != 0):
            time.sleep(0.1)
        done.set()
        watcher.join()
        with emulator.state.lock:
            pool = emulator.state.pools["ffmpeg-autoscale-pool"].body
            run = dict(pool["autoScaleRun"])
    assert sizes[0] == 0 and max(sizes) == 3 and sizes[-1] == 0, sizes  # up with the tasks, back to none
    assert run["results"].startswith("$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;")
    out = spec.parent / "out" / "mp4-to-mp3-autoscale"
    assert sorted(p.name for p in out.iterdir()) == ["a.mp3", "b.mp3", "c.mp3"]
    assert all(decodes_cleanly(p) for p in out.iterdir())

"""Clients of every age: the tutorial's own legacy SDK (azure-batch 6.0, ``BatchServiceClient``,
api-version 2018-12-01.8.0) drives the emulator as azure-batch 15 does.

The legacy SDK cannot share an interpreter with azure-batch 15: ``scripts/test`` installs it into
``.venv/legacy-azure-batch`` and the flow (``legacy/tutorial_flow.py``) runs in a child Python
with that directory first on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batchspec.emulator.testing import running_emulator
from tests.azurite import REPO_ROOT, Azurite

LEGACY = Path(os.environ.get("BATCHSPEC_LEGACY_SDK", REPO_ROOT / ".venv" / "legacy-azure-batch"))
FLOW = Path(__file__).parent / "legacy" / "tutorial_flow.py"


def test_the_tutorials_legacy_sdk_runs_a_job(azurite: Azurite) -> None:
    if not (LEGACY / "azure" / "batch" / "batch_service_client.py").exists():
        pytest.fail(f"azure-batch 6.0 is not installed in {LEGACY}: run scripts/test (it installs it there)")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in ("legacy-in", "legacy-out"):
        if not service.get_container_client(name).exists():
            service.create_container(name)
    service.get_container_client("legacy-in").upload_blob("input.txt", b"hello legacy\n", overwrite=True)
    with running_emulator(nodes=2) as emu:
        result = subprocess.run(
            [sys.executable, str(FLOW), emu.endpoint, emu.account, emu.key,
             azurite.blob_sas_url("legacy-in", "input.txt"), azurite.container_sas_url("legacy-out", write=True)],
            env={**os.environ, "PYTHONPATH": str(LEGACY)}, capture_output=True, text=True, timeout=120, check=False,
        )
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        counts = emu.request_counts()
    assert seen == {
        "statuses": ["success"] * 3,  # the service's "Success", read by the legacy enum
        "states": ["completed"] * 3,
        "exit_codes": [0, 0, 0],
        "succeeded": 3,
        "upload_condition": "tasksuccess",  # the service's casing, whatever the client sent
    }
    assert counts["create_task_collection"] == 1 and counts["create_pool"] == 1
    out = service.get_container_client("legacy-out")
    assert {b.name for b in out.list_blobs()} == {"out0.txt", "out1.txt", "out2.txt"}
    assert out.download_blob("out1.txt").readall() == b"HELLO LEGACY\n"

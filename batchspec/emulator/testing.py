"""Starting an in-process emulator from tests: a context manager and a ``BatchClient`` factory.

with running_emulator(nodes=2, timings=FAST) as emu:
    client = batch_client(emu)
    client.create_pool(...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchspec.emulator.execution import Simulation
from batchspec.emulator.faults import FaultSpec
from batchspec.emulator.requestlog import RequestLog
from batchspec.emulator.scheduler import Timings
from batchspec.emulator.server import Emulator, EmulatorConfig

if TYPE_CHECKING:
    from azure.batch import BatchClient

#: Timings for tests: allocation and node boot in a tenth of a second.
FAST = Timings(allocation=0.1, node_start=0.1, delete=0.05, tick=0.02)


@contextmanager
def running_emulator(
    *,
    nodes: int = 2,
    account: str = "batchspec",
    key: str | None = None,
    token: str | None = None,
    data_dir: Path | None = None,
    faults: FaultSpec | str | None = None,
    seed: int | None = None,
    timings: Timings = FAST,
    auto_storage: str | None = None,
    time_scale: float = 1.0,
    simulation: Simulation | None = None,
    log: RequestLog | None = None,
) -> Iterator[Emulator]:
    """An emulator on a free loopback port for the duration of the block."""
    spec = FaultSpec.parse(faults) if isinstance(faults, str) or faults is None else faults
    config = EmulatorConfig(
        account=account,
        key=key,
        token=token,
        data_dir=data_dir,
        nodes=nodes,
        faults=spec,
        seed=seed,
        timings=timings,
        auto_storage=auto_storage,
        time_scale=time_scale,
        simulation=simulation,
        log=log,
    )
    with Emulator(config) as emulator:
        yield emulator


def batch_client(emulator: Emulator, **kwargs: Any) -> BatchClient:
    """A real azure-batch ``BatchClient`` signed with the emulator's Shared Key."""
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    credential = AzureNamedKeyCredential(emulator.account, emulator.key)
    return BatchClient(emulator.endpoint, credential, **kwargs)

"""A local Azure Batch data-plane service that runs tasks for real (``batchspec emulator``).

The real ``azure-batch`` SDK (15.x, and the legacy 6.0) drives it unchanged over HTTP on
loopback; tasks run on emulated nodes through :mod:`batchspec.runner`, the same code as the local
backend, or are simulated at cloud scale (``--simulate``). Layout: :mod:`~.server` (HTTP),
:mod:`~.api` (the request pipeline), :mod:`~.routing`, :mod:`~.handlers` (one module per
resource), :mod:`~.validation`, :mod:`~.errors`, :mod:`~.scheduler` (the state machine),
:mod:`~.execution` (staging, launching, uploading), :mod:`~.store` (state and persistence).
Start it in-process::

    from batchspec.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(nodes=2)) as emu:
        emu.endpoint, emu.account, emu.key   # what a BatchClient needs
        emu.request_counts()                 # requests served per operation

or from tests with :func:`batchspec.emulator.testing.running_emulator`.
"""

from __future__ import annotations

from batchspec.emulator.faults import FaultSpec
from batchspec.emulator.scheduler import Timings
from batchspec.emulator.server import Emulator, EmulatorConfig, generate_key

__all__ = ["Emulator", "EmulatorConfig", "FaultSpec", "Timings", "generate_key"]

"""A planned task's fingerprint: what its result depends on, in one place.

A task counts as done only while its fingerprint is unchanged (both backends keep it with the
task's success record). It covers exactly:

* the rendered command line and the task's environment (``task.env``, rendered);
* each input file: where it goes in the working directory and the identity of its content,
  which the backend supplies (size and modification time of a local file; the MD5 of a blob);
* the output patterns (what is collected);
* the node the command runs on: the pool's image, node agent SKU and start task (which installs
  the programs the command calls);
* ``upstream``: fingerprints of tasks whose outputs this task reads (for task kinds that consume
  other tasks' results; a plain task has none).

It leaves out what changes how a task is run but not what it produces: retries, timeout, pool
size, VM size, slots and ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict

from .model import InputFile, Plan, PlannedTask

#: The identity of an input file's content, from the backend that stages it.
ContentId = Callable[[InputFile], str]

#: Bumped when what goes into a fingerprint changes, so old records never match new ones.
VERSION = "1"


class Fingerprinter:
    """Computes fingerprints of one plan's tasks (the plan-wide part once)."""

    def __init__(self, plan: Plan, content: ContentId) -> None:
        pool = plan.pool
        node = {"image": asdict(pool.image), "node_agent_sku": pool.node_agent_sku,
                "start_task": asdict(pool.start_task) if pool.start_task else None}
        self._node = json.dumps(node, sort_keys=True).encode()
        self._content = content

    def __call__(self, task: PlannedTask, upstream: Iterable[str] = ()) -> str:
        digest = hashlib.sha256(VERSION.encode())
        groups = (
            [task.command],
            [f"{key}={value}" for key, value in task.env],
            [f"{item.path}\0{self._content(item)}" for item in task.inputs],
            list(task.outputs),
            list(upstream),
        )
        for group in groups:  # each length-prefixed: no field can shift into the next
            digest.update(len(group).to_bytes(4, "big"))
            for text in group:
                data = text.encode("utf-8", "surrogateescape")
                digest.update(len(data).to_bytes(8, "big") + data)
        digest.update(self._node)
        return digest.hexdigest()[:32]

"""A planned task's fingerprint: what its result depends on, in one place.

A task counts as done only while its fingerprint is unchanged (both backends keep it with the
task's success record). It covers exactly:

* the rendered command line and the task's environment (``task.env``, rendered, and the job's
  ``job.env``);
* each input file, the task's own and the job's shared ``files``: where it goes in the working
  directory and the identity of its content, which the backend supplies (size and modification
  time of a local file; the MD5 of a blob; a URL or storage folder by its address);
* the output rules (what is collected, when, and where it goes);
* the node the command runs on: the pool's image, node agent SKU and start task (which installs
  the programs the command calls);
* the container image the task runs in, if any: its reference, run options and working
  directory, and the identity of the image the backend supplies (locally the image's id, so a
  rebuilt image under the same tag redoes the tasks; on Azure the reference, which is what
  the nodes pull);
* ``upstream``: fingerprints of the tasks whose outputs this task reads, or that it waits for
  (a later stage's tasks and a merge; a first-stage task has none), so a change anywhere
  upstream redoes everything that depends on it.

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
#: The identity of a container image (by reference), from the backend that runs it.
ImageId = Callable[[str], str]

#: Bumped when what goes into a fingerprint changes, so old records never match new ones.
VERSION = "1"


class Fingerprinter:
    """Computes fingerprints of one plan's tasks (the plan-wide part once)."""

    def __init__(self, plan: Plan, content: ContentId, image: ImageId | None = None) -> None:
        pool = plan.pool
        node = {"image": asdict(pool.image), "node_agent_sku": pool.node_agent_sku,
                "start_task": asdict(pool.start_task) if pool.start_task else None}
        if plan.env or plan.files:  # what every task of the job gets (absent: as before there were any)
            node["job"] = {"env": list(plan.env), "files": [f"{f.path}\0{content(f)}" for f in plan.files]}
        self._node = json.dumps(node, sort_keys=True).encode()
        self._content = content
        self._plan = plan
        self._images: dict[str, bytes] = {}  # stage name -> what its container adds
        for stage in plan.stages:
            if (container := stage.container) is not None:
                identity = image(container.image) if image is not None else ""
                self._images[stage.name] = json.dumps(
                    [container.image, identity, container.options, container.workdir]).encode()

    def __call__(self, task: PlannedTask, upstream: Iterable[str] = ()) -> str:
        digest = hashlib.sha256(VERSION.encode())
        groups = (
            [task.command],
            [f"{key}={value}" for key, value in task.env],
            [f"{item.path}\0{self._content(item)}" for item in task.inputs],
            [o.pattern if o.when == "success" and o.to is None else f"{o.pattern}\0{o.when}\0{o.to or ''}"
             for o in task.outputs],
            list(upstream),
        )
        for group in groups:  # each length-prefixed: no field can shift into the next
            digest.update(len(group).to_bytes(4, "big"))
            for text in group:
                data = text.encode("utf-8", "surrogateescape")
                digest.update(len(data).to_bytes(8, "big") + data)
        digest.update(self._node)
        # A task in a container (absent otherwise: fingerprints as before containers existed).
        digest.update(self._images.get(self._plan.stage_of(task).name, b""))
        return digest.hexdigest()[:32]

"""Container pools and container tasks on emulated nodes, through :mod:`batchspec.containers`.

A pool with ``virtualMachineConfiguration.containerConfiguration`` has nodes that pull its
``containerImageNames`` as they start (from its ``containerRegistries``, logins kept in memory
only); a node whose pull fails becomes ``unusable`` with the image error, as on the service. A
task with ``containerSettings`` runs in its image with podman or docker found on this machine (the
same code the local backend uses): the node's root directory mounted at the same path (or what
``containerHostBatchBindMounts`` lists), the task's variables passed in, the command in its
working directory unless ``workingDirectory`` is ``containerImageDefault``. What stops it becomes
the task's ``failureInfo`` with the service's codes (``ContainerInvalidImage`` for an image that
cannot be pulled, ``ContainerInvalidSettings``, ``ContainerInvalidRegistry``,
``ContainerMiscError``); ``executionInfo.containerInfo`` says which container ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchspec.containers import (
    INVALID_IMAGE,
    INVALID_REGISTRY,
    INVALID_SETTINGS,
    MISC_ERROR,
    ContainerError,
    ContainerProcess,
    Credentials,
    Mount,
    Runtime,
    container_environment,
    find_runtime,
    registry_of,
)
from batchspec.emulator.wire import Json, failure_info
from batchspec.runner import ProcessResult, TaskPaths

if TYPE_CHECKING:
    from batchspec.emulator.execution import TaskRun

#: The service's words for each container failure code (category, message).
FAILURES = {
    INVALID_IMAGE: ("usererror", "One or more container images specified are invalid"),
    INVALID_REGISTRY: ("usererror", "The specified container registry was invalid"),
    INVALID_SETTINGS: ("usererror", "At least one value of specified task container settings is invalid"),
    MISC_ERROR: ("servererror", "There was an unknown error encountered while attempting to run a task in a container"),
}

#: Where each ``containerHostBatchBindMounts`` source is under a node's root directory.
BIND_SOURCES = {"shared": "shared", "startup": "startup", "vfsmounts": "fsmounts", "applications": "applications"}


def container_failure(code: str, message: str, image: str | None = None) -> Json:
    """``failureInfo`` of a task that could not run in its container."""
    if code not in FAILURES:  # this machine has no runtime: the node's own trouble
        code = MISC_ERROR
    category, text = FAILURES[code]
    details = {"ContainerImage": image} if image and code == INVALID_IMAGE else {}
    return failure_info(category, code, text, **details, Message=message)


def node_error(error: ContainerError) -> Json:
    """A node's ``errors`` entry when it cannot get its pool's images (it becomes unusable)."""
    code = error.code if error.code in FAILURES else MISC_ERROR
    details = [{"name": "ContainerImage", "value": error.image}] if error.image else []
    return {"code": code, "message": FAILURES[code][1],
            "errorDetails": [*details, {"name": "Message", "value": error.message}]}


@dataclass(frozen=True)
class ContainerRun:
    """What a container task needs from its pool and its own ``containerSettings``."""

    settings: Json  # the task's containerSettings
    pool_has_containers: bool
    node_root: Path  # AZ_BATCH_NODE_ROOT_DIR
    logins: tuple[Credentials, ...] = ()  # the pool's registries (and the task's own)
    on_container: Callable[[str, str], None] | None = None  # (container id, state): for containerInfo


@dataclass
class ContainerLauncher:
    """The emulator's :class:`~batchspec.emulator.execution.Launcher` for container tasks."""

    find: Callable[[], Runtime] = field(default=find_runtime)
    _runtime: Runtime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def runtime(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = self.find()
            return self._runtime

    def prefetch(self, images: list[str], logins: tuple[Credentials, ...]) -> Json | None:
        """Pull a starting node's images; the node's error when one cannot be had (else None)."""
        try:
            runtime = self.runtime()
            for image in images:
                runtime.ensure_image(image, pull=True, credentials=_login_for(image, logins))
        except ContainerError as exc:
            return node_error(exc)
        return None

    def launch(self, task: TaskRun, argv: list[str], paths: TaskPaths, env: Mapping[str, str],
               ) -> ContainerProcess | _Refused:
        run = task.container
        assert run is not None, "a container task"
        settings = run.settings
        image = str(settings.get("imageName") or "")
        if not run.pool_has_containers:
            return _Refused(ContainerError(INVALID_SETTINGS, "the task has containerSettings but its pool has no "
                                           "containerConfiguration (a pool runs container tasks only when created "
                                           "with one)", image))
        try:
            runtime = self.runtime()
        except ContainerError as exc:
            return _Refused(exc)
        workdir = None if str(settings.get("workingDirectory", "")).lower() == "containerimagedefault" else str(
            paths.wd)
        own = [str(s.get("name")) for s in task.settings if s.get("name")]
        return ContainerProcess(
            runtime, image=image, argv=argv, paths=paths, env=container_environment(env, own),
            mounts=_mounts(settings, paths, run.node_root, task.job_id), workdir=workdir,
            run_options=str(settings.get("containerRunOptions") or ""), pull=True,
            credentials=_login_for(image, run.logins), on_container=run.on_container)


@dataclass
class _Refused:
    """A container task that cannot start at all: it ends at once with the reason."""

    error: ContainerError

    def run(self, timeout: float | None = None) -> ProcessResult:
        now = time.time()
        return ProcessResult(None, False, False, now, now, error=self.error.message, failure_code=self.error.code)

    def stop(self) -> None:
        pass


def _mounts(settings: Json, paths: TaskPaths, node_root: Path, job_id: str) -> list[Mount]:
    """The host directories a container task sees, at the same paths: the node's root directory,
    or only what ``containerHostBatchBindMounts`` lists (and the task's own directory)."""
    entries = settings.get("containerHostBatchBindMounts")
    if entries is None:
        return [Mount(node_root)]
    mounts = [Mount(paths.root)]
    for entry in entries if isinstance(entries, list) else []:
        source = str((entry or {}).get("source") or "").lower()
        read_only = bool((entry or {}).get("isReadOnly", False))
        if source == "task":
            mounts[0] = Mount(paths.root, read_only=read_only)
        elif source == "jobprep" and job_id:
            mounts.append(Mount(node_root / "workitems" / job_id / "job-1" / "jobpreparation", read_only=read_only))
        elif source in BIND_SOURCES:
            mounts.append(Mount(node_root / BIND_SOURCES[source], read_only=read_only))
    for mount in mounts:
        mount.source.mkdir(parents=True, exist_ok=True)
    return mounts


def _login_for(image: str, logins: tuple[Credentials, ...]) -> Credentials | None:
    server = registry_of(image).lower()
    return next((c for c in logins if c.server.lower().rstrip("/") == server), None)


def pool_logins(configuration: object) -> tuple[Credentials, ...]:
    """The registry logins of a pool's containerConfiguration as given at creation (with passwords)."""
    if not isinstance(configuration, dict):
        return ()
    logins = []
    for registry in configuration.get("containerRegistries") or []:
        if isinstance(registry, dict) and registry.get("username") and registry.get("password"):
            logins.append(Credentials(str(registry.get("registryServer") or "docker.io"), str(registry["username"]),
                                      str(registry["password"])))
    return tuple(logins)


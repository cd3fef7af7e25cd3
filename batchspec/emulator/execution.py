"""Running one task on an emulated node: staging its files, launching it, uploading its outputs.

The state machine (:mod:`batchspec.emulator.scheduler`) decides what runs where and what an
exit means; this module only does the work, on a :class:`TaskRun` read from the state, and
answers with an :class:`Outcome`. A task is launched by a :class:`Launcher`: the default
:class:`ProcessLauncher` runs the command line as a process through :mod:`batchspec.runner`
(the local backend's code); a task with ``containerSettings`` goes to the
:class:`~batchspec.emulator.containers.ContainerLauncher`, which runs the same argv, paths and
environment in its image through :mod:`batchspec.containers` (the local backend's code too).
:class:`Simulation` stands in for all of it in ``--simulate`` mode: nothing runs, each task takes a
drawn duration.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from batchspec.containers import PROGRAM_NOT_FOUND
from batchspec.emulator.containers import ContainerLauncher, ContainerRun, container_failure
from batchspec.emulator.storage import FileError, download_resource_files, upload_output_files
from batchspec.emulator.wire import Json, failure_info
from batchspec.runner import ProcessResult, TaskPaths, TaskProcess, batch_environment, split_command_line

#: What a task inherits from the emulator's own environment: where programs are, locale and
#: home, as a node's task user has them. Nothing else (keys, tokens, connection strings) leaks in.
NODE_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

#: Directories every node has (as listed by the service for a node's root).
NODE_DIRS = ("applications", "fsmounts", "shared", "startup", "volatile", "workitems")


def node_base_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in NODE_INHERITED_ENV if name in os.environ}
    tools = _tools_dir()
    if tools is not None:
        env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


@functools.cache
def _tools_dir() -> str | None:
    """A directory with ffmpeg for nodes when this machine has none on PATH: the binary that
    imageio-ffmpeg ships (``pip install 'batchspec[ffmpeg]'``), as the local backend uses it. It
    stands in for a start task's ``apt-get install ffmpeg``, which an emulated node never runs."""
    if shutil.which("ffmpeg"):
        return None
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    directory = Path(tempfile.gettempdir()) / f"batchspec-emulator-tools-{os.getuid()}"
    directory.mkdir(exist_ok=True)
    link = directory / "ffmpeg"
    if not link.exists():
        with contextlib.suppress(FileExistsError):
            link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return str(directory)


@dataclass(frozen=True)
class TaskRun:
    """One attempt to run, as read from the state (under its lock) before it starts."""

    job_id: str  # "" for a start task
    task_id: str
    pool_id: str
    node_id: str
    command_line: str
    root: Path  # AZ_BATCH_TASK_DIR
    resource_files: tuple[Json, ...] = ()
    output_files: tuple[Json, ...] = ()
    settings: tuple[Json, ...] = ()  # job commonEnvironmentSettings, then the task's own
    timeout: float | None = None  # maxWallClockTime, seconds
    linux: bool = True
    dedicated: bool = True
    seed_key: str = ""  # names the attempt for reproducible fault and simulation draws
    container: ContainerRun | None = None  # it has containerSettings: it runs in that image


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: an exit code, or a failure before or after the command ran."""

    exit_code: int | None = None
    failure: Json | None = None
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        return self.failure is None and self.exit_code == 0


class TaskHandle(Protocol):
    """A launched task: :meth:`run` blocks until it ends; :meth:`stop` may come from any thread."""

    def run(self, timeout: float | None = None) -> ProcessResult: ...

    def stop(self) -> None: ...


class Launcher(Protocol):
    """Turns a command line's argv, a task directory and an environment into a task to run."""

    def launch(self, run: TaskRun, argv: list[str], paths: TaskPaths, env: Mapping[str, str]) -> TaskHandle: ...


class ProcessLauncher:
    """Runs the task as a local process group (:class:`batchspec.runner.TaskProcess`)."""

    def launch(self, run: TaskRun, argv: list[str], paths: TaskPaths, env: Mapping[str, str]) -> TaskHandle:
        return TaskProcess(argv, paths, env)


@dataclass
class NodeRunner:
    """Does the node's work for real: resource files in, the command, output files out."""

    account: str
    base_url: str
    nodes_root: Path
    auto_storage: str | None = None  # connection string of the account's auto-storage account
    launcher: Launcher = field(default_factory=ProcessLauncher)
    containers: ContainerLauncher = field(default_factory=ContainerLauncher)  # tasks with containerSettings

    def node_root(self, node_id: str) -> Path:
        return self.nodes_root / node_id

    def remove_work(self, job_id: str, task_id: str | None = None) -> None:
        """Delete a job's (or one task's) directories on every node, as the service does when the
        job or task is deleted: a task added again under the same id starts in an empty directory."""
        if not self.nodes_root.is_dir():
            return
        for node in self.nodes_root.iterdir():
            where = node / "workitems" / job_id
            shutil.rmtree(where / "job-1" / task_id if task_id is not None else where, ignore_errors=True)

    def make_node(self, node_id: str) -> None:
        root = self.node_root(node_id)
        for name in NODE_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)

    def environment(self, run: TaskRun, paths: TaskPaths) -> dict[str, str]:
        extra = {
            "AZ_BATCH_ACCOUNT_URL": self.base_url,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if run.dedicated else "false",
            "AZ_BATCH_NODE_MOUNTS_DIR": str(self.node_root(run.node_id) / "fsmounts"),
        }
        if run.linux:
            extra["AZ_BATCH_CERTIFICATES_DIR"] = str(paths.root / "certs")
        extra |= {str(e.get("name")): str(e.get("value", "")) for e in run.settings if e.get("name")}
        env = batch_environment(
            paths=paths,
            job_id=run.job_id,
            task_id=run.task_id,
            pool_id=run.pool_id,
            node_id=run.node_id,
            node_root=self.node_root(run.node_id),
            account=self.account,
            extra=extra,
            base=node_base_environment(),
        )
        if not run.job_id:
            env.pop("AZ_BATCH_JOB_ID", None)  # a start task belongs to no job
        return env

    def stage(self, run: TaskRun) -> tuple[TaskPaths, Json | None]:
        """The task directory, and the failure of downloading its resource files (or None)."""
        paths = TaskPaths(run.root).create()
        if run.linux:
            (paths.root / "certs").mkdir(exist_ok=True)  # AZ_BATCH_CERTIFICATES_DIR on a Linux node
        try:
            download_resource_files(run.resource_files, paths.wd, auto_storage=self.auto_storage, linux=run.linux)
        except FileError as exc:
            return paths, exc.info
        return paths, None

    def prepare(self, run: TaskRun, paths: TaskPaths) -> TaskHandle | Outcome:
        """The task ready to run, or the outcome of a command line that cannot launch."""
        try:
            argv = split_command_line(run.command_line)
        except ValueError as exc:
            return Outcome(failure=failure_info(
                "usererror", "CommandLaunchFailed", "Failed to launch the specified command line.", Message=str(exc)
            ))
        launcher: Launcher = self.containers if run.container is not None else self.launcher
        return launcher.launch(run, argv, paths, self.environment(run, paths))

    @staticmethod
    def finish(result: ProcessResult, run: TaskRun | None = None) -> Outcome:
        if result.error is not None:
            if result.failure_code is not None and result.failure_code != PROGRAM_NOT_FOUND:
                image = str(run.container.settings.get("imageName") or "") if run and run.container else None
                return Outcome(failure=container_failure(result.failure_code, result.error, image))
            return Outcome(failure=program_not_found(result.error))
        return Outcome(exit_code=exit_status(result), timed_out=result.timed_out)

    def upload(self, run: TaskRun, paths: TaskPaths, succeeded: bool) -> Json | None:
        """Upload the outputs whose condition holds; the failure (or None)."""
        if not run.output_files:
            return None
        env = self.environment(run, paths)
        try:
            upload_output_files(run.output_files, paths.wd, env, succeeded, paths.root / "fileuploadout.txt")
        except FileError as exc:
            return exc.info
        return None


def exit_status(result: ProcessResult) -> int | None:
    """A Linux node's exit code: 128 + signal for a killed process (as a shell reports it)."""
    code = result.exit_code
    if code is not None and code < 0:
        return 128 - code
    return code


def program_not_found(error: str) -> Json:
    """The failureInfo of a task whose program could not be started."""
    return failure_info(
        "usererror", "CommandProgramNotFound", "The specified command program is not found.", Message=error
    )


# ---- simulation


DISTRIBUTIONS = ("fixed", "uniform", "exponential", "lognormal")


@dataclass(frozen=True)
class Simulation:
    """``--simulate``: tasks do not run; each takes a duration drawn from ``distribution`` with
    mean ``mean`` seconds (``spread`` the relative spread for uniform and lognormal), fails with
    ``failure_rate``, and a node fails under a task with ``node_failure_rate`` (the task is
    requeued, the node reboots). Draws are keyed by task and attempt, so a run is reproducible
    with a seed whatever the timing. Spot preemption comes from ``--faults preempt=P``."""

    mean: float = 60.0
    distribution: str = "lognormal"
    spread: float = 0.5
    failure_rate: float = 0.0
    node_failure_rate: float = 0.0
    seed: int | None = None

    @classmethod
    def parse(cls, text: str, seed: int | None = None) -> Simulation:
        """``duration=90,distribution=uniform,spread=0.3,failures=0.01,node-failures=0.001``;
        ``spec=PATH`` takes the mean duration from the spec's ``task.expected_duration``."""
        values: dict[str, Any] = {}
        names = {"duration": "mean", "mean": "mean", "distribution": "distribution", "spread": "spread",
                 "failures": "failure_rate", "node-failures": "node_failure_rate", "spec": "spec"}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            name, sep, value = part.partition("=")
            field_name = names.get(name.strip().lower().replace("_", "-"))
            if field_name == "spec":
                values["mean"] = _expected_duration(Path(value.strip()))
                continue
            if not sep or field_name is None:
                raise ValueError(f"unknown simulation setting {part!r}: expected one of {', '.join(names)}")
            if field_name == "distribution":
                if value.strip() not in DISTRIBUTIONS:
                    raise ValueError(f"distribution {value!r}: expected one of {', '.join(DISTRIBUTIONS)}")
                values[field_name] = value.strip()
                continue
            try:
                number = _seconds(value) if field_name == "mean" else float(value)
            except ValueError:
                raise ValueError(f"simulation {name}: {value!r} is not a number") from None
            if number < 0 or (field_name.endswith("rate") and number > 1):
                raise ValueError(f"simulation {name}: {value!r} is out of range")
            values[field_name] = number
        return cls(seed=seed, **values)

    def _rng(self, key: str, what: str) -> random.Random:
        return random.Random(f"{self.seed}:{what}:{key}")

    def duration(self, key: str, mean: float | None = None) -> float:
        """Seconds (service time) the attempt ``key`` takes; ``mean`` overrides the default."""
        rng = self._rng(key, "duration")
        mu = self.mean if mean is None else mean
        if self.distribution == "fixed":
            return mu
        if self.distribution == "uniform":
            return max(0.0, rng.uniform(mu * (1 - self.spread), mu * (1 + self.spread)))
        if self.distribution == "exponential":
            return rng.expovariate(1 / mu) if mu > 0 else 0.0
        sigma = math.sqrt(math.log(1 + self.spread**2))
        return rng.lognormvariate(math.log(mu) - sigma**2 / 2, sigma) if mu > 0 else 0.0

    def fails(self, key: str) -> bool:
        return self._rng(key, "failure").random() < self.failure_rate

    def node_fails_at(self, key: str, duration: float) -> float | None:
        """Seconds into the attempt at which its node fails, or None."""
        rng = self._rng(key, "node")
        if rng.random() >= self.node_failure_rate:
            return None
        return rng.random() * duration


def _expected_duration(path: Path) -> float:
    """A spec's ``task.expected_duration`` in seconds (its estimate, as ``batchspec plan`` uses it)."""
    from batchspec.errors import SpecError
    from batchspec.spec import load_spec

    try:
        seconds = load_spec(path).expected_task_seconds
    except (SpecError, OSError) as exc:
        raise ValueError(f"simulation spec {path}: {exc}") from None
    if seconds is None:
        raise ValueError(f"simulation spec {path}: it sets no task.expected_duration to draw durations around")
    return float(seconds)


def _seconds(text: str) -> float:
    text = text.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)

"""Run a task in a container image, as an Azure Batch node runs a task with ``containerSettings``.

This is the one container code path: the local backend and the emulator's nodes both run container
tasks through it (next to :mod:`batchspec.runner`, which runs plain task processes). It owns:

* :func:`find_runtime`: podman or docker on this machine (``BATCHSPEC_CONTAINER_RUNTIME`` picks
  one), with extra options for every container it creates from ``BATCHSPEC_CONTAINER_OPTIONS``
  (e.g. ``--runtime runc --ulimit nofile=1024:1024`` where a sandbox refuses the defaults);
* :class:`Runtime`: images (their ids, pulls with credentials in a temporary auth file, never on a
  command line) and a probe that a container starts at all;
* :class:`ContainerProcess`: one attempt of a task in a container, a drop-in for
  :class:`~batchspec.runner.TaskProcess`. As on Batch, the task's directories are bind-mounted at
  the same paths (so every ``AZ_BATCH_*`` path holds inside), the task's environment variables are
  passed by name (values never on a command line), and the command starts in the task's working
  directory unless the image's own is asked for. The container is created, then started attached
  (``start --attach``), so the start is an ordinary, watchable task process; when it cannot be
  created or started, the attempt ends with the error Batch reports (``ContainerInvalidImage``,
  ``ContainerInvalidSettings``, ...) instead of an exit code.

Nothing here runs at import: commands that need no container never start a runtime.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .runner import KILL_GRACE_SECONDS, ProcessResult, TaskPaths, TaskProcess, Watch, tail_lines

ENV_RUNTIME = "BATCHSPEC_CONTAINER_RUNTIME"
ENV_OPTIONS = "BATCHSPEC_CONTAINER_OPTIONS"
RUNTIMES = ("podman", "docker")

#: Batch's failureInfo codes for a task that could not run in its container.
INVALID_IMAGE = "ContainerInvalidImage"
INVALID_REGISTRY = "ContainerInvalidRegistry"
INVALID_SETTINGS = "ContainerInvalidSettings"
MISC_ERROR = "ContainerMiscError"
PROGRAM_NOT_FOUND = "CommandProgramNotFound"
#: Not a Batch code: this machine has no container runtime (a Batch container node always has one).
NO_RUNTIME = "ContainerRuntimeNotFound"

#: Seconds a runtime command (other than a pull or a task) may take.
COMMAND_TIMEOUT = 120.0
PULL_TIMEOUT = 3600.0
#: Seconds a failed pull is remembered: another pull of the image meanwhile fails the same way.
FAILED_PULL_MEMORY = 10.0


class ContainerError(Exception):
    """A container could not run; ``code`` names why as Batch's failureInfo codes do."""

    def __init__(self, code: str, message: str, image: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.image = image


@dataclass(frozen=True)
class Credentials:
    """A registry login (from the environment; the password is never printed or put in argv)."""

    server: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container at ``target`` (default: the same path)."""

    source: Path
    target: str | None = None
    read_only: bool = False

    def argument(self) -> str:
        """``--mount`` value; each field quoted as CSV where needed (paths with ',', ':', '"')."""
        fields = ["type=bind", f"source={self.source}", f"target={self.target or self.source}"]
        text = ",".join(_csv_field(f) for f in fields)
        return text + (",readonly" if self.read_only else "")


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def registry_of(image: str) -> str:
    """The registry an image reference pulls from (``docker.io`` when it names none)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first
    return "docker.io"


@dataclass(frozen=True)
class Runtime:
    """A container runtime on this machine: its program, kind and the options every container gets."""

    program: str  # absolute path
    name: str  # podman | docker
    options: tuple[str, ...] = ()  # BATCHSPEC_CONTAINER_OPTIONS, for create (and probe)

    def describe(self) -> str:
        extra = f" with {shlex.join(self.options)}" if self.options else ""
        return f"{self.name} ({self.program}){extra}"

    def command(self, *args: str, timeout: float = COMMAND_TIMEOUT, env: Mapping[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
        """Run the runtime with ``args``, output captured; raises ContainerError when it cannot run."""
        try:
            return subprocess.run([self.program, *args], capture_output=True, text=True, timeout=timeout,
                                  env=dict(env) if env is not None else runtime_environment(), check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ContainerError(MISC_ERROR, f"`{self.name} {args[0]}` did not answer in {timeout:.0f}s") from None
        except OSError as exc:
            raise ContainerError(NO_RUNTIME, f"cannot run {self.program}: {exc.strerror or exc}") from None

    # --- images --------------------------------------------------------------------------------

    def image_id(self, image: str) -> str | None:
        """The id of ``image`` in this machine's image store, or None when it is not there."""
        done = self.command("image", "inspect", "--format", "{{.Id}}", image)
        if done.returncode != 0:
            if _daemon_down(done.stderr):
                raise ContainerError(NO_RUNTIME, f"{self.name} cannot reach its daemon: {_last_error(done.stderr)}")
            return None
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None

    def pull(self, image: str, credentials: Credentials | None = None) -> None:
        """Pull ``image``; raises ContainerError (``ContainerInvalidImage``, or
        ``ContainerInvalidRegistry`` when the registry refuses the login)."""
        with _auth_environment(credentials) as env:
            done = self.command("pull", "--quiet", image, timeout=PULL_TIMEOUT, env=env)
        if done.returncode != 0:
            text = _last_error(done.stderr)
            code = INVALID_REGISTRY if _auth_refused(text) else INVALID_IMAGE
            raise ContainerError(code, f"cannot pull {image}: {text}", image)

    def ensure_image(self, image: str, *, pull: bool, credentials: Credentials | None = None) -> str:
        """The id of ``image``, pulling it first when it is missing and ``pull`` allows."""
        found = self.image_id(image)
        if found is not None:
            return found
        if not pull:
            raise ContainerError(INVALID_IMAGE, f"no such image on this machine: {image}", image)
        with _image_lock(image):
            found = self.image_id(image)  # another thread may have pulled it meanwhile
            if found is None:
                key = (image, credentials.username if credentials else None)
                failed = _failed_pulls.get(key)
                if failed is not None and time.monotonic() - failed[0] < FAILED_PULL_MEMORY:
                    raise failed[1]  # tasks and nodes starting together do not each wait out a registry
                try:
                    self.pull(image, credentials)
                except ContainerError as exc:
                    _failed_pulls[key] = (time.monotonic(), exc)
                    raise
                found = self.image_id(image)
        if found is None:
            raise ContainerError(INVALID_IMAGE, f"{image} was pulled but is not in the image store", image)
        return found

    def probe(self, image: str, tools: Sequence[str] = ()) -> list[str]:
        """Start a container of ``image`` once, as tasks will (``/bin/bash -c``): raises
        ContainerError when none starts; returns which of ``tools`` the image lacks."""
        script = 'for t in "$@"; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done'
        done = self.command("run", "--rm", "--pull", "never", *self.options, *self._user(),
                            "--entrypoint", "/bin/bash", image, "-c", script, "probe", *tools)
        if done.returncode != 0:
            message = _last_error(done.stderr)
            raise ContainerError(_start_failure_code(message), message, image)
        return done.stdout.split()

    # --- containers ----------------------------------------------------------------------------

    def _user(self) -> tuple[str, ...]:
        # Batch runs a container task as its task user. Docker's daemon would run it as root and
        # leave root-owned files in the task directory; rootless podman maps root to us already.
        if self.name == "docker" and hasattr(os, "getuid") and os.getuid() != 0:
            return ("--user", f"{os.getuid()}:{os.getgid()}")
        return ()

    def create_args(self, name: str, image: str, argv: Sequence[str], *, mounts: Sequence[Mount],
                    env_names: Sequence[str], env_values: Mapping[str, str], workdir: str | None,
                    run_options: Sequence[str], label: str) -> list[str]:
        """``create`` arguments: the runtime's options, Batch's (mounts, environment, working
        directory), then the task's own run options, the image and the command."""
        args = ["create", "--name", name, "--rm", "--init", "--pull", "never", "--label", f"batchspec.task={label}",
                *self.options, *self._user()]
        for mount in mounts:
            args += ["--mount", mount.argument()]
        for env_name in env_names:
            args += ["--env", env_name if env_name not in env_values else f"{env_name}={env_values[env_name]}"]
        if workdir is not None:
            args += ["--workdir", workdir]
        args += [*run_options, image, *argv]
        return args

    def state(self, name: str) -> str | None:
        """The container's state (created, running, exited, ...), or None when it is gone."""
        done = self.command("container", "inspect", "--format", "{{.State.Status}}", name)
        return done.stdout.strip() or None if done.returncode == 0 else None

    def remove(self, name: str) -> None:
        """Kill and remove a container, if it exists (at once: no grace period)."""
        now = ("--time", "0") if self.name == "podman" else ()  # docker's rm --force kills at once
        with contextlib.suppress(ContainerError):
            self.command("rm", "--force", *now, name)


def find_runtime(env: Mapping[str, str] | None = None) -> Runtime:
    """The container runtime to use: ``$BATCHSPEC_CONTAINER_RUNTIME`` (podman, docker or a
    path), else podman, else docker on PATH. Raises ContainerError when there is none."""
    environ = os.environ if env is None else env
    wanted = environ.get(ENV_RUNTIME, "").strip()
    options = tuple(shlex.split(environ.get(ENV_OPTIONS, "")))
    path = environ.get("PATH", os.defpath)
    candidates = [wanted] if wanted else list(RUNTIMES)
    for candidate in candidates:
        program = shutil.which(candidate, path=path)
        if program:
            kind = "docker" if "docker" in Path(program).name else "podman"
            return Runtime(str(Path(program).absolute()), kind, options)
    if wanted:
        raise ContainerError(NO_RUNTIME, f"{ENV_RUNTIME}={wanted}: no such program on PATH")
    raise ContainerError(NO_RUNTIME, "no container runtime on this machine: neither podman nor docker is on PATH")


def runtime_environment() -> dict[str, str]:
    """The environment a runtime command runs with: ours, without Azure credentials."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}


def container_environment(env: Mapping[str, str], own: Iterator[str] | Sequence[str]) -> dict[str, str]:
    """What goes into a container of a task whose node environment is ``env``: the ``AZ_BATCH_*``
    variables and the task's own settings (``own``: their names), as Batch maps a task's
    environment into its container. This machine's PATH, HOME and locale stay out: the image has
    its own."""
    names = set(own)
    return {k: v for k, v in env.items() if k.startswith("AZ_BATCH_") or k in names}


@contextlib.contextmanager
def _auth_environment(credentials: Credentials | None) -> Iterator[dict[str, str] | None]:
    """An environment whose runtime reads ``credentials`` from a temporary auth file (podman's
    ``REGISTRY_AUTH_FILE``, docker's ``DOCKER_CONFIG``), removed afterwards."""
    if credentials is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="batchspec-auth-") as directory:
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        config = Path(directory) / "config.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"auths": {credentials.server: {"auth": token}}}, out)
        yield {**runtime_environment(), "REGISTRY_AUTH_FILE": str(config), "DOCKER_CONFIG": directory}


_image_locks: dict[str, threading.Lock] = {}
#: (image, user) -> when its last pull failed, and why.
_failed_pulls: dict[tuple[str, str | None], tuple[float, ContainerError]] = {}
_image_locks_guard = threading.Lock()


def _image_lock(image: str) -> threading.Lock:
    """One pull of an image at a time in this process (tasks starting together share it)."""
    with _image_locks_guard:
        return _image_locks.setdefault(image, threading.Lock())


def _last_error(stderr: str) -> str:
    """The runtime's own words: its last ``Error...`` line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("Error", "error", "docker:")):
            return line
    return lines[-1] if lines else "no details"


def _daemon_down(stderr: str) -> bool:
    return "Cannot connect to the Docker daemon" in stderr or "Is the docker daemon running" in stderr


def _auth_refused(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("unauthorized", "authentication required", "denied", "401"))


def _start_failure_code(message: str) -> str:
    """Batch's code for a container that was created but could not start."""
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered or (
            "command that was not found" in lowered):
        return PROGRAM_NOT_FOUND
    if "image not known" in lowered or "no such image" in lowered or "manifest unknown" in lowered:
        return INVALID_IMAGE
    return MISC_ERROR


def _init_exec_failed(line: str) -> bool:
    """Is this what the container's init (podman's catatonit, docker's tini) says when the
    command cannot start?"""
    return "failed to exec pid1" in line or ("tini" in line and "exec" in line and "failed" in line)


def container_name(paths: TaskPaths) -> str:
    """The container of a task directory: one at a time, so one a killed run left is replaced."""
    return "batchspec-" + hashlib.sha256(str(paths.root).encode()).hexdigest()[:20]


class ContainerProcess:
    """One attempt of a task in a container: create it, then run ``start --attach`` as the task
    process (watched like any other), and remove the container if it outlives the attempt.

    ``argv`` is the command inside the container (empty: the image's own), ``env`` the variables
    passed into it, ``mounts`` the host paths it sees, ``workdir`` where the command starts (None:
    the image's WORKDIR). With ``pull``, a missing image is pulled first (as a Batch node does),
    else it is an error. Failures to create or start the container end the attempt with
    ``error`` and ``failure_code`` set, as a program that cannot start does.
    """

    def __init__(self, runtime: Runtime, *, image: str, argv: Sequence[str], paths: TaskPaths,
                 env: Mapping[str, str], mounts: Sequence[Mount], workdir: str | None,
                 run_options: str = "", pull: bool = False, credentials: Credentials | None = None,
                 watch: Watch | None = None, on_container: Callable[[str, str], None] | None = None) -> None:
        self.runtime = runtime
        self.image = image
        self.argv = list(argv)
        self.paths = paths
        self.env = dict(env)
        self.mounts = list(mounts)
        self.workdir = workdir
        self.run_options = run_options
        self.pull = pull
        self.credentials = credentials
        self.watch = watch
        self.on_container = on_container  # (container id, state) as it changes, for containerInfo
        self.name = container_name(paths)
        self.container_id: str | None = None
        self._process: TaskProcess | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def run(self, timeout: float | None = None, on_start: Callable[[int], None] | None = None) -> ProcessResult:
        start = time.time()
        try:
            options = shlex.split(self.run_options)
        except ValueError as exc:
            return self._failed(start, ContainerError(INVALID_SETTINGS, f"container run options: {exc}"))
        try:
            if self.pull:  # else a missing image is create's error (it never pulls: --pull never)
                self.runtime.ensure_image(self.image, pull=True, credentials=self.credentials)
            self._create(options)
        except ContainerError as exc:
            return self._failed(start, exc)
        if self.on_container and self.container_id:
            self.on_container(self.container_id, "created")
        with self._lock:
            if self._stopped.is_set():
                self.runtime.remove(self.name)
                return ProcessResult(None, False, True, start, time.time())
            self._process = TaskProcess([self.runtime.program, "start", "--attach", self.name], self.paths,
                                        runtime_environment(), self.watch)
        if self.on_container and self.container_id:
            self.on_container(self.container_id, "running")
        result = dataclasses.replace(self._process.run(timeout, on_start=on_start), start=start)
        if result.timed_out or result.stopped:
            self.runtime.remove(self.name)  # a command that ignored SIGTERM still runs in there
        elif result.exit_code not in (0, None):
            message = self._start_failure()
            if message is not None:
                self.runtime.remove(self.name)
                result = ProcessResult(None, False, False, start, time.time(), error=message,
                                       failure_code=_start_failure_code(message))
        if self.on_container and self.container_id:
            self.on_container(self.container_id, "exited")
        return result

    def _create(self, options: list[str]) -> None:
        own = runtime_environment()
        clashing = {k: v for k, v in self.env.items() if k in own and own[k] != v}
        create_env = {**own, **self.env}  # the task's values, passed by name: never in argv
        for name in clashing:  # what the runtime itself needs keeps its value; these go in argv
            create_env[name] = own[name]
        args = self.runtime.create_args(
            self.name, self.image, self.argv, mounts=self.mounts, env_names=sorted(self.env),
            env_values=clashing, workdir=self.workdir, run_options=options, label=str(self.paths.root))
        for attempt in range(2):
            done = self.runtime.command(*args, env=create_env)
            if done.returncode == 0:
                self.container_id = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else self.name
                return
            message = _last_error(done.stderr)
            if attempt == 0 and "already in use" in message:  # one a killed run left behind
                self.runtime.remove(self.name)
                continue
            lowered = message.lower()
            if any(word in lowered for word in ("image not known", "no such image", "manifest unknown")):
                raise ContainerError(INVALID_IMAGE, f"no such image on this machine: {self.image} ({message})",
                                     self.image)
            if "invalid reference format" in lowered or "repository name must" in lowered:
                raise ContainerError(INVALID_IMAGE, message, self.image)
            raise ContainerError(INVALID_SETTINGS, message, self.image)

    def _start_failure(self) -> str | None:
        """Why the command never ran (the runtime's or the container init's last words), or None
        when it ran and chose its exit code."""
        tail = tail_lines(self.paths.stderr, 5)
        if tail and _init_exec_failed(tail[-1]):  # the init ran, the command could not start
            return tail[-1].strip()
        if self.runtime.state(self.name) in ("created", "configured"):  # the container never started
            return _last_error("\n".join(tail))
        return None

    def _failed(self, start: float, exc: ContainerError) -> ProcessResult:
        with contextlib.suppress(OSError), self.paths.stderr.open("a") as err:
            err.write(f"{exc.message}\n")
        return ProcessResult(None, False, False, start, time.time(), error=exc.message, failure_code=exc.code)

    def stop(self) -> None:
        """Stop the attempt from any thread without blocking: the attached client gets SIGTERM
        (passed on to the container's init), and the container is removed after a grace period."""
        with self._lock:
            self._stopped.set()
            process = self._process
        if process is None:
            return
        process.stop()
        killer = threading.Timer(KILL_GRACE_SECONDS, self.runtime.remove, (self.name,))
        killer.daemon = True
        killer.start()

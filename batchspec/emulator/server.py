"""The emulator's HTTP server and the :class:`Emulator` that ties state, engine and API together.

A ``ThreadingHTTPServer`` on loopback (one thread per connection, HTTP/1.1 keep-alive). Each
response is written with a single ``send`` and ``TCP_NODELAY`` so small answers are not held back
by Nagle's algorithm: a keep-alive round trip costs well under a millisecond. Successful answers
are chunked and errors carry ``Content-Length``, as on the service.
"""

from __future__ import annotations

import base64
import logging
import secrets
import signal
import socket
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from batchspec import __version__
from batchspec.emulator.api import BatchApi
from batchspec.emulator.auth import Authenticator, decode_key
from batchspec.emulator.execution import NodeRunner, Simulation
from batchspec.emulator.faults import FaultInjector, FaultSpec
from batchspec.emulator.handlers.base import Service
from batchspec.emulator.protocol import Request, Response, Stats
from batchspec.emulator.requestlog import RequestLog
from batchspec.emulator.scheduler import Engine, Timings
from batchspec.emulator.store import Persister, State
from batchspec.emulator.wire import Clock

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    416: "Requested Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_FIXED_HEADERS = (
    f"Server: batchspec-emulator/{__version__}\r\n"
    "Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n"
    "X-Content-Type-Options: nosniff\r\n"
)


def generate_key() -> str:
    """A random base64 account key, like a Batch account's."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


def encode_response(resp: Response, head: bool, date: str, keep_alive: bool) -> bytes:
    """The whole HTTP response as one buffer."""
    lines = [
        f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}\r\n",
        f"Date: {date}\r\n",
        _FIXED_HEADERS,
    ]
    lines += [f"{name}: {value}\r\n" for name, value in resp.headers]
    has_length = any(name.lower() == "content-length" for name, _ in resp.headers)
    body = b""
    if resp.chunked and not has_length:
        lines.append("Transfer-Encoding: chunked\r\n")
        if not head:
            body = (
                f"{len(resp.body):x}\r\n".encode("ascii") + resp.body + b"\r\n" if resp.body else b""
            ) + b"0\r\n\r\n"
    elif not has_length:
        lines.append(f"Content-Length: {len(resp.body)}\r\n")
        body = b"" if head else resp.body
    else:
        body = b"" if head else resp.body
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        req = Request(self.command, raw_path, raw_query, headers, body, query=query)
        try:
            assert self.server.api is not None
            resp = self.server.api.handle(req)
        except Exception:
            log.exception("emulator request failed: %s %s", self.command, raw_path)
            resp = Response(500, [("request-id", req.request_id)], b"", chunked=False)
        if resp.drop:
            self.close_connection = True  # closed without an answer (FIN), as a lost response
            return
        if resp.reset:
            # Drop the connection without an answer (RST), as a flaky network does.
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        keep_alive = not self.close_connection
        data = encode_response(resp, self.command == "HEAD", self.date_time_string(), keep_alive)
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]) -> None:
        self.api: BatchApi | None = None  # wired in before serving starts
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request is routine, not a traceback on stderr."""
        log.debug("connection error from %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class EmulatorConfig:
    """How to run an emulator. Timings are short in tests, cloud-like by default."""

    host: str = "127.0.0.1"
    port: int = 0
    account: str = "batchspec"
    key: str | None = None  # None: a random key
    token: str | None = None  # accepted bearer token (Entra ID path); None: bearer refused
    data_dir: Path | None = None  # None: in memory, node files in a temporary directory
    nodes: int = 2  # nodes actually run at once, over all pools
    faults: FaultSpec = field(default_factory=FaultSpec)
    seed: int | None = None
    timings: Timings = field(default_factory=Timings)
    auto_storage: str | None = None  # connection string of the auto-storage account; never shown
    time_scale: float = 1.0  # service time runs this many times faster than the wall clock
    simulation: Simulation | None = None  # --simulate: tasks do not run
    log: RequestLog | None = None  # one line per request


class Emulator:
    """A running Batch emulator: ``with Emulator(config) as emu: ...`` or :meth:`start`/:meth:`stop`.

    ``endpoint``, ``account`` and ``key`` are what a ``BatchClient`` needs; :meth:`request_counts`
    tells how many requests each operation received.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        if self.config.host not in ("127.0.0.1", "localhost", "::1") and not self.config.host.startswith("127."):
            raise ValueError("the emulator listens on loopback only (--host 127.0.0.1)")
        if self.config.nodes < 0:
            raise ValueError("--nodes must be 0 or more")
        if self.config.time_scale <= 0:
            raise ValueError("--time-scale must be more than 0")
        self.key = self.config.key or generate_key()
        decode_key(self.key)
        self.account = self.config.account
        self.token = self.config.token
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._persister: Persister | None = None
        self.state = State(Clock(self.config.time_scale))
        self.faults = FaultInjector(self.config.faults, self.config.seed)
        self.engine: Engine | None = None
        self.api: BatchApi | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        address = self._server.server_address
        host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        host_text = f"[{host}]" if ":" in host else host
        return f"http://{host_text}:{address[1]}"

    @property
    def root(self) -> Path:
        """Where node directories live (``<data-dir or temp dir>/nodes``)."""
        if self.config.data_dir is not None:
            return self.config.data_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="batchspec-emulator-")
        return Path(self._tmp.name)

    def start(self) -> Emulator:
        root = self.root
        nodes_root = root / "nodes"
        nodes_root.mkdir(parents=True, exist_ok=True)
        # Bind first: entity URLs need the real port (connections wait in the backlog meanwhile).
        server_class = _Server6 if ":" in self.config.host else _Server
        server = server_class((self.config.host, self.config.port))
        self._server = server
        try:
            self._wire(server, nodes_root)
        except BaseException:
            server.server_close()
            self._server = None
            raise
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def _wire(self, server: _Server, nodes_root: Path) -> None:
        """Restore state, then build the engine and the API and start the background threads."""
        base = self.endpoint
        self.state.base_url = base
        timings = self.config.timings
        if self.config.data_dir is not None:
            data = Persister.load(self.config.data_dir, base)
            if data is not None:
                self.state.restore(data, boot_delay=timings.node_start, delete_delay=timings.delete)
        runner = NodeRunner(
            account=self.account, base_url=base, nodes_root=nodes_root, auto_storage=self.config.auto_storage
        )
        self.engine = Engine(
            self.state,
            runner=runner,
            base_url=base,
            max_nodes=self.config.nodes,
            timings=timings,
            faults=self.faults,
            simulation=self.config.simulation,
        )
        service = Service(self.state, self.engine, base, nodes_root, Stats())
        self.api = BatchApi(
            service,
            auth=Authenticator(self.account, self.key, self.token),
            faults=self.faults,
            log=self.config.log,
        )
        server.api = self.api
        if self.config.data_dir is not None:
            self._persister = Persister(self.state, self.config.data_dir)
            self._persister.start()
        self.engine.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.engine is not None:
            self.engine.stop()
        if self._persister is not None:
            self._persister.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self.config.log is not None:
            self.config.log.close()
        self._server = None

    def serve_until_interrupted(self) -> None:
        """Block until Ctrl-C or SIGTERM (used by the CLI), so either stops the nodes' tasks."""
        if self._thread is None:
            raise RuntimeError("the emulator is not running")

        def on_term(_signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def request_counts(self) -> dict[str, int]:
        """Requests received per operation (e.g. ``create_task_collection``), faults included."""
        return self.api.stats.snapshot() if self.api else {}

    def fault_counts(self) -> dict[str, int]:
        return dict(self.faults.counts)

    def stats(self) -> dict[str, dict[str, int]]:
        return {"requests": self.request_counts(), "faults": self.fault_counts()}

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

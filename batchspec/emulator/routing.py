"""Routing: a request's method and path to the handler that serves it.

Routes are declared by the handler classes (:meth:`Resource.routes`) as path shapes: ``{}`` is
one id segment, ``*`` the rest of the path (a file's path). A path no shape matches answers as
the service answers an unknown URI (400 ``InvalidUri``), naming what the emulator leaves out; a
known path with another method answers 405 ``UnsupportedHttpVerb``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

from batchspec.emulator.errors import ApiError, error, unsupported
from batchspec.emulator.handlers.base import Handler, Route

#: Parts of the Batch API the emulator does not implement, by the path segment that names them.
NOT_EMULATED = {
    "jobschedules": "Job schedules are not emulated.",
    "certificates": "Certificates are not emulated.",
    "applications": "Application packages are not emulated.",
    "supportedimages": "The list of supported images is not emulated.",
    "nodeagentskus": "The list of node agent SKUs is not emulated.",
    "poolusagemetrics": "Pool usage metrics are not emulated.",
    "users": "Node user accounts are not emulated (tasks run as the emulator's user).",
    "remoteloginsettings": "Remote login to emulated nodes is not possible.",
    "uploadbatchservicelogs": "Uploading node service logs is not emulated.",
    "extensions": "VM extensions are not emulated.",
    "deallocate": "Deallocating nodes is not emulated.",
    "start": "Starting deallocated nodes is not emulated.",
    "lifetimestats": "Lifetime statistics are not emulated.",
    "subtasksinfo": "Multi-instance tasks are not emulated.",
}


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._shapes: dict[tuple[str, ...], dict[str, Route]] = {}
        for route in routes:
            self._shapes.setdefault(tuple(route.shape.split("/")), {})[route.method] = route

    def resolve(self, method: str, raw_path: str) -> tuple[str, Handler, tuple[str, ...]]:
        """The operation name, its handler and the path's ids; raises :class:`ApiError`."""
        segments = [unquote(p) for p in raw_path.split("/") if p != ""]
        for shape, methods in self._shapes.items():
            args = _match(shape, segments)
            if args is None:
                continue
            route = methods.get(method)
            if route is None:
                raise error(405, "UnsupportedHttpVerb")
            return route.operation, route.handler, args
        raise _unknown(segments)


def _match(shape: tuple[str, ...], segments: list[str]) -> tuple[str, ...] | None:
    if shape and shape[-1] == "*":
        if len(segments) < len(shape):
            return None
        head, rest = segments[: len(shape) - 1], segments[len(shape) - 1 :]
    else:
        if len(segments) != len(shape):
            return None
        head, rest = segments, []
    args: list[str] = []
    for part, segment in zip(shape, head, strict=False):
        if part == "{}":
            args.append(segment)
        elif part != segment:
            return None
    if rest:
        args.append("/".join(rest))
    return tuple(args)


def _unknown(segments: list[str]) -> ApiError:
    for segment in segments:
        reason = NOT_EMULATED.get(segment.lower())
        if reason:
            return unsupported(f"{reason} (batchspec emulator)")
    return unsupported("The batchspec emulator does not support this operation.")

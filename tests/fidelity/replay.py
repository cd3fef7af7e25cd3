"""Replaying recordings of the real Batch service against the emulator, and comparing answers.

A recording is a list of requests and the service's responses. :class:`Replayer` sends each
supported request (same method, path, query, body and client headers) to the emulator through the
SDK's pipeline (so it is signed with Shared Key), and :func:`compare` holds the answer against the
recorded one: status; header names and value formats; body key sets, key order, types, enum values
and service-filled defaults. Values that legitimately differ (times, ETags, request ids, hosts,
node ids, generated pool ids) are checked for format only. GETs are re-sent for a while until the
emulator has reached the recorded state (allocation, node and task states move over time).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from azure.batch import BatchClient
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest, HttpResponse

RECORDINGS = Path(__file__).parent / "recordings"

ETAG_RE = re.compile(r"^0x[0-9A-F]{15}$")
RFC1123_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$")
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: Response headers whose value must be equal; others are checked for format (or presence).
EQUAL_HEADERS = {"dataserviceversion", "content-type", "transfer-encoding", "ocp-batch-file-isdirectory"}
#: Headers the emulator may add: none (a Windows node, as recorded, sends no file mode).
EXTRA_HEADERS: set[str] = set()
#: Body keys whose values legitimately differ run to run: compared by format only.
VOLATILE_KEYS = {
    "eTag",
    "lastModified",
    "creationTime",
    "stateTransitionTime",
    "previousStateTransitionTime",
    "allocationStateTransitionTime",
    "startTime",
    "endTime",
    "lastBootTime",
    "allocationTime",
    "lastUpdateTime",
    "timestamp",
    "ipAddress",
    "contentLength",
    "version",  # node agent version
    "name",  # file names in node file lists
}
URL_KEYS = {"url", "nodeUrl", "taskRootDirectoryUrl", "odata.metadata", "odata.nextLink", "location"}
#: Keys the emulator does not produce: inbound NAT endpoints of a node need a real network.
MISSING_OK = {"endpointConfiguration"}
#: Keys the emulator may add: none (a Windows node, as recorded, reports no file mode).
EXTRA_OK: set[str] = set()


@dataclass
class Mismatch(Exception):
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


@dataclass
class Ids:
    """Recorded ids (nodes, auto pools) and the emulator's ids for the same things."""

    mapping: dict[str, str] = field(default_factory=dict)

    def learn(self, recorded: str, ours: str) -> None:
        if recorded != ours:
            self.mapping.setdefault(recorded, ours)

    def apply(self, text: str) -> str:
        for old, new in self.mapping.items():
            text = text.replace(old, new)
        return text


def _path(url: str) -> str:
    parsed = urlparse(url)
    return unquote(parsed.path).replace("\\", "/") + (f"#{parsed.fragment}" if parsed.fragment else "")


def compare(recorded: Any, ours: Any, where: str, ids: Ids) -> None:
    """Raise :class:`Mismatch` where ``ours`` does not have the recorded shape and values."""
    if isinstance(recorded, dict):
        if not isinstance(ours, dict):
            raise Mismatch(where, f"expected an object, got {type(ours).__name__}")
        want = [k for k in recorded if not (k in MISSING_OK and k not in ours)]
        have = [k for k in ours if not (k in EXTRA_OK and k not in recorded)]
        if want != have:
            raise Mismatch(where, f"keys differ:\n  recorded {want}\n  emulator {have}")
        rec_id, our_id = recorded.get("id"), ours.get("id")
        if (
            isinstance(rec_id, str)
            and isinstance(our_id, str)
            and (rec_id.startswith("tvmps_") or GUID_RE.match(rec_id))
        ):
            ids.learn(rec_id, our_id)
        for key in want:
            _compare_value(key, recorded[key], ours[key], f"{where}.{key}", ids)
        return
    if isinstance(recorded, list):
        if not isinstance(ours, list):
            raise Mismatch(where, f"expected a list, got {type(ours).__name__}")
        if len(recorded) != len(ours):
            raise Mismatch(where, f"{len(recorded)} items recorded, {len(ours)} from the emulator")
        for i, (rec, got) in enumerate(zip(recorded, ours, strict=True)):
            compare(rec, got, f"{where}[{i}]", ids)
        return
    if type(recorded) is not type(ours):
        raise Mismatch(where, f"type {type(ours).__name__}, recorded {type(recorded).__name__} ({recorded!r})")
    if recorded != ours:
        raise Mismatch(where, f"{ours!r}, recorded {recorded!r}")


def _compare_value(key: str, recorded: Any, ours: Any, where: str, ids: Ids) -> None:
    if key == "id" and isinstance(recorded, str):
        recorded = ids.apply(recorded)  # node ids are generated: compared through the learnt mapping
    if key in VOLATILE_KEYS:
        if type(recorded) is not type(ours):
            raise Mismatch(where, f"type {type(ours).__name__}, recorded {type(recorded).__name__}")
        if isinstance(recorded, str) and ISO_RE.match(recorded) and not ISO_RE.match(ours):
            raise Mismatch(where, f"{ours!r} is not an ISO 8601 UTC time like {recorded!r}")
        if key == "eTag" and not ETAG_RE.match(ours):
            raise Mismatch(where, f"{ours!r} is not an ETag like {recorded!r}")
        return
    if key in URL_KEYS:
        if not isinstance(ours, str) or not ours.startswith("http"):
            raise Mismatch(where, f"{ours!r} is not a URL")
        want, have = ids.apply(_path(recorded)), _path(ours)
        if "/files/" in want:  # file entries: the names differ (Windows recording, Linux node)
            want, have = want.split("/files/")[0], have.split("/files/")[0]
        if urlparse(recorded).hostname != "example.com" and want != have:
            raise Mismatch(where, f"URL path {_path(ours)!r}, recorded {want!r}")
        return
    generated = isinstance(recorded, str) and (GUID_RE.match(recorded) or "tvmps_" in recorded)
    if key in ("poolId", "nodeId", "affinityId") and generated:
        # Node ids and auto pool ids (upper-case GUIDs) are generated: mapped, or format only.
        mapped = ids.apply(recorded)
        if mapped != ours and not (GUID_RE.match(recorded) and GUID_RE.match(ours) and ours == ours.upper()):
            raise Mismatch(where, f"{ours!r}, recorded {recorded!r}")
        return
    if key == "value" and isinstance(recorded, str) and "\nRequestId:" in recorded:
        if not isinstance(ours, str) or ours.split("\n")[0] != recorded.split("\n")[0]:
            raise Mismatch(where, f"message {ours!r}, recorded {recorded!r}")
        if not re.match(r"^.*\nRequestId:[0-9a-f-]{36}\nTime:\d{4}-\d\d-\d\dT[\d:.]+Z$", ours, re.DOTALL):
            raise Mismatch(where, f"message {ours!r} lacks RequestId/Time lines")
        return
    if key == "value" and isinstance(recorded, list) and all(isinstance(x, dict) and "taskId" in x for x in recorded):
        # addtaskcollection results come back in no particular order (the service reorders them).
        recorded = sorted(recorded, key=lambda x: str(x["taskId"]))
        ours = sorted(ours, key=lambda x: str(x.get("taskId"))) if isinstance(ours, list) else ours
    if key == "value" and isinstance(recorded, list) and recorded and isinstance(ours, list) and ours:
        # A list of entities: each of ours must have the shape of the recorded item at its place,
        # or of any recorded item when the lists differ (file lists of a Windows node, say).
        if len(recorded) == len(ours):
            for i, (rec, got) in enumerate(zip(recorded, ours, strict=True)):
                compare(rec, got, f"{where}[{i}]", ids)
            return
        for i, got in enumerate(ours):
            errors = []
            for rec in recorded:
                try:
                    compare(rec, got, f"{where}[{i}]", ids)
                    break
                except Mismatch as exc:
                    errors.append(exc)
            else:
                raise errors[0]
        return
    if key == "value" and isinstance(recorded, list) and isinstance(ours, list) and (not recorded or not ours):
        return  # leftovers of other runs in the recorded account, or none here: shape unknown
    compare(recorded, ours, where, ids)


def compare_headers(recorded: dict[str, str], ours: dict[str, str], where: str, ids: Ids) -> None:
    rec = {k.lower(): v for k, v in recorded.items()}
    got = {k.lower(): v for k, v in ours.items()}
    missing = set(rec) - set(got)
    extra = set(got) - set(rec) - EXTRA_HEADERS
    if missing or extra:
        raise Mismatch(where, f"headers missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, value in rec.items():
        mine = got[name]
        if name in EQUAL_HEADERS and value != mine:
            raise Mismatch(f"{where} {name}", f"{mine!r}, recorded {value!r}")
        if name == "etag" and not ETAG_RE.match(mine):
            raise Mismatch(f"{where} ETag", f"{mine!r} is not like {value!r}")
        if name in ("last-modified", "date", "ocp-creation-time") and not RFC1123_RE.match(mine):
            raise Mismatch(f"{where} {name}", f"{mine!r} is not an RFC 1123 date like {value!r}")
        if name == "request-id" and not GUID_RE.match(mine):
            raise Mismatch(f"{where} request-id", f"{mine!r} is not a GUID")
        if name == "content-length" and (not mine.isdigit() or (value == "0") != (mine == "0")):
            raise Mismatch(f"{where} Content-Length", f"{mine!r}, recorded {value!r}")
        if name in ("dataserviceid", "location", "ocp-batch-file-url"):
            url = unquote(value) if name == "ocp-batch-file-url" else value
            mine_url = unquote(mine) if name == "ocp-batch-file-url" else mine
            if urlparse(url).hostname != "example.com" and ids.apply(_path(url)) != _path(mine_url):
                raise Mismatch(f"{where} {name}", f"{mine!r}, recorded {value!r}")


@dataclass
class Entry:
    index: int
    method: str
    uri: str
    request_headers: dict[str, str]
    request_body: Any
    status: int
    headers: dict[str, str]
    body: Any


def load(name: str) -> list[Entry]:
    data = json.loads((RECORDINGS / name).read_text(encoding="utf-8"))
    return [
        Entry(
            i,
            e["RequestMethod"],
            e["RequestUri"],
            e["RequestHeaders"],
            e.get("RequestBody"),
            int(e["StatusCode"]),
            e["ResponseHeaders"],
            e.get("ResponseBody"),
        )
        for i, e in enumerate(data["Entries"])
    ]


@dataclass
class Replayer:
    client: BatchClient
    endpoint: str
    ids: Ids = field(default_factory=Ids)
    next_link: str | None = None
    timeout: float = 10.0
    compared: int = 0

    def url(self, entry: Entry) -> str:
        parsed = urlparse(entry.uri)
        if "$skiptoken" in parsed.query:
            assert self.next_link, f"entry {entry.index}: no odata.nextLink to follow"
            return self.next_link
        return self.ids.apply(f"{self.endpoint}{parsed.path}" + (f"?{parsed.query}" if parsed.query else ""))

    def send(self, entry: Entry) -> HttpResponse:
        headers = {}
        for name in ("Content-Type", "return-client-request-id", "client-request-id", "Accept"):
            for key, value in entry.request_headers.items():
                if key.lower() == name.lower():
                    headers[name] = value
        body = None if entry.request_body in (None, "") else json.dumps(entry.request_body).encode("utf-8")
        request = HttpRequest(entry.method, self.url(entry), headers=headers, content=body)
        try:
            response = self.client.send_request(request)
        except HttpResponseError as exc:  # the SDK's error policy raises on 4xx/5xx: keep the answer
            assert exc.response is not None
            response = exc.response  # type: ignore[assignment]
        response.read()
        return response

    def check(self, entry: Entry, response: HttpResponse) -> None:
        where = f"entry {entry.index} {entry.method} {urlparse(entry.uri).path}"
        if response.status_code != entry.status:
            raise Mismatch(where, f"status {response.status_code}, recorded {entry.status}: {response.text()[:300]}")
        recorded = entry.body
        if isinstance(recorded, list) and all(isinstance(x, str) for x in recorded):
            recorded = None  # a file body, stored as text lines by the recorder
        if recorded not in (None, ""):
            ours = json.loads(response.text())
            compare(recorded, ours, where, self.ids)
            self.next_link = ours.get("odata.nextLink") if isinstance(ours, dict) else None
        elif entry.method != "HEAD" and response.headers.get("Content-Type", "").startswith("application/json"):
            raise Mismatch(where, f"unexpected body {response.text()[:200]!r}")
        compare_headers(entry.headers, dict(response.headers), where, self.ids)

    def replay(self, entry: Entry) -> None:
        """Send ``entry``; GETs are re-sent until the emulator reaches the recorded state."""
        deadline = time.monotonic() + (self.timeout if entry.method == "GET" else 0)
        first: Mismatch | None = None
        while True:
            response = self.send(entry)
            try:
                self.check(entry, response)
                self.compared += 1
                return
            except Mismatch as exc:
                first = first or exc
                if time.monotonic() >= deadline:
                    if first is not exc:
                        raise Mismatch(exc.where, f"{exc.detail}\n  (first attempt: {first})") from exc
                    raise
                time.sleep(0.05)

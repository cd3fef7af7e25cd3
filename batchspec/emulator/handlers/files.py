"""Files on nodes and in task directories: get, properties (HEAD), delete, and lists.

A node answers as its pool's OS does: a Linux node adds the file mode (``ocp-batch-file-mode``,
``properties.fileMode``); a Windows node names files in recursive lists with backslashes and
reports no mode. Paths never leave the node's directory.
"""

from __future__ import annotations

import mimetypes
import re
import shutil
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

from batchspec.emulator import odata
from batchspec.emulator.errors import error, not_found
from batchspec.emulator.handlers.base import Resource, Route
from batchspec.emulator.protocol import Request, Response
from batchspec.emulator.store import Pool, Task
from batchspec.emulator.wire import EPOCH_TICKS, TICKS_PER_SECOND, Json, iso


class Files(Resource):
    def routes(self) -> list[Route]:
        return [
            Route("GET", "pools/{}/nodes/{}/files", "list_node_files", self.list_node_files),
            Route("GET", "pools/{}/nodes/{}/files/*", "get_node_file", self.node_file),
            Route("HEAD", "pools/{}/nodes/{}/files/*", "get_node_file_properties", self.node_file),
            Route("DELETE", "pools/{}/nodes/{}/files/*", "delete_node_file", self.delete_node_file),
            Route("GET", "jobs/{}/tasks/{}/files", "list_task_files", self.list_task_files),
            Route("GET", "jobs/{}/tasks/{}/files/*", "get_task_file", self.task_file),
            Route("HEAD", "jobs/{}/tasks/{}/files/*", "get_task_file_properties", self.task_file),
            Route("DELETE", "jobs/{}/tasks/{}/files/*", "delete_task_file", self.delete_task_file),
        ]

    def _node_dir(self, node_id: str) -> Path:
        return self.service.nodes_root / node_id

    @staticmethod
    def _safe(root: Path, rel: str) -> Path:
        rel = rel.replace("\\", "/").strip("/")
        path = (root / rel).resolve() if rel else root.resolve()
        base = root.resolve()
        if path != base and base not in path.parents:
            raise not_found("File")
        return path

    def _task_dir(self, task: Task) -> Path:
        info = task.body.get("nodeInfo")
        if not info:
            raise not_found("File")  # the task has not run on any node yet
        return self._node_dir(str(info["nodeId"])) / str(info["taskRootDirectory"]).replace("\\", "/")

    def _task_pool(self, task: Task) -> Pool | None:
        info = task.body.get("nodeInfo") or {}
        return self.state.pools.get(str(info.get("poolId", "")).lower())

    def _node(self, pool_id: str, node_id: str) -> Pool:
        pool = self.pool(pool_id)
        if node_id not in pool.nodes:
            raise not_found("Node")
        return pool

    def _file_response(self, req: Request, path: Path, url: str, linux: bool) -> Response:
        try:
            st = path.stat()
        except OSError:
            raise not_found("File") from None
        is_dir = path.is_dir()
        ctype = "application/octet-stream"
        if not is_dir:
            ctype = mimetypes.guess_type(path.name)[0] or ctype
        headers = [
            ("Content-Type", ctype),
            *self.common(req),
            ("Last-Modified", _http_time(st.st_mtime)),
            ("ocp-creation-time", _http_time(st.st_ctime)),
            ("ocp-batch-file-isdirectory", "True" if is_dir else "False"),
            ("ocp-batch-file-url", quote(url, safe="")),
        ]
        if linux:
            headers.append(("ocp-batch-file-mode", oct(st.st_mode)))
        if req.method == "HEAD":
            return Response(200, [*headers, ("Content-Length", "0" if is_dir else str(st.st_size))], chunked=False)
        data = b"" if is_dir else path.read_bytes()
        wanted = req.headers.get("ocp-range")
        if wanted:
            data = _byte_range(data, wanted)
        return Response(200, headers, data)

    def task_file(self, req: Request, job_id: str, task_id: str, rel: str) -> Response:
        job, task = self.task(job_id, task_id)
        path = self._safe(self._task_dir(task), rel)
        rel_url = rel.replace("\\", "/").strip("/")
        pool = self._task_pool(task)
        url = f"{self.base}/jobs/{job.id}/tasks/{task.id}/files/{rel_url}"
        return self._file_response(req, path, url, pool is None or not pool.windows)

    def node_file(self, req: Request, pool_id: str, node_id: str, rel: str) -> Response:
        pool = self._node(pool_id, node_id)
        path = self._safe(self._node_dir(node_id), rel)
        rel_url = rel.replace("\\", "/").strip("/")
        url = f"{self.base}/pools/{pool.id}/nodes/{node_id}/files/{rel_url}"
        return self._file_response(req, path, url, not pool.windows)

    def _delete_file(self, req: Request, path: Path) -> Response:
        if not path.exists():
            raise not_found("File")
        if path.is_dir():
            if req.query.get("recursive", "").lower() != "true" and any(path.iterdir()):
                raise error(409, "OperationInvalidForCurrentState", ("Reason", "The directory is not empty."))
            shutil.rmtree(path)
        else:
            path.unlink()
        return self.done(req, 200)

    def delete_task_file(self, req: Request, job_id: str, task_id: str, rel: str) -> Response:
        _job, task = self.task(job_id, task_id)
        return self._delete_file(req, self._safe(self._task_dir(task), rel))

    def delete_node_file(self, req: Request, pool_id: str, node_id: str, rel: str) -> Response:
        self._node(pool_id, node_id)
        return self._delete_file(req, self._safe(self._node_dir(node_id), rel))

    def _file_list(self, req: Request, root: Path, url: str, linux: bool) -> Response:
        recursive = req.query.get("recursive", "").lower() == "true"
        entries: list[tuple[str, Json]] = []
        level = [root] if root.is_dir() else []
        while level:
            next_level: list[Path] = []
            for directory in level:
                for child in sorted(directory.iterdir(), key=lambda p: p.name):
                    rel = child.relative_to(root).as_posix()
                    # A Windows node writes its paths with backslashes; URLs keep slashes.
                    name = rel if linux else rel.replace("/", "\\")
                    entry: Json = {"name": name, "url": f"{url}/{rel}", "isDirectory": child.is_dir()}
                    if child.is_dir():
                        if recursive:
                            next_level.append(child)
                    else:
                        st = child.stat()
                        props: Json = {
                            "creationTime": _iso_time(st.st_ctime),
                            "lastModified": _iso_time(st.st_mtime),
                            "contentLength": str(st.st_size),
                            "contentType": mimetypes.guess_type(child.name)[0] or "application/octet-stream",
                        }
                        if linux:
                            props["fileMode"] = oct(st.st_mode)
                        entry["properties"] = props
                    entries.append((rel, entry))
            level = next_level
        page = odata.paginate(((str(i).zfill(9), e) for i, (_rel, e) in enumerate(entries)), req.query, url)
        obj: Json = {"odata.metadata": f"{self.base}/$metadata#files", "value": page.items}
        if page.next_link:
            obj["odata.nextLink"] = page.next_link
        return self.json(req, obj)

    def list_task_files(self, req: Request, job_id: str, task_id: str) -> Response:
        job, task = self.task(job_id, task_id)
        if not task.body.get("nodeInfo"):
            return self.json(req, {"odata.metadata": f"{self.base}/$metadata#files", "value": []})
        pool = self._task_pool(task)
        url = f"{self.base}/jobs/{job.id}/tasks/{task.id}/files"
        return self._file_list(req, self._task_dir(task), url, pool is None or not pool.windows)

    def list_node_files(self, req: Request, pool_id: str, node_id: str) -> Response:
        pool = self._node(pool_id, node_id)
        url = f"{self.base}/pools/{pool.id}/nodes/{node_id}/files"
        return self._file_list(req, self._node_dir(node_id), url, not pool.windows)


def _http_time(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def _iso_time(seconds: float) -> str:
    return iso(EPOCH_TICKS + int(seconds * TICKS_PER_SECOND))


def _byte_range(data: bytes, spec: str) -> bytes:
    """The bytes of an ``ocp-range`` such as ``bytes=0-99`` or ``bytes=100-``."""
    match = re.match(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", spec)
    if not match:
        raise error(416, "InvalidRange", message="The range specified is invalid for the current size of the resource.")
    start_text, end_text = match.groups()
    if start_text == "":
        return data[-int(end_text) :] if end_text else data
    start = int(start_text)
    end = int(end_text) + 1 if end_text else len(data)
    return data[start:end]

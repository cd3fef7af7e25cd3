"""Task files in and out of blob storage, as a Batch node does.

``resourceFiles`` are downloaded into the task's working directory before the command runs
(``httpUrl`` + ``filePath``; ``storageContainerUrl`` with an optional ``blobPrefix``, ``filePath``
then being a directory). ``outputFiles`` are uploaded after the task ends, by ``filePattern``
(``*``, ``**``, ``?``, ``[...]``, relative to the working directory) and ``uploadCondition``, to
their ``containerUrl`` with azure-storage-blob. Failures become the service's ``failureInfo``.
SAS signatures never appear in messages.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchspec.emulator.wire import Json, failure_info
from batchspec.globs import glob_files, normalize, split_fixed

_SIG_RE = re.compile(r"(sig=)[^&\s'\"]*", re.IGNORECASE)
_WILDCARD_RE = re.compile(r"[*?\[]")
_VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)\}")

#: Default mode of downloaded resource files on a Linux node.
DEFAULT_FILE_MODE = 0o770


def redact(text: str) -> str:
    """``text`` with SAS signatures removed."""
    return _SIG_RE.sub(r"\1REDACTED", text)


@dataclass
class FileError(Exception):
    """A resource file or output file failure, carrying the task's ``failureInfo``."""

    info: Json

    def __str__(self) -> str:
        return str(self.info.get("message"))


def _download_failure(status: int | None, detail: str, name: str) -> FileError:
    if status == 404:
        code, category, msg = "BlobNotFound", "usererror", "One of the specified Azure Blob(s) is not found."
    elif status in (401, 403):
        code, category, msg = (
            "BlobAccessDenied",
            "usererror",
            "Access for one of the specified Azure Blob(s) is denied.",
        )
    else:
        code, category = "BlobDownloadMiscError", "servererror"
        msg = "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)."
    return FileError(failure_info(category, code, msg, FilePath=name, Message=redact(detail)))


def _inside(root: Path, relative: str, name: str) -> Path:
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise FileError(
            failure_info(
                "usererror",
                "ResourceFileCreateFailed",
                "Failure encountered creating resource file.",
                FilePath=name,
                Message="The file path must stay inside the task's working directory.",
            )
        )
    return target


def _chmod(path: Path, mode_text: str | None, linux: bool) -> None:
    if not linux:
        return  # fileMode applies to Linux nodes only; a Windows node ignores it
    mode = DEFAULT_FILE_MODE
    if mode_text:
        try:
            mode = int(str(mode_text), 8)
        except ValueError:
            mode = DEFAULT_FILE_MODE
    os.chmod(path, mode)


def download_resource_files(
    files: Sequence[Mapping[str, Any]], wd: Path, *, auto_storage: str | None = None, linux: bool = True
) -> None:
    """Download ``files`` into ``wd``; raises :class:`FileError` with the service's failure info.

    ``httpUrl`` lands at ``filePath``; a container (``storageContainerUrl``, or
    ``autoStorageContainerName`` in the account's auto-storage account given by the connection
    string ``auto_storage``) lands under the directory ``filePath`` (default: the working
    directory) with each blob's whole name, prefix included, as its relative path.
    """
    for spec in files:
        file_path = str(spec.get("filePath") or "")
        mode = spec.get("fileMode")
        if spec.get("httpUrl"):
            target = _inside(wd, file_path, file_path)
            _download_http(str(spec["httpUrl"]), target, file_path)
            _chmod(target, mode, linux)
            continue
        base = _inside(wd, file_path or ".", file_path)
        if spec.get("storageContainerUrl"):
            written = _download_container(str(spec["storageContainerUrl"]), None, spec.get("blobPrefix"), base)
        elif auto_storage:
            written = _download_container(
                auto_storage, str(spec.get("autoStorageContainerName")), spec.get("blobPrefix"), base
            )
        else:
            raise FileError(
                failure_info(
                    "usererror",
                    "BlobAccessDenied",
                    "Access for one of the specified Azure Blob(s) is denied.",
                    FilePath=file_path,
                    Message="The Batch account has no auto-storage account "
                    "(start the emulator with --auto-storage).",
                )
            )
        for target in written:
            _chmod(target, mode, linux)


def _download_http(url: str, target: Path, name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=120) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as exc:
        raise _download_failure(exc.code, f"HTTP {exc.code} {exc.reason}", name) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _download_failure(None, str(exc), name) from None


def _download_container(source: str, container_name: str | None, prefix: object, base: Path) -> list[Path]:
    """Blobs of a container URL (``container_name`` None) or of ``container_name`` in the account
    of the connection string ``source``."""
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.storage.blob import ContainerClient

    written: list[Path] = []
    try:
        client = (
            ContainerClient.from_container_url(source)
            if container_name is None
            else ContainerClient.from_connection_string(source, container_name)
        )
        with client as container:
            for blob in container.list_blobs(name_starts_with=str(prefix) if prefix else None):
                target = _inside(base, blob.name, blob.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    container.download_blob(blob.name).readinto(out)
                written.append(target)
    except HttpResponseError as exc:
        raise _download_failure(exc.status_code, str(exc.message or exc), str(prefix or "")) from None
    except (AzureError, OSError, ValueError) as exc:
        raise _download_failure(None, str(exc), str(prefix or "")) from None
    return written


# --------------------------------------------------------------------------------------------
# Output files


def _expand(pattern: str, env: Mapping[str, str]) -> str:
    return _VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), pattern)


def _matches(pattern: str, wd: Path) -> tuple[list[Path], Path]:
    """Files matching ``pattern`` (relative to ``wd``, or absolute) and the directory that
    wildcard matches' blob names are made relative to: the pattern's fixed leading part.

    As on a node, what is uploaded is what the pattern matches in the task's directory: a
    symbolic link is followed only to a file inside it, never out of it (a task's
    ``ln -s /etc x`` uploads nothing of /etc)."""
    prefix, _ = split_fixed(normalize(pattern))
    task_dir = os.path.realpath(wd.parent)
    relative = not pattern.startswith("/")
    found = [wd / rel for rel in glob_files(wd, pattern, follow_links=not relative)]
    inside = [p for p in found if os.path.commonpath([os.path.realpath(p), task_dir]) == task_dir and p.is_file()]
    return sorted(inside), wd / prefix


def upload_output_files(
    outputs: Sequence[Mapping[str, Any]], wd: Path, env: Mapping[str, str], succeeded: bool, log: Path
) -> None:
    """Upload the task's ``outputFiles`` whose condition holds; raises :class:`FileError`."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient, ContentSettings

    lines: list[str] = []
    failure: str | None = None
    for spec in outputs:
        # Upload conditions are compared on exit code 0 (tasksuccess) vs any other (taskfailure).
        condition = str((spec.get("uploadOptions") or {}).get("uploadCondition") or "tasksuccess").lower()
        if (condition == "tasksuccess" and not succeeded) or (condition == "taskfailure" and succeeded):
            continue
        container = ((spec.get("destination") or {}).get("container")) or {}
        url = str(container.get("containerUrl") or "")
        dest = str(container.get("path") or "").strip("/")
        pattern = _expand(str(spec.get("filePattern") or ""), env)
        files, base = _matches(pattern, wd)
        wildcard = bool(_WILDCARD_RE.search(pattern))
        if not files:
            if not wildcard:
                failure = f"{pattern}: file not found"
                lines.append(failure)
            continue
        headers = {h.get("name", "").lower(): h.get("value") for h in container.get("uploadHeaders") or []}
        settings = ContentSettings(content_type=headers.get("content-type")) if headers.get("content-type") else None
        try:
            with ContainerClient.from_container_url(url) as client:
                for path in files:
                    if wildcard:
                        rel = path.relative_to(base).as_posix() if base in path.parents else path.name
                        name = f"{dest}/{rel}" if dest else rel
                    else:
                        name = dest or path.name
                    with path.open("rb") as data:
                        client.upload_blob(name, data, overwrite=True, content_settings=settings)
                    lines.append(f"uploaded {path} to {name}")
        except (AzureError, OSError, ValueError) as exc:
            failure = redact(str(getattr(exc, "message", None) or exc))
            lines.append(f"upload failed: {failure}")
    if lines:
        with log.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    if failure is not None:
        raise FileError(
            failure_info(
                "usererror",
                "FileUploadMiscError",
                "Miscellaneous error encountered while uploading one of the output files",
                Message=failure,
            )
        )

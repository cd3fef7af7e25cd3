"""Resolve a spec's ``inputs`` into a sorted, deterministic list of input items.

Local patterns are matched by :mod:`batchspec.globs` (``**`` recursive, hidden files only when a
pattern names them).
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import BatchspecError
from ..globs import compile_glob, glob_files, normalize, split_fixed
from ..limits import MAX_TASKS
from ..spec.model import Inputs
from .model import InputFile

#: Lists blobs of a container under a prefix (names only); supplied by a storage-capable backend.
BlobLister = Callable[[str, str], Sequence[str]]


class PlanError(BatchspecError):
    """The spec is valid but cannot be expanded (missing inputs, collisions, template errors)."""


class EmptyInputError(PlanError):
    """No inputs: nothing to run (exit 2, as for any spec that cannot run)."""


class InputItem(NamedTuple):
    """One input: a unique ``key`` (for ids and hashes), an optional file, and its ``item`` value.

    A named tuple: a plan makes one per input, and it costs a third of a frozen dataclass."""

    key: str
    file: InputFile | None
    item: Any


def resolve_inputs(
    inputs: Inputs, base_dir: Path, blob_lister: BlobLister | None = None
) -> tuple[list[InputItem], list[str]]:
    """The input items and any warnings (patterns that matched nothing)."""
    if inputs.container is not None:
        items, warnings = _blob_items(inputs.container, inputs.prefix, blob_lister)
        empty_what = f"container '{inputs.container}'" + (f" with prefix '{inputs.prefix}'" if inputs.prefix else "")
    elif inputs.items is not None:
        items = _list_items(inputs.items, base_dir)
        empty_what = "inputs.list"
        warnings = []
    else:
        items, unmatched = _glob_items(inputs.paths, inputs.exclude, base_dir)
        empty_what = "patterns " + ", ".join(f"'{p}'" for p in inputs.paths) + f" (relative to {base_dir or '.'})"
        warnings = [f"input pattern '{p}' matched no files" for p in unmatched]
    if not items and not inputs.allow_empty:
        raise EmptyInputError(
            f"no inputs: {empty_what} matched nothing",
            "check the paths, or set inputs.allow_empty: true to allow a job with no tasks",
        )
    return items, warnings


def valid_name(path: str) -> str:
    """``path`` as valid Unicode: each byte of a file name that is not UTF-8 (kept by Python as
    a lone surrogate) written as ``%XX``. A task's working directory, a blob and a Batch request
    can only name files in Unicode; on this machine the file keeps its own name."""
    if path.isascii():
        return path
    return _SURROGATE.sub(lambda m: f"%{ord(m.group()) - 0xDC00:02X}", path)


_SURROGATE = re.compile("[\udc80-\udcff]")


# --- local globs -----------------------------------------------------------------------------


def _glob_items(
    patterns: Sequence[str], exclude: Sequence[str], base_dir: Path
) -> tuple[list[InputItem], list[str]]:
    excluded = [compile_glob(normalize(p)) for p in exclude]
    found: dict[str, str] = {}  # path relative to the spec -> where it goes in the working directory
    unmatched: list[str] = []
    for pattern in patterns:
        prefix, rest = split_fixed(normalize(pattern))
        # Taken a pattern at a time, not a file at a time (a plan can have 100,000 inputs). Files
        # an earlier pattern matched come again at most len(found) times: with the limit, that
        # many more are enough to know whether there are too many.
        rels = list(itertools.islice(glob_files(base_dir, pattern), MAX_TASKS + 1 + len(found)))
        if not rels:
            unmatched.append(pattern)
            continue
        if found:
            rels = [rel for rel in rels if rel not in found]
        if excluded:
            rels = [rel for rel in rels if not any(rx.match(rel) for rx in excluded)]
        # Its path below the pattern's fixed part (the file's name for a pattern without wildcards).
        cut = len(prefix) + 1 if prefix else 0
        wds = [rel[cut:] for rel in rels] if rest else [posixpath.basename(rel) for rel in rels]
        found.update(zip(rels, [wd if wd.isascii() else valid_name(wd) for wd in wds], strict=True))
        if len(found) > MAX_TASKS:
            raise PlanError(f"input patterns match more than {MAX_TASKS:,} files, more than the limit of "
                            f"{MAX_TASKS:,} tasks in one plan",
                            "narrow the patterns (or use inputs.exclude), or split the work into several specs")
    if len(set(found.values())) < len(found):  # two inputs at one working-directory path
        _collision(found)
    items = [InputItem(rel, InputFile(rel, found[rel]), rel) for rel in sorted(found)]
    return items, unmatched


def _collision(found: dict[str, str]) -> None:
    """Two inputs that would have the same path in a task's working directory, as an error."""
    placed: dict[str, str] = {}
    for rel, wd in found.items():
        if (other := placed.setdefault(wd, rel)) != rel:
            raise PlanError(f"inputs '{other}' and '{rel}' would both be '{wd}' in a task's "
                            "working directory (a byte that is not UTF-8 is written %XX there)",
                            "rename one of them, or leave one out with inputs.exclude")


# --- lists and blobs -------------------------------------------------------------------------


def _list_items(values: Sequence[str | dict[str, Any]], base_dir: Path) -> list[InputItem]:
    items: list[InputItem] = []
    missing: list[str] = []
    for index, value in enumerate(values):
        path = value if isinstance(value, str) else value.get("path")
        file = None
        if isinstance(path, str):
            rel = normalize(path)
            if not (base_dir / rel).is_file():
                missing.append(path)
            file = InputFile(rel, valid_name(posixpath.basename(rel)))
        described = sorted(value.items()) if isinstance(value, dict) else value
        key = path if isinstance(path, str) else f"list[{index}]:{described}"
        items.append(InputItem(key, file, value))
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise PlanError(f"inputs.list names files that do not exist (relative to {base_dir}): {shown}")
    return items


def _blob_items(container: str, prefix: str, lister: BlobLister | None) -> tuple[list[InputItem], list[str]]:
    if lister is None:
        raise PlanError(
            f"inputs.container '{container}' lists blobs in Azure Storage, which this backend cannot read",
            "run with --backend azure and a storage account configured "
            "(AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT), or use inputs.path for local files",
        )
    strip = prefix[: prefix.rfind("/") + 1]
    names = sorted(n for n in lister(container, prefix) if not n.endswith("/"))
    # A blob name is any text; staged under it, '..' or a leading '/' would leave the working directory.
    unsafe = [n for n in names if n[len(strip):].startswith("/") or ".." in n[len(strip):].split("/")]
    warnings: list[str] = []
    if unsafe:  # one odd name does not stop the others: those are left out, and named
        shown = ", ".join(f"'{n}'" for n in unsafe[:5]) + (f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
        warnings.append(f"inputs.container '{container}': left out {len(unsafe)} blob(s) whose names cannot be "
                        f"staged in a task's working directory (a '..' segment or a leading '/'): {shown}")
        names = [n for n in names if n not in set(unsafe)]
    if len(names) > MAX_TASKS:
        raise PlanError(f"inputs.container '{container}' has {len(names):,} blobs, more than the limit of "
                        f"{MAX_TASKS:,} tasks in one plan", "choose a narrower inputs.prefix")
    items = [InputItem(f"{container}/{n}", InputFile(n, n[len(strip):], container, "blob"), n) for n in names]
    return items, warnings

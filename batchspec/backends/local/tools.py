"""Check the tools a spec ``requires`` before any task starts.

ffmpeg gets a fallback: when it is not on PATH but the ``imageio-ffmpeg`` package is installed
(``pip install 'batchspec[ffmpeg]'``), its bundled binary is linked as ``ffmpeg`` into a
directory that is put first on the tasks' PATH.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ...errors import ToolMissingError

_INSTALL_HINTS = {
    "ffmpeg": "install it (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg) "
    "or install batchspec with its bundled ffmpeg: pip install 'batchspec[ffmpeg]'",
}


def bundled_ffmpeg() -> str | None:
    """The ffmpeg binary shipped by imageio-ffmpeg, if that package is installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None
    return exe if os.path.isfile(exe) else None


def resolve_tools(requires: Sequence[str], path: str, shim_dir: Path) -> tuple[str, list[str]]:
    """Check every required tool on ``path``; returns the PATH tasks should use and notes.

    Raises :class:`ToolMissingError` naming every missing tool and how to install it.
    """
    notes: list[str] = []
    missing: list[str] = []
    for tool in requires:
        if shutil.which(tool, path=path):
            continue
        if tool == "ffmpeg" and (exe := bundled_ffmpeg()):
            shim_dir.mkdir(parents=True, exist_ok=True)
            link = shim_dir / "ffmpeg"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(exe)
            path = f"{shim_dir}{os.pathsep}{path}"
            notes.append(f"ffmpeg is not on PATH: using the one bundled with imageio-ffmpeg ({exe})")
            continue
        missing.append(tool)
    if missing:
        lines = [f"'{tool}': {_INSTALL_HINTS.get(tool, 'install it and make sure it is on PATH')}"
                 for tool in missing]
        raise ToolMissingError(
            f"required tool{'s' if len(missing) > 1 else ''} not found on PATH: {', '.join(missing)}",
            "; ".join(lines) + " (the spec lists it under requires:)",
        )
    return path, notes

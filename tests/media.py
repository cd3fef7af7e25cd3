"""Media for tests, generated with ffmpeg (tests never read ../shared).

``make_mp4`` writes a short test pattern with a tone; ``probe_duration`` and ``decodes_cleanly``
check what a task produced.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def make_mp4(path: Path, seconds: float = 2.0, *, frequency: int = 440, size: str = "160x90",
             keyframes: int = 250) -> Path:
    """A small H.264/AAC MP4 of ``seconds`` seconds: test pattern video (10 fps, a keyframe
    every ``keyframes`` frames) and a sine tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [FFMPEG, "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=22050:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(keyframes), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "48k", "-shortest", str(path)],
        check=True,
    )
    return path


def probe_duration(path: Path) -> float:
    """Duration in seconds of a media file, from a full decode (no ffprobe needed)."""
    result = subprocess.run(
        [FFMPEG, "-v", "error", "-stats", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)
    assert times, f"no duration in ffmpeg output for {path}: {result.stderr[-500:]}"
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def decodes_cleanly(path: Path) -> bool:
    """True when ffmpeg decodes the whole file without reporting an error."""
    result = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0 and not result.stderr.strip()

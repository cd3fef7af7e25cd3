"""End to end with real ffmpeg: every MP4 becomes an MP3 that decodes and lasts as long."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import decodes_cleanly, make_mp4, probe_duration

from .conftest import SpecWriter
from .test_local_backend import invoke


@pytest.mark.e2e
def test_mp4_to_mp3(tmp_path: Path, write_spec: SpecWriter) -> None:
    lengths = {"one": 1.0, "two words": 2.0, "-dash": 1.5}  # a space and a leading dash, on purpose
    for stem, seconds in lengths.items():
        make_mp4(tmp_path / "inputs" / f"{stem}.mp4", seconds)
    spec = write_spec(
        "ffmpeg -hide_banner -y -i <<input>> -vn -b:a <<params.bitrate>> <<stem>>.mp3",
        outputs=["<<stem>>.mp3"], params={"bitrate": "96k"}, requires=["ffmpeg"], retries=1, timeout="2m",
    )
    code, output = invoke(spec)
    assert code == 0, output
    assert "OK: 3 succeeded, 0 failed of 3 tasks" in output
    for stem, seconds in lengths.items():
        mp3 = tmp_path / "out" / f"{stem}.mp3"
        assert decodes_cleanly(mp3), mp3
        assert probe_duration(mp3) == pytest.approx(seconds, abs=0.15)

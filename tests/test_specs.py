"""The specs in specs/: every one validates and plans, and each runs end to end on the local
backend with real ffmpeg, on small generated media in a temporary copy (never in the repo).
(Their runs on the Azure backend, through the emulator and Azurite, are in tests/azure.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.plan import build_plan
from batchspec.spec import load_spec, validate_file
from tests.media import FFMPEG, decodes_cleanly, make_mp4, probe_duration

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.yaml"))
# Input names: one plain, one that needs quoting in the command and escaping in output patterns.
INPUTS = ("a.mp4", "clip [b] it's.mp4")


def streams(path: Path) -> list[str]:
    """The stream descriptions ffmpeg prints for a file, e.g. ``Video: h264 (High) ..., 160x90``."""
    result = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False)
    return re.findall(r"Stream #\d+:\d+\S*: (.*)", result.stderr)


def video(path: Path) -> str:
    (found,) = [s for s in streams(path) if s.startswith("Video:")]
    return found


def audio(path: Path) -> str:
    (found,) = [s for s in streams(path) if s.startswith("Audio:")]
    return found


def size(description: str) -> tuple[int, int]:
    match = re.search(r", (\d+)x(\d+)", description)
    assert match, description
    return int(match.group(1)), int(match.group(2))


def check_mp3(path: Path) -> None:
    assert audio(path).startswith("Audio: mp3")
    assert streams(path) == [audio(path)]


def check_mp3_as_long_as_input(path: Path) -> None:
    check_mp3(path)
    assert probe_duration(path) == pytest.approx(SECONDS, abs=0.1)


def check_wav(path: Path) -> None:
    description = audio(path)
    assert description.startswith("Audio: pcm_s16le") and "44100 Hz" in description
    assert "stereo" in description or "2 channels" in description


def check_thumbnail(path: Path) -> None:
    assert video(path).startswith("Video: mjpeg")
    assert size(video(path)) == (320, 180)


def check_720p(path: Path) -> None:
    assert video(path).startswith("Video: h264")
    assert size(video(path)) == (160, 90)  # never upscaled
    assert audio(path).startswith("Audio: aac")


def check_gif(path: Path) -> None:
    assert video(path).startswith("Video: gif")
    assert size(video(path)) == (320, 180)


def check_loudnorm(path: Path) -> None:
    assert video(path).startswith("Video: h264") and size(video(path)) == (160, 90)  # copied
    assert audio(path).startswith("Audio: aac") and "48000 Hz" in audio(path)


def check_watermarked(path: Path) -> None:
    assert video(path).startswith("Video: h264") and size(video(path)) == (160, 90)
    assert audio(path).startswith("Audio: aac")


def check_playlist(path: Path) -> None:
    if path.suffix == ".m3u":  # the per-file MP3s, one per line, in name order
        assert path.read_text().splitlines() == sorted(f"{n.removesuffix('.mp4')}.mp3" for n in INPUTS)
        return
    check_mp3(path)
    if path.name == "all.mp3":
        assert probe_duration(path) == pytest.approx(SECONDS * len(INPUTS), abs=0.2)


def check_encoded(path: Path) -> None:
    """The joined video plays (decodes cleanly) and lasts exactly as long as its input."""
    assert video(path).startswith("Video: h264 (High)") and size(video(path)) == (160, 90)
    assert audio(path).startswith("Audio: aac")
    assert probe_duration(path) == pytest.approx(SECONDS, abs=0.1)


SECONDS = 1.5  # each generated input clip
# spec file -> (extra CLI arguments, output names per input stem, outputs of the whole job, check of each)
EXPECTED: dict[str, tuple[list[str], Callable[[str], list[str]], list[str], Callable[[Path], None]]] = {
    "mp4-to-mp3.yaml": ([], lambda s: [f"{s}.mp3"], [], check_mp3),
    "mp4-to-mp3-autoscale.yaml": ([], lambda s: [f"{s}.mp3"], [], check_mp3),
    "mp4-to-mp3-container.yaml": ([], lambda s: [f"{s}.mp3"], [], check_mp3_as_long_as_input),
    "mp4-to-wav.yaml": ([], lambda s: [f"{s}.wav"], [], check_wav),
    "thumbnails.yaml": (["--set", "every=1"], lambda s: [f"{s}-0001.jpg", f"{s}-0002.jpg"], [], check_thumbnail),
    "h264-720p.yaml": ([], lambda s: [f"{s}-720p.mp4"], [], check_720p),
    "gif-preview.yaml": ([], lambda s: [f"{s}.gif"], [], check_gif),
    "loudnorm.yaml": ([], lambda s: [f"{s}-loudnorm.mp4"], [], check_loudnorm),
    "mp3-bitrates.yaml": ([], lambda s: [f"{s}-{b}.mp3" for b in ("96k", "128k", "192k")], [], check_mp3),
    "watermark.yaml": (["--set", "corner=top-left"], lambda s: [f"{s}-watermarked.mp4"], [], check_watermarked),
    "mp3-playlist.yaml": ([], lambda s: [f"{s}.mp3"], ["all.mp3", "playlist.m3u"], check_playlist),
    # Keyframes every half second, so a 1.5 s clip splits into two segments of 1 s or less.
    "chunked-encode.yaml": (["--set", "segment=1"], lambda s: [f"{s}-encoded.mp4"], [], check_encoded),
}


def test_there_are_at_least_five_specs_and_all_are_covered() -> None:
    names = {p.name for p in SPECS}
    assert "mp4-to-mp3.yaml" in names and len(names) >= 5
    assert names == set(EXPECTED)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_spec_validates(spec: Path) -> None:
    assert validate_file(spec)[1] == []


def test_validate_specs_dir_from_the_cli() -> None:
    result = CliRunner().invoke(cli, ["validate", str(REPO / "specs")])
    assert result.exit_code == 0
    assert result.output == f"ok: {len(SPECS)} files valid\n"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_spec_plans_over_the_sample_inputs(spec: Path) -> None:
    loaded = load_spec(spec)
    plan = build_plan(loaded)
    samples = sorted(p.name for p in (REPO / "specs" / "inputs").glob("*.mp4"))
    first = plan.stages[0].tasks or ()
    assert len(first) == len(samples) * (3 if loaded.matrix else 1)
    assert all("ffmpeg -hide_banner -y " in t.command for t in plan.tasks)
    assert plan.requires == ("ffmpeg",)
    if plan.pool.container is None:  # the node installs ffmpeg
        assert plan.pool.start_task is not None and "apt-get install -y ffmpeg" in plan.pool.start_task.command
    else:  # the image has it
        assert plan.pool.start_task is None and plan.pool.container.images == ("localhost/batchspec-test-ffmpeg:1",)
        assert all(s.container is not None for s in plan.stages)
    assert loaded.description and loaded.outputs.download == f"out/{loaded.name}"
    assert plan.outputs.container == f"{loaded.name}-output"


def test_download_dirs_are_distinct() -> None:
    downloads = [load_spec(p).outputs.download for p in SPECS]
    assert len(set(downloads)) == len(downloads)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    make_mp4(folder / "sample.mp4", seconds=SECONDS, size="160x90", keyframes=5)
    return folder / "sample.mp4"


@pytest.mark.e2e
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_spec_runs_end_to_end(spec: Path, media: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if load_spec(spec).pool.container is not None or any(s.task.container for s in load_spec(spec).stages):
        request.getfixturevalue("container_image")  # built here, and the runtime's options for this machine
    work = tmp_path / "job"
    (work / "inputs").mkdir(parents=True)
    for name in INPUTS:
        shutil.copyfile(media, work / "inputs" / name)
    text = spec.read_text()
    assert text.count("  download: ") == 1
    copy = work / spec.name
    copy.write_text(re.sub(r"(?m)^  download: .*$", "  download: out", text))
    extra, outputs, job_outputs, check = EXPECTED[spec.name]
    if (REPO / "specs" / "assets").is_dir():
        shutil.copytree(REPO / "specs" / "assets", work / "assets")

    result = CliRunner().invoke(cli, ["run", str(copy), "--backend", "local", "--run-dir", str(tmp_path / "run"),
                                      "--slots", "2", *extra])

    assert result.exit_code == 0, result.output
    expected = sorted([*(o for name in INPUTS for o in outputs(name.removesuffix(".mp4"))), *job_outputs])
    produced = sorted(p.name for p in (work / "out").iterdir())
    assert produced == expected
    for name in produced:
        path = work / "out" / name
        assert path.suffix == ".m3u" or decodes_cleanly(path), name
        check(path)
    assert result.output.count("OK: ") == 1
    assert not list((REPO / "specs").glob(f"**/{expected[0]}"))  # nothing was written into the repo

"""README.md is held to the code: the spec reference, the commands, the example specs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.spec import load_spec
from batchspec.spec.reference import block

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_spec_reference_matches_the_schema() -> None:
    assert block() in README, "README's spec reference is stale: run `python -m batchspec.spec.reference README.md`"


def test_readme_gives_the_two_setup_commands() -> None:
    setup = README.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", setup, re.S)
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install '.[ffmpeg]' && .venv/bin/batchspec run specs/mp4-to-mp3.yaml",
        "scripts/test",
    ]
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("exec scripts/test")


@pytest.mark.parametrize("command", cli.list_commands(click.Context(cli)))
def test_every_command_is_documented_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "batchspec " + command in result.output
    assert f"`batchspec {command}" in README


def test_every_example_spec_is_listed_in_the_readme() -> None:
    table = README.split("## Example specs", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\(specs/([\w.-]+\.yaml)\)", table))
    shipped = {p.name for p in (REPO / "specs").glob("*.yaml")}
    assert listed == shipped
    for name in shipped:
        description = load_spec(REPO / "specs" / name).description
        assert description, f"{name} has no description"


def test_readme_cost_example_is_what_plan_prints(tmp_path: Path) -> None:
    """The README's `plan` cost lines, produced by the code from the same prices (served on
    loopback in the API's shape); only the fetch date and the price server differ."""
    from tests.prices import serve_prices

    block = README.split("$ batchspec plan specs/mp4-to-mp3.yaml --region westeurope\n...\n", 1)[1].split("```")[0]
    specs = tmp_path / "specs"
    specs.mkdir()
    text = (REPO / "specs" / "mp4-to-mp3.yaml").read_text().replace("  timeout: 30m\n",
                                                                      "  timeout: 30m\n  expected_duration: 2m\n")
    (specs / "mp4-to-mp3.yaml").write_text(text)
    (specs / "inputs").mkdir()
    for clip in (REPO / "specs" / "inputs").glob("*.mp4"):
        (specs / "inputs" / clip.name).write_bytes(clip.read_bytes())
    with serve_prices() as prices:
        env = {"BATCHSPEC_PRICES_URL": prices.url, "XDG_CACHE_HOME": str(tmp_path / "cache")}
        result = CliRunner().invoke(cli, ["plan", str(specs / "mp4-to-mp3.yaml"), "--region", "westeurope"], env=env)
    assert result.exit_code == 0, result.output
    printed = re.sub(r"fetched \d{4}-\d\d-\d\d from 127\.0\.0\.1", "fetched DATE from prices.azure.com", result.output)
    expected = re.sub(r"fetched \d{4}-\d\d-\d\d", "fetched DATE", block)
    assert expected.strip() in printed

"""Start-up: each command imports only what it needs (what it costs is in benchmarks/startup_bench.py).

``validate`` runs in other people's CI and before every ``run``: neither it nor a local run may
import the Azure SDKs, rich, the emulator, Jinja or jsonschema (for specs whose templates are
text and lookups, and that are valid); ``--help`` imports nothing but the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Run the CLI, then print the top-level packages (and batchspec modules) it imported.
PROBE = """\
import atexit, json, sys
def modules():
    names = {m.split(".")[0] for m in sys.modules} | {m for m in sys.modules if m.startswith("batchspec.")}
    sys.__stderr__.write("\\nMODULES " + json.dumps(sorted(names)) + "\\n")
atexit.register(modules)
sys.argv = ["batchspec", *sys.argv[1:]]
from batchspec.cli import main
main()
"""
HEAVY = {"azure", "rich", "jinja2", "jsonschema", "referencing", "batchspec.emulator", "urllib3", "requests"}


def imported(*args: str, cwd: Path = REPO) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, check=False,
                            timeout=60)
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_validate_imports_nothing_heavy() -> None:
    found = imported("validate", "specs/mp4-to-mp3.yaml")
    assert not found & HEAVY, found & HEAVY
    assert not {m for m in found if m.startswith(("batchspec.plan", "batchspec.engine", "batchspec.backends"))}
    # Templates with blocks (<% for %>) are checked by Jinja's parser; nothing else changes.
    assert imported("validate", "specs/") & HEAVY == {"jinja2"}


def test_an_invalid_spec_is_explained_by_jsonschema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "specs" / "mp4-to-mp3.yaml").read_text().replace("spot: 5", "spot: -1"))
    assert "jsonschema" in imported("validate", str(bad))


def test_help_imports_only_the_cli() -> None:
    found = imported("--help")
    assert not found & HEAVY
    light = {"batchspec.cli", "batchspec.display", "batchspec.errors", "batchspec.redact"}
    assert {m for m in found if m.startswith("batchspec.")} <= light


def test_plan_imports_nothing_of_running() -> None:
    found = imported("plan", "specs/mp4-to-mp3.yaml", "--format", "json")
    assert not found & HEAVY
    assert not {"batchspec.engine.run", "batchspec.events", "batchspec.runner", "batchspec.observe.html"} & found


def test_a_local_run_imports_no_azure_rich_emulator_jinja_or_jsonschema(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "batchspec": 1, "name": "quiet",
        "pool": {"id": "p", "vm_size": "standard_a1_v2",
                 "image": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
                 "node_agent_sku": "batch.node.ubuntu 24.04", "nodes": {"dedicated": 1}},
        "inputs": {"list": [{"n": 1}, {"n": 2}]},
        "task": {"command": "echo <<item.n>> > out-<<index>>.txt", "outputs": ["out-<<index>>.txt"]},
        "outputs": {"download": "out"},
    }))
    found = imported("run", str(spec), "--backend", "local", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert (tmp_path / "out" / "out-1.txt").read_text() == "2\n"
    assert not found & HEAVY, found & HEAVY


def test_help_lists_the_emulator_by_its_own_summary() -> None:
    from click.testing import CliRunner

    from batchspec.cli import _Commands, cli
    from batchspec.emulator.cli import emulator

    assert emulator.help is not None
    assert _Commands.lazy["emulator"][1] == emulator.help.strip().split("\n\n")[0]
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert "emulator  Run a local Azure Batch service" in listed
    assert CliRunner().invoke(cli, ["emulator", "--help"]).output.startswith("Usage: cli emulator [OPTIONS]")


def test_importing_does_no_work() -> None:
    """No schema read or compiled, no Jinja environment or template made, until a command asks."""
    probe = ("import batchspec.cli, batchspec.spec.validate as v, batchspec.templating as t, batchspec.plan; "
             "print([f.cache_info().currsize for f in (v.schema, v.schema_check, t.environment, t.compile_template)])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[0, 0, 0, 0]"
    assert not imported("--version") & {"batchspec.spec", "batchspec.templating"}

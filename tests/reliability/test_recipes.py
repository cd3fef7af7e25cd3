"""Issue 10, item 11: every README recipe runs as pasted, in a fresh clone.

The shell blocks (```sh) are taken from README.md in order and run, each exactly as written,
one after another in one bash session (as a newcomer pastes them into one terminal) in a fresh
``git clone`` of this repository: the set-up, the stages example, the emulator with Azurite (its
own background and wait steps, stopped at the end), then status, logs and report. What the
session is given is what a user's machine has, with no network: ``pip`` installs from wheels
``scripts/test`` made (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``), ``npm`` from its cache
(``npm_config_offline``).

Recipes not run, and why:
- ``scripts/test``: it is the suite this test belongs to (CI runs it, ``.ci/run``).
- The pre-commit and GitHub Actions examples (yaml): they fetch batchspec from its public
  repository and install it with its dependencies from PyPI, and this machine has no network.
  What can be checked here is: pre-commit accepts the config and this repository's hook
  manifest, the ``rev`` names a commit that exists and has the hook, and the hook's command,
  and the workflow's ``run:`` line, pass on the shipped specs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text("utf-8")
NOT_RUN = {"scripts/test": "the suite this test belongs to (CI runs it)"}

pytestmark = pytest.mark.e2e


def blocks(language: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each fenced block of ``language`` in README, in order."""
    for match in re.finditer(rf"^```{language}\n(.*?)^```$", README, re.M | re.S):
        yield README.count("\n", 0, match.start()) + 1, match.group(1)


def command(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of this repository (its committed state, as a user would get it)."""
    target = tmp_path_factory.mktemp("recipes") / "batchspec"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    return target


def test_every_shell_recipe_runs_as_pasted_in_a_fresh_clone(clone: Path) -> None:
    wheels = ROOT / ".venv" / "wheelhouse"
    assert (wheels / ".stamp").is_file(), "scripts/test makes the wheels the set-up recipe installs"
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    ran: list[int] = []
    for line, text in blocks("sh"):
        if text.strip() in NOT_RUN:
            continue
        ran.append(line)
        script += [f"echo '=== README.md line {line}'", text]
    assert len(ran) >= 4, ran
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "VIRTUAL_ENV", "BATCHSPEC_"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1",
               npm_config_offline="true", npm_config_update_notifier="false",
               PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p))
    # Azurite takes its usual port (10000), so one run of this test at a time on the machine.
    with open("/tmp/batchspec-readme-recipes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        session = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=clone, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = session.communicate(timeout=240)
        finally:  # whatever a recipe left running (it says how to stop what it starts)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(session.pid, signal.SIGKILL)
            session.wait()
    assert session.returncode == 0, out[-6000:]
    for line in ran:
        assert f"=== README.md line {line}" in out
    assert "Traceback" not in out, out[-6000:]
    assert len(list((clone / "specs" / "out" / "mp4-to-mp3").glob("*.mp3"))) == 5  # outputs.download, by the spec
    assert (clone / "report.html").is_file()


def test_the_pre_commit_recipe_names_a_commit_with_the_hook_and_the_hook_passes(clone: Path,
                                                                                 tmp_path: Path) -> None:
    (line, text), = [(n, t) for n, t in blocks("yaml") if "pre-commit" in t or "repos:" in t]
    config = YAML(typ="safe").load(text)
    repo = config["repos"][0]
    rev = repo["rev"]
    assert re.fullmatch(r"[0-9a-f]{40}|v[0-9]+\.[0-9]+\.[0-9]+", rev), rev
    if not rev.startswith("v"):  # the commit exists and has the hook (a tag is checked by pre-commit itself)
        hooks = command("git", "show", f"{rev}:.pre-commit-hooks.yaml", cwd=clone)
        assert hooks.returncode == 0, f"README line {line}: rev {rev} is not a commit with .pre-commit-hooks.yaml"
        assert [h["id"] for h in repo["hooks"]] == ["batchspec-validate"]
    pre_commit = [sys.executable, "-m", "pre_commit"]
    (tmp_path / ".pre-commit-config.yaml").write_text(text)
    assert command(*pre_commit, "validate-config", str(tmp_path / ".pre-commit-config.yaml")).returncode == 0
    manifest = command(*pre_commit, "validate-manifest", str(clone / ".pre-commit-hooks.yaml"))
    assert manifest.returncode == 0, manifest.stdout + manifest.stderr
    # What the hook runs, on the files it selects from the shipped specs.
    (hook,) = YAML(typ="safe").load((clone / ".pre-commit-hooks.yaml").read_text())
    tracked = command("git", "ls-files", cwd=clone).stdout.split()  # pre-commit passes files git knows
    selected = [f for f in tracked if re.search(hook["files"], f) and not re.search(hook["exclude"], f)]
    assert selected and all(p.startswith("specs/") for p in selected)
    entry = shutil.which(hook["entry"].split()[0]) or str(Path(sys.executable).parent / "batchspec")
    result = command(entry, *hook["entry"].split()[1:], *selected, cwd=clone)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_recipe_validates_the_shipped_specs(clone: Path) -> None:
    (line, text), = [(n, t) for n, t in blocks("yaml") if "actions/setup-python" in t]
    steps = YAML(typ="safe").load(text)
    install = next(s["run"] for s in steps if "pip install" in s.get("run", ""))
    assert "git+https://github.com/batchspec/batchspec@" in install, f"README line {line}: batchspec is not on PyPI"
    line_run = next(s["run"] for s in steps if "batchspec validate" in s.get("run", ""))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = command("bash", "-c", line_run, cwd=clone, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (clone / "validation.json").read_text().strip() == "[]"

"""Container images in specs: validation (image references, run options, registries, the rule
that a container pool runs every task in a container, the pool image warning), the plan, the
fingerprint, and the Batch objects the Azure backend makes of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchspec.backends.azure import pool_options
from batchspec.backends.azure.tasks import Urls, gate_options, task_options
from batchspec.cli import cli
from batchspec.plan import Plan, PlanError, build_plan
from batchspec.plan.deps import Gate
from batchspec.plan.fingerprint import Fingerprinter
from batchspec.spec import load_spec, validate_file

from .conftest import VALID, edit

HPC = "image: {publisher: microsoft-dsvm, offer: ubuntu-hpc, sku: '2204'}"
IN_IMAGE = edit(edit(VALID, "image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server}", HPC),
                "task:\n", "task:\n  container: myacr.azurecr.io/tools/ffmpeg:7.1\n")


def problems(tmp_path: Path, text: str) -> list[tuple[str, str, str]]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return [(d.path, d.severity, d.message) for d in validate_file(path)[1]]


def test_a_spec_in_an_image_is_valid(tmp_path: Path) -> None:
    assert problems(tmp_path, IN_IMAGE) == []
    mapping = edit(IN_IMAGE, "  container: myacr.azurecr.io/tools/ffmpeg:7.1\n",
                   "  container: {image: '<<params.image>>', options: --memory 2g, workdir: image}\n")
    digest = "a" * 64
    mapping = edit(mapping, "  bitrate: 192k\n", f"  bitrate: 192k\n  image: ghcr.io/me/ffmpeg@sha256:{digest}\n")
    assert problems(tmp_path, mapping) == []


@pytest.mark.parametrize(("image", "reason"), [
    ("FFmpeg:7", "repository names are lower case"),
    ("https://myacr.azurecr.io/ffmpeg", "without a scheme"),
    ("ffmpeg 7", "must not contain spaces"),
    ("ffmpeg:7:1", "write [registry/]name[:tag][@digest]"),
])
def test_image_references_are_checked(tmp_path: Path, image: str, reason: str) -> None:
    text = edit(IN_IMAGE, "myacr.azurecr.io/tools/ffmpeg:7.1", f"'{image}'")
    ((path, severity, message),) = problems(tmp_path, text)
    assert (path, severity) == ("$.task.container", "error")
    assert f"image '{image}' is not a valid image reference" in message and reason in message


def test_images_take_params_only_and_options_are_not_templates(tmp_path: Path) -> None:
    text = edit(IN_IMAGE, "myacr.azurecr.io/tools/ffmpeg:7.1",
                "{image: 'ffmpeg:<<stem>>', options: '--memory <<params.bitrate>>'}")
    found = problems(tmp_path, text)
    assert ("$.task.container.image", "error", "unknown template variable 'stem' (known: params)") in found
    assert any(p == "$.task.container.options" and "is not a template" in msg for p, _, msg in found)


def test_run_options_batchspec_sets_itself_are_refused(tmp_path: Path) -> None:
    text = edit(IN_IMAGE, "myacr.azurecr.io/tools/ffmpeg:7.1", "{image: x, options: '--name mine --cpus 2'}")
    assert problems(tmp_path, text) == [("$.task.container.options", "error", "'--name' is set by batchspec for "
                                         "every task's container; leave it out")]


def test_every_task_of_a_container_pool_runs_in_a_container(tmp_path: Path) -> None:
    text = IN_IMAGE + "merge:\n  command: cat <% for f in inputs %><<f>> <% endfor %> > all.mp3\n"
    ((path, _, message),) = problems(tmp_path, text)
    assert path == "$.merge"
    assert message.startswith("this task runs no container image, but $.task.container is set: on Azure Batch "
                              "every task of a container pool runs in a container")
    only_pool = edit(edit(VALID, "  nodes: {dedicated: 0, spot: 2}\n", "  nodes: {dedicated: 0, spot: 2}\n"
                                 "  container: {prefetch: [ubuntu:24.04]}\n"),
                     "image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server}", HPC)
    assert [p for p, _, _ in problems(tmp_path, only_pool)] == ["$.task"]


def test_registries_name_variables_or_an_identity(tmp_path: Path) -> None:
    registries = """  container:
    prefetch: ['Bad/Image']
    registries:
      - {server: myacr.azurecr.io, username_env: ACR_USER, password_env: ACR_PASSWORD}
      - {server: myacr.azurecr.io, identity: /subscriptions/s/resourceGroups/g/providers/x}
      - {server: 'https://other.io/v2', username_env: U}
      - {server: third.io, identity: pull-identity, password_env: 'hunter 2'}
"""
    text = edit(IN_IMAGE, "  nodes: {dedicated: 0, spot: 2}\n", "  nodes: {dedicated: 0, spot: 2}\n" + registries)
    found = {(p, m) for p, _, m in problems(tmp_path, text)}
    assert found == {
        ("$.pool.container.prefetch[0]", "image 'Bad/Image' is not a valid image reference: repository names are "
                                         "lower case (only a registry host may have capitals)"),
        ("$.pool.container.registries[1].server", "registry 'myacr.azurecr.io' is listed twice"),
        ("$.pool.container.registries[2].server", "'https://other.io/v2' is not a registry host: write e.g. "
                                                  "myregistry.azurecr.io (no scheme, no path)"),
        ("$.pool.container.registries[2]", "'password_env' is missing: give 'username_env' and 'password_env' "
                                           "(names of environment variables), or 'identity' (a managed identity)"),
        ("$.pool.container.registries[3]", "give either 'identity' or 'username_env' and 'password_env', not both"),
        ("$.pool.container.registries[3].password_env", "'hunter 2' is not an environment variable name: it names "
                                                        "the variable holding the value, never the value itself"),
        ("$.pool.container.registries[3].identity", "'identity' is the ARM resource id of a user-assigned managed "
                                                    "identity: /subscriptions/<id>/resourceGroups/<group>/providers/"
                                                    "Microsoft.ManagedIdentity/userAssignedIdentities/<name>"),
    }


def test_a_pool_image_without_containers_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edit(IN_IMAGE, HPC, "image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server}")
    ((path, severity, message),) = problems(tmp_path, text)
    assert (path, severity) == ("$.pool.image", "warning")
    assert message.startswith("pool image canonical/ubuntu-24_04-lts/server is not one Azure Batch documents for "
                              "containers")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", "spec.yaml"])
    assert result.exit_code == 0  # valid: a warning does not fail CI
    assert result.output.splitlines()[-1] == "ok: 1 file valid, and 1 warning"
    assert "spec.yaml:8:3: $.pool.image: warning: pool image canonical/" in result.output
    found = json.loads(CliRunner().invoke(cli, ["validate", "spec.yaml", "--format", "json"]).output)
    assert [(d["path"], d["severity"]) for d in found] == [("$.pool.image", "warning")]
    # Errors keep their shape: no severity key, as before warnings existed.
    broken = json.loads(CliRunner().invoke(cli, ["validate", str(_write(tmp_path, edit(
        text, "timeout: 30m", "timeout: soon"))), "--format", "json"]).output)
    assert [sorted(d) for d in broken if d["path"] == "$.task.timeout"] == [
        ["column", "file", "line", "message", "path"]]
    planned = build_plan(load_spec(_write(tmp_path, text)))
    assert any("$.pool.image: pool image canonical/ubuntu-24_04-lts/server" in w for w in planned.warnings)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "other.yaml"
    path.write_text(text)
    (tmp_path / "inputs").mkdir(exist_ok=True)
    (tmp_path / "inputs" / "a.mp4").write_bytes(b"")
    return path


def plan_of(tmp_path: Path, text: str, *overrides: str) -> Plan:
    return build_plan(load_spec(_write(tmp_path, text)), overrides)


def test_the_plan_carries_each_stages_image_and_the_pools_images(tmp_path: Path) -> None:
    text = edit(IN_IMAGE, "  bitrate: 192k\n", "  bitrate: 192k\n  tag: '7.1'\n")
    text = edit(text, "myacr.azurecr.io/tools/ffmpeg:7.1", "myacr.azurecr.io/tools/ffmpeg:<<params.tag>>")
    text += ("merge:\n  container: {image: 'myacr.azurecr.io/tools/sox:14', workdir: image, options: --cpus 1}\n"
             "  command: cat <% for f in inputs %><<f>> <% endfor %> > all.mp3\n  outputs: [all.mp3]\n")
    text = edit(text, "  nodes: {dedicated: 0, spot: 2}\n", "  nodes: {dedicated: 0, spot: 2}\n  container:\n"
                "    prefetch: ['myacr.azurecr.io/tools/sox:14', busybox]\n"
                "    registries: [{server: myacr.azurecr.io, identity: /subscriptions/s/x}]\n")
    plan = plan_of(tmp_path, text, "tag=7.2")
    first, merge = plan.stages
    assert first.container is not None and first.container.image == "myacr.azurecr.io/tools/ffmpeg:7.2"
    assert merge.container is not None and (merge.container.workdir, merge.container.options) == ("image", "--cpus 1")
    assert plan.pool.container is not None
    assert plan.pool.container.images == ("myacr.azurecr.io/tools/ffmpeg:7.2", "myacr.azurecr.io/tools/sox:14",
                                          "busybox")
    again = Plan.from_json(plan.to_json())
    assert again.pool == plan.pool and [s.container for s in again.stages] == [first.container, merge.container]
    expected = (r"other.yaml:18: \$.task.container renders to an invalid image: "
                r"image 'myacr.azurecr.io/tools/ffmpeg:y:z'")
    with pytest.raises(PlanError, match=expected):
        plan_of(tmp_path, text, "tag=y:z")


def test_job_ids_and_fingerprints_of_specs_without_images_are_as_before(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    plan = build_plan(load_spec(repo / "specs" / "mp4-to-mp3.yaml"))
    assert plan.job_id == "mp4-to-mp3-4a076820"  # the id this spec had before containers existed
    assert "container" not in plan.to_dict()["pool"] and "container" not in plan.to_dict()["stages"][0]
    task = plan.tasks[0]
    assert Fingerprinter(plan, lambda f: "x")(task) == Fingerprinter(plan, lambda f: "x", lambda i: "id")(task)


def test_fingerprints_cover_the_image_and_its_id(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, IN_IMAGE)
    task = plan.tasks[0]
    one = Fingerprinter(plan, lambda f: "x", lambda i: "sha256:1")(task)
    assert one == Fingerprinter(plan, lambda f: "x", lambda i: "sha256:1")(task)
    assert one != Fingerprinter(plan, lambda f: "x", lambda i: "sha256:2")(task)  # rebuilt under the same tag
    other = plan_of(tmp_path, edit(IN_IMAGE, "ffmpeg:7.1", "ffmpeg:7.2"))
    assert Fingerprinter(other, lambda f: "x")(other.tasks[0]) != Fingerprinter(plan, lambda f: "x")(task)
    plain = plan_of(tmp_path, edit(IN_IMAGE, "  container: myacr.azurecr.io/tools/ffmpeg:7.1\n", ""))
    assert Fingerprinter(plain, lambda f: "x")(plain.tasks[0]) != Fingerprinter(plan, lambda f: "x")(task)


URLS = Urls(input_blob=lambda f: f"https://s/in/{f.source}?sig", container=lambda c: f"https://s/{c}?sig",
            output_container="https://s/out?sig", stage_container=lambda s: f"https://s/{s}?sig")


def test_batch_pool_and_task_objects(tmp_path: Path) -> None:
    from azure.batch import models

    plan = plan_of(tmp_path, edit(IN_IMAGE, "myacr.azurecr.io/tools/ffmpeg:7.1",
                                  "{image: 'myacr.azurecr.io/tools/ffmpeg:7.1', workdir: image, options: --cpus 2}"))
    login = models.ContainerRegistryReference(registry_server="myacr.azurecr.io", username="u", password="p")
    pool = pool_options(plan, URLS, [login]).as_dict()
    assert pool["virtualMachineConfiguration"]["containerConfiguration"] == {
        "type": "dockerCompatible", "containerImageNames": ["myacr.azurecr.io/tools/ffmpeg:7.1"],
        "containerRegistries": [{"registryServer": "myacr.azurecr.io", "username": "u", "password": "p"}]}
    task = task_options(plan, plan.tasks[0], URLS, "fp").as_dict()
    assert task["containerSettings"] == {"imageName": "myacr.azurecr.io/tools/ffmpeg:7.1",
                                         "containerRunOptions": "--cpus 2", "workingDirectory": "containerImageDefault"}
    assert task["commandLine"].startswith("/bin/bash -c ")
    gate = gate_options(Gate("gate-1", ("a", "b")), plan.stages[0].container).as_dict()
    assert gate["containerSettings"]["imageName"] == "myacr.azurecr.io/tools/ffmpeg:7.1"
    plain = build_plan(load_spec(Path(__file__).resolve().parents[2] / "specs" / "mp4-to-mp3.yaml"))
    assert "containerConfiguration" not in pool_options(plain, URLS).as_dict()["virtualMachineConfiguration"]
    assert "containerSettings" not in task_options(plain, plain.tasks[0], URLS, "fp").as_dict()


def test_a_password_written_in_the_spec_is_refused(tmp_path: Path) -> None:
    text = edit(IN_IMAGE, "  nodes: {dedicated: 0, spot: 2}\n", "  nodes: {dedicated: 0, spot: 2}\n  container:\n"
                "    registries: [{server: myacr.azurecr.io, username_env: U, password: hunter2}]\n")
    found = problems(tmp_path, text)
    assert ("$.pool.container.registries[0].password", "error",
            "unknown key 'password'; did you mean 'password_env'?") in found

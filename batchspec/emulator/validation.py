"""Request validation in one place: bodies, ids, values and the service's defaults.

Every handler reads its request through these functions, which raise the service's 400 errors
(``InvalidRequestBody``, ``MissingRequiredProperty``, ``InvalidPropertyValue`` ...) and return the
entity parts with the defaults and enum casing the service answers with (``nodeFillType: Spread``,
``uploadCondition: tasksuccess``, ``userIdentity.autoUser``). Handlers never check a field
themselves.
"""

from __future__ import annotations

import json
import re
from typing import Any

from batchspec import autoscale
from batchspec.containers import Credentials
from batchspec.emulator.dependencies import depends_on_problem
from batchspec.emulator.errors import error, invalid_body, invalid_property, missing_property
from batchspec.emulator.wire import (
    IMAGE_ORDER,
    MAX_DURATION,
    TICKS_PER_SECOND,
    VM_CONFIG_ORDER,
    Json,
    format_duration,
    ordered,
    parse_duration,
    pascal_fill_type,
    user_identity,
)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IMAGE_ID_RE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)$",
    re.IGNORECASE,
)
_IMAGE_ID_REASON = (
    "The specified resource id must be of the format "
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/images/"
    "{imageName}, /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
    "Microsoft.Compute/galleries/{galleryName}/images/{galleryImageName}/versions/{galleryImageVersionName}, "
    "or /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/"
    "galleries/{galleryName}/images/{galleryImageName}"
)


def normalized_duration(name: str, value: object) -> str:
    try:
        return format_duration(parse_duration(str(value)))
    except ValueError:
        raise invalid_property(name, value, "The value is not a valid ISO 8601 duration.") from None


def json_body(body: bytes) -> Json:
    if not body.strip():
        raise invalid_body("The request body is empty.")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise invalid_body(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise invalid_body("The request body must be a JSON object.")
    return data


def check_id(name: str, value: object) -> str:
    if value is None or value == "":
        raise missing_property(name)
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise invalid_property(
            name,
            value,
            "The id can contain any combination of alphanumeric characters including hyphens and "
            "underscores, and cannot contain more than 64 characters.",
        )
    return value


def int_(name: str, value: object, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_property(name, value, "The value must be an integer.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise invalid_property(name, value, f"The value must be between {minimum} and {maximum}.")
    return value


def bool_(name: str, value: object, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_property(name, value, "The value must be a boolean.")
    return value


def enum(name: str, value: object, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    text = str(value).lower()
    if text not in allowed:
        raise invalid_property(name, value, f"The value must be one of: {', '.join(allowed)}.")
    return text


def list_(name: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_property(name, value, "The value must be an array.")
    return value


def object_(name: str, value: object) -> Json:
    if not isinstance(value, dict):
        raise invalid_property(name, value, "The value must be an object.")
    return value


RESOURCE_SOURCES = ("autoStorageContainerName", "storageContainerUrl", "httpUrl")


def resource_files(value: object) -> list[Json]:
    """``resourceFiles`` as the service accepts them: exactly one source each; ``httpUrl`` needs a
    ``filePath`` (the file's path); ``blobPrefix`` only goes with a container source."""
    out = []
    for item in list_("resourceFiles", value):
        spec = object_("resourceFiles", item)
        sources = [name for name in RESOURCE_SOURCES if spec.get(name)]
        if len(sources) != 1:
            raise invalid_property(
                "resourceFiles",
                ",".join(sources),
                "The autoStorageContainerName, storageContainerUrl and httpUrl properties are mutually exclusive "
                "and one of them must be specified.",
            )
        if sources == ["httpUrl"] and not spec.get("filePath"):
            raise missing_property("filePath")
        if sources == ["httpUrl"] and spec.get("blobPrefix"):
            raise invalid_property(
                "blobPrefix",
                spec["blobPrefix"],
                "The property is valid only when autoStorageContainerName or storageContainerUrl is used.",
            )
        if spec.get("fileMode") is not None and not re.fullmatch(r"[0-7]{3,4}", str(spec["fileMode"])):
            raise invalid_property("fileMode", spec["fileMode"], "The file mode must be in octal format, e.g. 0770.")
        out.append(dict(spec))
    return out


UPLOAD_CONDITIONS = ("tasksuccess", "taskfailure", "taskcompletion")


def output_files(value: object) -> list[Json]:
    """``outputFiles`` with their required parts checked and enums in the service's casing."""
    out = []
    for item in list_("outputFiles", value):
        spec = dict(object_("outputFiles", item))
        if not spec.get("filePattern"):
            raise missing_property("filePattern")
        destination = object_("destination", spec.get("destination"))
        container = object_("container", destination.get("container"))
        if not container.get("containerUrl"):
            raise missing_property("containerUrl")
        options = dict(object_("uploadOptions", spec.get("uploadOptions")))
        if options.get("uploadCondition") is None:
            raise missing_property("uploadCondition")
        options["uploadCondition"] = enum("uploadCondition", options["uploadCondition"], UPLOAD_CONDITIONS, "")
        spec["uploadOptions"] = options
        out.append(spec)
    return out


def depends_on(value: object, job: Json) -> Json:
    spec = dict(object_("dependsOn", value))
    if not job.get("usesTaskDependencies"):
        raise error(400, "TaskDependenciesNotSpecifiedOnJob")
    ids = list_("taskIds", spec.get("taskIds") or [])
    if any(not isinstance(t, str) for t in ids):
        raise invalid_property("taskIds", ids, "Task ids must be strings.")
    ranges = []
    for raw in list_("taskIdRanges", spec.get("taskIdRanges") or []):
        entry = object_("taskIdRanges", raw)
        start = int_("start", entry.get("start"), -1)
        end = int_("end", entry.get("end"), -1)
        if entry.get("start") is None:
            raise missing_property("start")
        if entry.get("end") is None:
            raise missing_property("end")
        if start < 0 or end < start:
            raise invalid_property("taskIdRanges", f"{start}-{end}", "The start of a range must be a non-negative "
                                   "integer no greater than its end.")
        ranges.append({"start": start, "end": end})
    problem = depends_on_problem(spec)
    if problem is not None:
        raise error(400, problem[0])
    out: Json = {}
    if ids:
        out["taskIds"] = ids
    if ranges:
        out["taskIdRanges"] = ranges
    return out


def exit_conditions(value: object, job: Json) -> Json:
    """``exitConditions`` with ``dependencyAction``/``jobAction`` checked against the job and
    written in the service's casing."""
    spec = dict(object_("exitConditions", value))

    def options(raw: object) -> Json:
        given = dict(object_("exitOptions", raw))
        if given.get("jobAction") is not None:
            if job.get("onTaskFailure") != "performexitoptionsjobaction":
                raise invalid_property(
                    "jobAction", given["jobAction"],
                    "The job's onTaskFailure is noaction: a jobAction cannot be specified.",
                )
            given["jobAction"] = enum("jobAction", given["jobAction"], ("none", "disable", "terminate"), "")
        if given.get("dependencyAction") is not None:
            if not job.get("usesTaskDependencies"):
                raise invalid_property(
                    "dependencyAction", given["dependencyAction"],
                    "The job does not use task dependencies: a dependencyAction cannot be specified.",
                )
            given["dependencyAction"] = enum("dependencyAction", given["dependencyAction"], ("satisfy", "block"), "")
        return given

    for name in ("exitCodes", "exitCodeRanges"):
        if spec.get(name) is not None:
            entries = []
            for raw in list_(name, spec[name]):
                entry = dict(object_(name, raw))
                entry["exitOptions"] = options(entry.get("exitOptions") or {})
                entries.append(entry)
            spec[name] = entries
    for name in ("preProcessingError", "fileUploadError", "default"):
        if spec.get(name) is not None:
            spec[name] = options(spec[name])
    return spec


def select(obj: Json, text: str | None) -> Json:
    """``$select`` applied to an entity (odata.metadata always kept)."""
    from batchspec.emulator import odata

    return odata.project(obj, odata.parse_select(text))


# ---- entity parts


def environment_settings(name: str, value: object) -> list[Json]:
    out = []
    for item in list_(name, value):
        setting = object_(name, item)
        if not setting.get("name"):
            raise missing_property("name")
        out.append({"name": str(setting["name"]), **({"value": setting["value"]} if "value" in setting else {})})
    return out


def start_task(spec: object) -> Json:
    if not isinstance(spec, dict):
        raise invalid_property("startTask", spec, "The value must be an object.")
    if not spec.get("commandLine"):
        raise missing_property("commandLine")
    out: Json = {"commandLine": spec["commandLine"]}
    for name in ("containerSettings", "resourceFiles", "environmentSettings"):
        if spec.get(name) is not None:
            out[name] = spec[name]
    out["userIdentity"] = user_identity(spec.get("userIdentity"))
    out["maxTaskRetryCount"] = int_("maxTaskRetryCount", spec.get("maxTaskRetryCount"), 0, -1)
    out["waitForSuccess"] = bool_("waitForSuccess", spec.get("waitForSuccess"), True)
    return out

CONTAINER_TYPES = {"dockercompatible": "dockerCompatible", "cricompatible": "criCompatible"}
WORKING_DIRECTORIES = {"taskworkingdirectory": "taskWorkingDirectory", "containerimagedefault": "containerImageDefault"}
BIND_MOUNT_SOURCES = {s.lower(): s for s in ("Shared", "Startup", "VfsMounts", "Task", "JobPrep", "Applications")}


def registry(spec: object, name: str = "registry") -> tuple[Json, Credentials | None]:
    """A container registry as the service keeps it (never its password), and its login."""
    if not isinstance(spec, dict):
        raise invalid_property(name, spec, "The value must be an object.")
    server = str(spec.get("registryServer") or "docker.io")
    if spec.get("identityReference") is None and bool(spec.get("username")) != bool(spec.get("password")):
        raise missing_property("password" if spec.get("username") else "username")
    out = {k: v for k, v in spec.items() if k != "password"}  # passwords are never returned
    login = Credentials(server, str(spec["username"]), str(spec["password"])) if spec.get("password") else None
    return out, login


def container_configuration(spec: object) -> tuple[Json, tuple[Credentials, ...]]:
    """A pool's ``containerConfiguration`` as kept (registries without passwords), and its logins."""
    if not isinstance(spec, dict):
        raise invalid_property("containerConfiguration", spec, "The value must be an object.")
    if not spec.get("type"):
        raise missing_property("type")
    kind = CONTAINER_TYPES.get(str(spec["type"]).lower())
    if kind is None:
        raise invalid_property("type", spec["type"], "The value must be dockerCompatible or criCompatible.")
    out: Json = {"type": kind}
    if spec.get("containerImageNames") is not None:
        images = list_("containerImageNames", spec["containerImageNames"])
        if not all(isinstance(i, str) and i.strip() for i in images):
            raise invalid_property("containerImageNames", images, "Each image name must be a non-empty string.")
        out["containerImageNames"] = images
    logins: list[Credentials] = []
    if spec.get("containerRegistries") is not None:
        registries = []
        for item in list_("containerRegistries", spec["containerRegistries"]):
            kept, login = registry(item, "containerRegistries")
            registries.append(kept)
            logins += [login] if login else []
        out["containerRegistries"] = registries
    return out, tuple(logins)


def container_settings(spec: object) -> tuple[Json, Credentials | None]:
    """A task's ``containerSettings`` with the service's defaults (``workingDirectory``), and the
    login of its own registry, if it names one."""
    if not isinstance(spec, dict):
        raise invalid_property("containerSettings", spec, "The value must be an object.")
    if not spec.get("imageName"):
        raise missing_property("imageName")
    out: Json = {"imageName": spec["imageName"]}
    if spec.get("containerRunOptions") is not None:
        out["containerRunOptions"] = spec["containerRunOptions"]
    login = None
    if spec.get("registry") is not None:
        out["registry"], login = registry(spec["registry"])
    workdir = spec.get("workingDirectory") or "taskWorkingDirectory"
    if str(workdir).lower() not in WORKING_DIRECTORIES:
        raise invalid_property("workingDirectory", workdir,
                               "The value must be taskWorkingDirectory or containerImageDefault.")
    out["workingDirectory"] = WORKING_DIRECTORIES[str(workdir).lower()]
    if spec.get("containerHostBatchBindMounts") is not None:
        mounts = []
        for entry in list_("containerHostBatchBindMounts", spec["containerHostBatchBindMounts"]):
            source = str((entry or {}).get("source") or "") if isinstance(entry, dict) else ""
            if source.lower() not in BIND_MOUNT_SOURCES:
                raise invalid_property("source", source, "The value must be one of " +
                                       ", ".join(BIND_MOUNT_SOURCES.values()) + ".")
            mounts.append({**entry, "source": BIND_MOUNT_SOURCES[source.lower()]})
        out["containerHostBatchBindMounts"] = mounts
    for name, value in spec.items():
        out.setdefault(name, value)
    return out, login


def vm_config(vm: object) -> Json:
    if not isinstance(vm, dict):
        raise missing_property("virtualMachineConfiguration")
    out = dict(vm)
    if out.get("containerConfiguration") is not None:
        out["containerConfiguration"] = container_configuration(out["containerConfiguration"])[0]
    image = out.get("imageReference")
    if isinstance(image, dict) and image.get("virtualMachineImageId"):
        image_id = str(image["virtualMachineImageId"])
        if not _IMAGE_ID_RE.match(image_id):
            raise invalid_property("virtualMachineImageId", image_id, _IMAGE_ID_REASON)
    if isinstance(image, dict) and "virtualMachineImageId" not in image:
        out["imageReference"] = ordered({**image, "version": image.get("version") or "latest"}, IMAGE_ORDER)
    if isinstance(out.get("dataDisks"), list):
        out["dataDisks"] = [
            {
                "lun": d.get("lun"),
                "caching": str(d.get("caching") or "none").lower(),
                "diskSizeGB": d.get("diskSizeGB"),
                "storageAccountType": str(d.get("storageAccountType") or "standard_lrs").lower(),
            }
            for d in out["dataDisks"]
            if isinstance(d, dict)
        ]
    return ordered(out, VM_CONFIG_ORDER)

#: The service's bounds on autoScaleEvaluationInterval.
MIN_AUTOSCALE_INTERVAL, MAX_AUTOSCALE_INTERVAL = 5 * 60, 168 * 3600


def autoscale_formula(formula: object) -> str:
    """A formula the service accepts: present, at most 8,192 characters, and well formed."""
    if not formula:
        raise missing_property("autoScaleFormula")
    text = str(formula)
    if len(text) > autoscale.MAX_LENGTH:
        raise error(400, "AutoScaleFormulaTooLong", ("MaxLength", str(autoscale.MAX_LENGTH)))
    try:
        autoscale.parse(text)
    except autoscale.FormulaError as exc:
        raise error(400, "AutoScalingFormulaSyntaxError", ("Message", str(exc))) from None
    return text


def autoscale_interval(interval: object) -> str:
    text = normalized_duration("autoScaleEvaluationInterval", interval or "PT15M")
    seconds = parse_duration(text) / TICKS_PER_SECOND
    if not MIN_AUTOSCALE_INTERVAL <= seconds <= MAX_AUTOSCALE_INTERVAL:
        raise invalid_property(
            "autoScaleEvaluationInterval", interval,
            "The autoscale evaluation interval must be between 5 minutes and 168 hours.",
        )
    return text


def autoscale_settings(formula: object, interval: object) -> tuple[str, str]:
    return autoscale_formula(formula), autoscale_interval(interval)


def pool_spec(spec: Json, windows: bool) -> Json:
    """The parts of a pool given at creation, with the service's defaults (shared by auto pools)."""
    vm_size = spec.get("vmSize")
    if not vm_size:
        raise missing_property("vmSize")
    out: Json = {"vmSize": str(vm_size).lower()}
    out["resizeTimeout"] = normalized_duration("resizeTimeout", spec.get("resizeTimeout") or "PT15M")
    auto = bool_("enableAutoScale", spec.get("enableAutoScale"), False)
    if auto:
        for name in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if spec.get(name) is not None:
                raise error(400, "InvalidAutoScalingSettings",
                            ("Reason", f"{name} must not be specified when enableAutoScale is true."))
    out["targetDedicatedNodes"] = int_("targetDedicatedNodes", spec.get("targetDedicatedNodes"), 0, 0)
    out["targetLowPriorityNodes"] = int_("targetLowPriorityNodes", spec.get("targetLowPriorityNodes"), 0, 0)
    out["enableAutoScale"] = auto
    if auto:
        out["autoScaleFormula"], out["autoScaleEvaluationInterval"] = autoscale_settings(
            spec.get("autoScaleFormula"), spec.get("autoScaleEvaluationInterval")
        )
    out["enableInterNodeCommunication"] = bool_(
        "enableInterNodeCommunication", spec.get("enableInterNodeCommunication"), False
    )
    if spec.get("startTask") is not None:
        out["startTask"] = start_task(spec["startTask"])
    if spec.get("userAccounts") is not None:
        accounts = []
        for account in list_("userAccounts", spec["userAccounts"]):
            entry: Json = {
                "name": account.get("name"),
                "elevationLevel": str(account.get("elevationLevel") or "nonadmin").lower(),
            }
            if account.get("linuxUserConfiguration"):
                entry["linuxUserConfiguration"] = account["linuxUserConfiguration"]
            if windows or account.get("windowsUserConfiguration"):
                login = (account.get("windowsUserConfiguration") or {}).get("loginMode") or "batch"
                entry["windowsUserConfiguration"] = {"loginMode": str(login).lower()}
            accounts.append(entry)  # passwords are never returned
        out["userAccounts"] = accounts
    out["certificateReferences"] = spec.get("certificateReferences") or []
    for name in ("applicationPackageReferences", "metadata"):
        if spec.get(name) is not None:
            out[name] = spec[name]
    out["taskSlotsPerNode"] = int_("taskSlotsPerNode", spec.get("taskSlotsPerNode"), 1, 1, 256)
    policy = spec.get("taskSchedulingPolicy") or {}
    out["taskSchedulingPolicy"] = {"nodeFillType": pascal_fill_type(policy.get("nodeFillType"))}
    out["virtualMachineConfiguration"] = vm_config(spec.get("virtualMachineConfiguration"))
    if isinstance(spec.get("networkConfiguration"), dict):
        given = spec["networkConfiguration"]
        net: Json = {k: given[k] for k in ("subnetId",) if k in given}
        net["dynamicVNetAssignmentScope"] = str(given.get("dynamicVNetAssignmentScope") or "none").lower()
        net |= {k: v for k, v in given.items() if k not in net and k != "enableAcceleratedNetworking"}
        net["enableAcceleratedNetworking"] = bool_(
            "enableAcceleratedNetworking", given.get("enableAcceleratedNetworking"), False
        )
        out["networkConfiguration"] = net
    for name in (
        "mountConfiguration",
        "identity",
        "upgradePolicy",
        "targetNodeCommunicationMode",
        "displayName",
    ):
        if spec.get(name) is not None:
            out[name] = spec[name]
    return out


def job_constraints(spec: object) -> Json:
    spec = spec if isinstance(spec, dict) else {}
    return {
        "maxWallClockTime": normalized_duration("maxWallClockTime", spec.get("maxWallClockTime") or MAX_DURATION),
        "maxTaskRetryCount": int_("maxTaskRetryCount", spec.get("maxTaskRetryCount"), 0, -1),
    }

def prep_task(spec: object) -> Json:
    if not isinstance(spec, dict) or not spec.get("commandLine"):
        raise missing_property("jobPreparationTask.commandLine")
    constraints = spec.get("constraints") or {}
    out: Json = {"id": spec.get("id") or "jobpreparation", "commandLine": spec["commandLine"]}
    for name in ("containerSettings", "resourceFiles", "environmentSettings"):
        if spec.get(name) is not None:
            out[name] = spec[name]
    out["constraints"] = {
        "maxWallClockTime": normalized_duration(
            "maxWallClockTime", constraints.get("maxWallClockTime") or MAX_DURATION
        ),
        "retentionTime": normalized_duration("retentionTime", constraints.get("retentionTime") or "P7D"),
        "maxTaskRetryCount": int_("maxTaskRetryCount", constraints.get("maxTaskRetryCount"), 0, -1),
    }
    out["userIdentity"] = user_identity(spec.get("userIdentity"))
    out["waitForSuccess"] = bool_("waitForSuccess", spec.get("waitForSuccess"), True)
    out["rerunOnNodeRebootAfterSuccess"] = bool_(
        "rerunOnNodeRebootAfterSuccess", spec.get("rerunOnNodeRebootAfterSuccess"), True
    )
    return out

def release_task(spec: object) -> Json:
    if not isinstance(spec, dict) or not spec.get("commandLine"):
        raise missing_property("jobReleaseTask.commandLine")
    out: Json = {"id": spec.get("id") or "jobrelease", "commandLine": spec["commandLine"]}
    for name in ("containerSettings", "resourceFiles", "environmentSettings"):
        if spec.get(name) is not None:
            out[name] = spec[name]
    out["maxWallClockTime"] = normalized_duration("maxWallClockTime", spec.get("maxWallClockTime") or "PT15M")
    out["retentionTime"] = normalized_duration("retentionTime", spec.get("retentionTime") or "P7D")
    out["userIdentity"] = user_identity(spec.get("userIdentity"))
    return out

def task_constraints(spec: object, default_retries: int) -> Json:
    spec = spec if isinstance(spec, dict) else {}
    return {
        "maxWallClockTime": normalized_duration("maxWallClockTime", spec.get("maxWallClockTime") or MAX_DURATION),
        "retentionTime": normalized_duration("retentionTime", spec.get("retentionTime") or "P7D"),
        "maxTaskRetryCount": int_("maxTaskRetryCount", spec.get("maxTaskRetryCount"), default_retries, -1),
    }

"""Wire format of the Azure Batch data plane: times, ETags, durations, errors, defaults, key order.

Everything here is what the real service puts on the wire, as seen in the recordings under
``tests/fidelity/recordings`` and in the Batch REST reference. Handlers build bodies only through
these helpers, so the same shape is never written twice.
"""

from __future__ import annotations

import calendar
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from typing import Any

#: .NET ticks (100 ns) at the Unix epoch: the service's times and ETags are tick based.
EPOCH_TICKS = 621_355_968_000_000_000
TICKS_PER_SECOND = 10_000_000

#: TimeSpan.MaxValue, which the service reports for "no limit".
MAX_DURATION = "P10675199DT2H48M5.4775807S"
MAX_DURATION_TICKS = 9_223_372_036_854_775_807

JSON_CONTENT_TYPE = "application/json; odata=minimalmetadata"
ERROR_METADATA = "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"

Json = dict[str, Any]


class Clock:
    """The service's time: strictly increasing ticks (so every change gets its own ETag) and
    seconds, running ``scale`` times faster than the wall clock from the moment it is made (a
    simulation passes hours in seconds). Every delay of the emulated service reads this clock."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._origin_wall = time.time()
        self._origin_mono = time.monotonic()
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the Unix epoch in service time."""
        return self._origin_wall + (time.monotonic() - self._origin_mono) * self.scale

    def real(self, seconds: float) -> float:
        """Wall-clock seconds that ``seconds`` of service time take."""
        return seconds / self.scale

    def ticks(self) -> int:
        now = int(self.now() * TICKS_PER_SECOND) + EPOCH_TICKS
        with self._lock:
            if now <= self._last:
                now = self._last + 1
            self._last = now
            return now


def iso(ticks: int) -> str:
    """UTC ISO 8601 with up to 7 fraction digits, trailing zeros dropped (as the service)."""
    secs, frac = divmod(ticks - EPOCH_TICKS, TICKS_PER_SECOND)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        text += "." + f"{frac:07d}".rstrip("0")
    return text + "Z"


_ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7})\d*)?(Z|[+-]\d{2}:\d{2})?$")


def parse_iso(text: str) -> int:
    """Ticks of an ISO 8601 timestamp; raises ValueError."""
    match = _ISO_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    y, mo, d, h, mi, s, frac, zone = match.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return EPOCH_TICKS + secs * TICKS_PER_SECOND + int((frac or "0").ljust(7, "0"))


def rfc1123(ticks: int) -> str:
    return formatdate((ticks - EPOCH_TICKS) // TICKS_PER_SECOND, usegmt=True)


def etag(ticks: int) -> str:
    """``0x`` + upper-case hex of the modification ticks (15 digits for current dates)."""
    return f"0x{ticks:X}"


_DURATION_RE = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> int:
    """Ticks of an ISO 8601 duration (days, hours, minutes, seconds); raises ValueError."""
    match = _DURATION_RE.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    days, hours, minutes, seconds = match.groups()
    whole, _, frac = (seconds or "0").partition(".")
    ticks = int(whole) * TICKS_PER_SECOND + int(frac[:7].ljust(7, "0") or "0")
    ticks += (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60) * TICKS_PER_SECOND
    return ticks


def format_duration(ticks: int) -> str:
    """A duration as the service writes it (.NET XmlConvert): ``PT6M``, ``P7D``, ``PT7M9.497S``."""
    if ticks <= 0:
        return "PT0S"
    days, rem = divmod(ticks, 86400 * TICKS_PER_SECOND)
    hours, rem = divmod(rem, 3600 * TICKS_PER_SECOND)
    minutes, rem = divmod(rem, 60 * TICKS_PER_SECOND)
    secs, frac = divmod(rem, TICKS_PER_SECOND)
    out = "P" + (f"{days}D" if days else "")
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if secs or frac:
        clock += str(secs) + ("." + f"{frac:07d}".rstrip("0") if frac else "") + "S"
    return out + ("T" + clock if clock else "")


def duration_seconds(text: str | None) -> float | None:
    """Seconds of a duration, None for missing or TimeSpan.MaxValue ("no limit")."""
    if not text:
        return None
    ticks = parse_duration(text)
    if ticks >= MAX_DURATION_TICKS:
        return None
    return ticks / TICKS_PER_SECOND


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Key order: the service writes properties in a fixed order (recorded order first, then the
# rest in the REST model's order). Bodies are reordered when rendered.

POOL_ORDER = [
    "id",
    "displayName",
    "url",
    "eTag",
    "lastModified",
    "creationTime",
    "state",
    "stateTransitionTime",
    "allocationState",
    "allocationStateTransitionTime",
    "vmSize",
    "resizeTimeout",
    "currentDedicatedNodes",
    "targetDedicatedNodes",
    "currentLowPriorityNodes",
    "targetLowPriorityNodes",
    "resizeErrors",
    "enableAutoScale",
    "autoScaleFormula",
    "autoScaleEvaluationInterval",
    "autoScaleRun",
    "enableInterNodeCommunication",
    "startTask",
    "userAccounts",
    "certificateReferences",
    "applicationPackageReferences",
    "metadata",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "virtualMachineConfiguration",
    "networkConfiguration",
    "mountConfiguration",
    "identity",
    "upgradePolicy",
    "stats",
    "targetNodeCommunicationMode",
    "currentNodeCommunicationMode",
]
JOB_ORDER = [
    "id",
    "displayName",
    "url",
    "eTag",
    "lastModified",
    "creationTime",
    "state",
    "stateTransitionTime",
    "previousState",
    "previousStateTransitionTime",
    "priority",
    "maxParallelTasks",
    "usesTaskDependencies",
    "allowTaskPreemption",
    "constraints",
    "jobManagerTask",
    "jobPreparationTask",
    "jobReleaseTask",
    "commonEnvironmentSettings",
    "poolInfo",
    "networkConfiguration",
    "metadata",
    "executionInfo",
    "onAllTasksComplete",
    "onTaskFailure",
    "stats",
]
TASK_ORDER = [
    "id",
    "displayName",
    "url",
    "eTag",
    "creationTime",
    "lastModified",
    "state",
    "stateTransitionTime",
    "previousState",
    "previousStateTransitionTime",
    "commandLine",
    "containerSettings",
    "resourceFiles",
    "outputFiles",
    "environmentSettings",
    "affinityInfo",
    "exitConditions",
    "userIdentity",
    "constraints",
    "requiredSlots",
    "multiInstanceSettings",
    "dependsOn",
    "applicationPackageReferences",
    "executionInfo",
    "nodeInfo",
    "stats",
]
NODE_ORDER = [
    "id",
    "url",
    "state",
    "schedulingState",
    "stateTransitionTime",
    "lastBootTime",
    "allocationTime",
    "ipAddress",
    "affinityId",
    "vmSize",
    "totalTasksRun",
    "totalTasksSucceeded",
    "runningTasksCount",
    "runningTaskSlotsCount",
    "recentTasks",
    "startTask",
    "startTaskInfo",
    "certificateReferences",
    "errors",
    "isDedicated",
    "endpointConfiguration",
    "nodeAgentInfo",
    "virtualMachineInfo",
]

VM_CONFIG_ORDER = [
    "imageReference",
    "nodeAgentSKUId",
    "windowsConfiguration",
    "dataDisks",
    "licenseType",
    "containerConfiguration",
    "diskEncryptionConfiguration",
    "nodePlacementConfiguration",
    "extensions",
    "osDisk",
    "securityProfile",
    "serviceArtifactReference",
]
IMAGE_ORDER = [
    "publisher",
    "offer",
    "sku",
    "version",
    "virtualMachineImageId",
    "exactVersion",
    "sharedGalleryImageId",
    "communityGalleryImageId",
]


def ordered(body: Mapping[str, Any], order: Iterable[str]) -> Json:
    """``body`` with keys in the service's order; unknown keys keep their order at the end."""
    out: Json = {k: body[k] for k in order if k in body}
    if len(out) != len(body):
        for k, v in body.items():
            if k not in out:
                out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# Defaults the service fills in

AUTO_USER = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}


def user_identity(value: object) -> Json:
    """A user identity with the service's defaults (auto user, pool scope, non-admin)."""
    if not isinstance(value, dict) or not value:
        return {"autoUser": dict(AUTO_USER["autoUser"])}
    if "username" in value:
        return {"username": value["username"]}
    auto = value.get("autoUser") or {}
    return {
        "autoUser": {
            "scope": str(auto.get("scope") or "pool").lower(),
            "elevationLevel": str(auto.get("elevationLevel") or "nonadmin").lower(),
        }
    }


def pascal_fill_type(value: object) -> str:
    text = str(value or "spread").lower()
    return {"spread": "Spread", "pack": "Pack"}.get(text, str(value))


EXECUTION_ORDER = [
    "startTime",
    "endTime",
    "exitCode",
    "containerInfo",
    "failureInfo",
    "result",
    "retryCount",
    "lastRetryTime",
    "requeueCount",
    "lastRequeueTime",
]
START_TASK_INFO_ORDER = [
    "state",
    "startTime",
    "endTime",
    "exitCode",
    "containerInfo",
    "failureInfo",
    "retryCount",
    "lastRetryTime",
    "result",
]


def execution_info(**fields: Any) -> Json:
    """A task's ``executionInfo`` in the service's order; None values are left out."""
    return {k: fields[k] for k in EXECUTION_ORDER if fields.get(k) is not None}


def failure_info(category: str, code: str, message: str, **details: str) -> Json:
    """``failureInfo`` (category ``usererror``/``servererror``) with name/value details."""
    body: Json = {"category": category, "code": code, "message": message}
    pairs = details or {"Message": message}
    body["details"] = [{"name": k, "value": v} for k, v in pairs.items()]
    return body

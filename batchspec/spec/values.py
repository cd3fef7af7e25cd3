"""Value rules a JSON Schema cannot express well: Batch ids, container names, durations."""

from __future__ import annotations

import re

BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")

_SHORT = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_SHORT_ALL = re.compile(r"^(?:\d+(?:\.\d+)?[dhms])+$")
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def default_container(name: str) -> str:
    """``outputs.container`` when the spec does not name one: ``<name>-output``, made a valid
    container name (lower case, '-' for anything else, at most 63 characters)."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:56].strip("-")
    return f"{base or 'batchspec'}-output"


def batch_id_problem(value: str, what: str) -> str | None:
    """Why ``value`` is not a valid Batch id, or None."""
    if BATCH_ID_RE.match(value):
        return None
    if not value:
        return f"{what} must not be empty"
    if len(value) > 64:
        return f"{what} '{value[:20]}...' is {len(value)} characters; a Batch id has at most 64"
    bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "-_"))})
    shown = " ".join(repr(c) for c in bad)
    return f"{what} '{value}' may only contain letters, digits, '-' and '_' (found {shown})"


def container_problem(value: str, what: str) -> str | None:
    """Why ``value`` is not a valid storage container name, or None."""
    if CONTAINER_RE.match(value):
        return None
    return (
        f"{what} '{value}' is not a valid container name: 3-63 lower-case letters, digits and "
        "single '-', starting and ending with a letter or digit"
    )


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``30m``, ``1h30m``, ``90s``, ``2d`` or ISO 8601 ``PT30M``.

    Raises ValueError with a message fit for a user.
    """
    value = text.strip()
    total = 0.0
    if _SHORT_ALL.match(value):
        for number, unit in _SHORT.findall(value):
            total += float(number) * _UNIT_SECONDS[unit]
    else:
        iso = _ISO.match(value.upper())
        if not iso or value.upper() in ("P", "PT") or value.upper().endswith("T"):
            raise ValueError(f"'{text}' is not a duration; write e.g. 30m, 1h30m, 90s, 2d or PT30M")
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"duration '{text}' must be longer than zero")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: 1h30m, 45s, 2m5s."""
    secs = round(seconds)
    if secs < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{secs}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, secs = divmod(secs, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


# An image reference as `docker pull` takes it (the distribution reference grammar): an optional
# registry host[:port], lower-case path components, then :tag and/or @digest.
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
MAX_IMAGE_NAME = 255


def image_problem(value: str, what: str = "image") -> str | None:
    """Why ``value`` is not an image reference `docker pull` accepts, or None."""
    if not value.strip():
        return f"{what} must not be empty"
    match = IMAGE_RE.match(value)
    if match and len(match.group("name")) <= MAX_IMAGE_NAME:
        return None
    if match:
        reason = f"its name is longer than {MAX_IMAGE_NAME} characters"
    elif any(c.isspace() for c in value) or value.startswith("-"):
        reason = "it must not contain spaces or start with '-'"
    elif "://" in value:
        reason = "write it without a scheme, e.g. myregistry.azurecr.io/ffmpeg:7.1"
    elif _repository(value) != _repository(value).lower():
        reason = "repository names are lower case (only a registry host may have capitals)"
    else:
        reason = "write [registry/]name[:tag][@digest], e.g. myregistry.azurecr.io/tools/ffmpeg:7.1"
    return f"{what} '{value}' is not a valid image reference: {reason}"


def _repository(image: str) -> str:
    """The repository path of an image reference: without its registry host, tag and digest."""
    name = image.split("@", maxsplit=1)[0]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name.split(":", maxsplit=1)[0]


def runs_containers(publisher: str, offer: str, sku: str) -> bool:
    """Whether a Marketplace image is one Azure Batch documents for container pools (with a
    Docker-compatible runtime installed): Microsoft's HPC images (microsoft-dsvm ubuntu-hpc,
    almalinux *-hpc), the Batch container images (microsoft-azure-batch *-container*), and Windows
    Server SKUs "with-containers". Other images need a container runtime of their own."""
    publisher, offer, sku = publisher.lower(), offer.lower(), sku.lower()
    if publisher == "microsoft-dsvm":
        return offer.startswith("ubuntu-hpc")
    if publisher == "almalinux":
        return "hpc" in offer
    if publisher == "microsoft-azure-batch":
        return "container" in offer
    if publisher == "microsoftwindowsserver":
        return "with-containers" in sku
    return False


def container_pool_warning(publisher: str, offer: str, sku: str) -> str | None:
    """The warning for a pool whose tasks run in images but whose VM image may not run them."""
    if runs_containers(publisher, offer, sku):
        return None
    return (f"pool image {publisher}/{offer}/{sku} is not one Azure Batch documents for containers (it may have "
            "no container runtime, and its nodes then become unusable): use e.g. microsoft-dsvm/ubuntu-hpc/2204 "
            "with node_agent_sku 'batch.node.ubuntu 22.04', or an image with Docker installed")

"""What nodes cost: VM prices from the public Azure Retail Prices API, cached on disk, and
node-hours turned into money.

The API (``https://prices.azure.com/api/retail/prices``, no credentials) answers
``{"Items": [...], "NextPageLink": ...}``; an item is one meter with ``armSkuName``,
``armRegionName``, ``productName`` ("Virtual Machines Av2 Series", "... Windows"), ``skuName``
("A1 v2", "A1 v2 Spot", "A1 v2 Low Priority"), ``type`` ("Consumption", "DevTestConsumption",
"Reservation"), ``unitOfMeasure`` ("1 Hour"), ``retailPrice``, ``currencyCode`` and
``effectiveStartDate``. Batch bills a pool's VMs at these pay-as-you-go prices; spot nodes at the
Spot meter.

``BATCHSPEC_PRICES_URL`` points at another server (tests serve the same shape on loopback).
Answers are cached for a week under ``$XDG_CACHE_HOME/batchspec/prices``; with ``offline``
only the cache is read. Every failure ends as "price unknown" with the reason, never an error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..plan import Plan

DEFAULT_URL = "https://prices.azure.com/api/retail/prices"
URL_ENV = "BATCHSPEC_PRICES_URL"
REGION_ENV = "BATCHSPEC_REGION"
CACHE_SECONDS = 7 * 86400
TIMEOUT_SECONDS = 10
MAX_PAGES = 10  # one VM size in one region is a page or two; stop a runaway server
_ENDPOINT_REGION = re.compile(r"^[^.]+\.([a-z0-9]+)\.batch\.azure\.(?:com|us|cn)$")


@dataclass(frozen=True)
class VmPrice:
    vm_size: str
    region: str
    os: str  # Linux | Windows
    currency: str
    dedicated: float | None  # per node-hour
    spot: float | None
    effective: str | None  # the meter's effectiveStartDate (YYYY-MM-DD)
    fetched: str  # when it was fetched (YYYY-MM-DD)
    source: str  # the API's host

    def describe(self) -> str:
        since = f", effective {self.effective}" if self.effective else ""
        return (f"Azure retail pay-as-you-go price of {self.vm_size} ({self.os}) in {self.region}{since}; "
                f"fetched {self.fetched} from {self.source}")


@dataclass(frozen=True)
class PriceLookup:
    price: VmPrice | None
    problem: str | None = None  # why the price is unknown (or stale)

    def unknown(self) -> str:
        return f"price unknown ({self.problem})" if self.problem else "price unknown"


def is_windows(plan: Plan) -> bool:
    """Windows nodes are priced apart (their meters' product names end in "Windows")."""
    return plan.pool.node_agent_sku.lower().startswith("batch.node.windows")


def region_for(env: Mapping[str, str], override: str | None = None) -> tuple[str | None, str]:
    """The Batch account's region and how it is known: ``--region``, ``BATCHSPEC_REGION``, or the
    account endpoint's host (``<account>.<region>.batch.azure.com``)."""
    if override:
        return override.lower(), "--region"
    if env.get(REGION_ENV):
        return env[REGION_ENV].strip().lower(), REGION_ENV
    endpoint = env.get("AZURE_BATCH_ENDPOINT", "").strip()
    host = urlparse(endpoint if "://" in endpoint else "https://" + endpoint).hostname or ""
    if match := _ENDPOINT_REGION.match(host.lower()):
        return match.group(1), "the Batch account endpoint"
    return None, ""


def _cache_file(env: Mapping[str, str], base: str, region: str, vm_size: str) -> Path:
    root = Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME") or Path.home()) / ".cache")
    server = hashlib.sha256(base.encode()).hexdigest()[:12]  # a test server never fills the real cache
    safe = re.sub(r"[^a-z0-9_.-]", "_", f"{region}-{vm_size}".lower())
    return root / "batchspec" / "prices" / server / f"{safe}.json"


def lookup(vm_size: str, region: str | None, *, windows: bool, env: Mapping[str, str], offline: bool = False,
           now: float | None = None) -> PriceLookup:
    """The hourly prices of ``vm_size`` in ``region``, from the cache or the API."""
    if not region:
        return PriceLookup(None, f"the region is unknown: set {REGION_ENV} or pass --region")
    base = env.get(URL_ENV) or DEFAULT_URL
    cache = _cache_file(env, base, region, vm_size)
    moment = time.time() if now is None else now
    cached = _read_cache(cache)
    if cached is not None and (offline or moment - cached[0] < CACHE_SECONDS):
        return _choose(cached[1], vm_size, region, windows, cached[0], base)
    if offline:
        return PriceLookup(None, f"--offline and no cached price for {vm_size} in {region}")
    try:
        items = _fetch(base, vm_size, region)
    except Exception as exc:  # any network or protocol failure is "price unknown", never a crash
        why = f"could not reach {urlparse(base).hostname}: {_short(exc)}"
        if cached is not None:
            stale = _choose(cached[1], vm_size, region, windows, cached[0], base)
            return PriceLookup(stale.price, f"cached price; {why}") if stale.price else stale
        return PriceLookup(None, why)
    _write_cache(cache, moment, items)
    return _choose(items, vm_size, region, windows, moment, base)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"^\w*Connection(Pool)?\([^)]*\):\s*", "", text)  # urllib3's connection repr says nothing new
    return text[:200]


def _read_cache(path: Path) -> tuple[float, list[dict[str, Any]]] | None:
    try:
        data = json.loads(path.read_text())
        return float(data["fetched"]), list(data["items"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, fetched: float, items: list[dict[str, Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fetched": fetched, "items": items}))
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs a request next time


def _fetch(base: str, vm_size: str, region: str) -> list[dict[str, Any]]:
    """Every Consumption meter of one VM size in one region (following NextPageLink)."""
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy
    from azure.core.rest import HttpRequest

    def quoted(value: str) -> str:
        return value.replace("'", "''")

    query = (f"serviceName eq 'Virtual Machines' and armRegionName eq '{quoted(region)}' "
             f"and armSkuName eq '{quoted(vm_size)}' and priceType eq 'Consumption'")
    client: PipelineClient[Any, Any] = PipelineClient(base, policies=[
        HeadersPolicy({"Accept": "application/json"}), RetryPolicy(retry_total=2, retry_backoff_factor=0.5)])
    items: list[dict[str, Any]] = []
    request = HttpRequest("GET", base, params={"$filter": query})
    with client:
        for _ in range(MAX_PAGES):
            response = client.send_request(request, connection_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS)
            response.raise_for_status()
            page = response.json()
            items.extend(i for i in page.get("Items", []) if isinstance(i, dict))
            link = page.get("NextPageLink")
            if not link:
                break
            request = HttpRequest("GET", link)
    return items


def _choose(items: list[dict[str, Any]], vm_size: str, region: str, windows: bool, fetched: float,
            base: str) -> PriceLookup:
    """The dedicated and spot hourly meters of the OS among the API's items."""
    os_name = "Windows" if windows else "Linux"
    dedicated: dict[str, Any] | None = None
    spot: dict[str, Any] | None = None
    low: dict[str, Any] | None = None
    for item in items:
        if (str(item.get("armSkuName", "")).lower() != vm_size.lower()
                or str(item.get("armRegionName", "")).lower() != region
                or item.get("type", "Consumption") != "Consumption"
                or str(item.get("unitOfMeasure", "")).lower() != "1 hour"
                or not isinstance(item.get("retailPrice"), int | float)):
            continue
        if str(item.get("productName", "")).endswith("Windows") != windows:
            continue
        sku = str(item.get("skuName", ""))
        if sku.endswith(" Spot"):
            spot = _newer(spot, item)
        elif sku.endswith(" Low Priority"):
            low = _newer(low, item)
        else:
            dedicated = _newer(dedicated, item)
    spot = spot or low  # Batch's older low-priority nodes are billed at the Low Priority meter
    if dedicated is None and spot is None:
        return PriceLookup(None, f"no {os_name} price for {vm_size} in {region} at {urlparse(base).hostname}")
    chosen = [m for m in (dedicated, spot) if m is not None]
    effective = max(str(m.get("effectiveStartDate", ""))[:10] for m in chosen) or None
    price = VmPrice(
        vm_size=str(chosen[0].get("armSkuName", vm_size)), region=region, os=os_name,
        currency=str(chosen[0].get("currencyCode", "USD")),
        dedicated=float(dedicated["retailPrice"]) if dedicated else None,
        spot=float(spot["retailPrice"]) if spot else None,
        effective=effective, fetched=datetime.fromtimestamp(fetched, timezone.utc).strftime("%Y-%m-%d"),
        source=urlparse(base).hostname or base,
    )
    return PriceLookup(price)


def _newer(current: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any]:
    """The meter in effect: the latest effectiveStartDate, a primary meter region first."""
    if current is None:
        return item

    def key(m: dict[str, Any]) -> tuple[str, bool]:
        return str(m.get("effectiveStartDate", "")), bool(m.get("isPrimaryMeterRegion", True))

    return item if key(item) > key(current) else current


# --- node-hours and money ---------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Node-hours a plan should take, from a per-task duration, and their price."""

    tasks: int
    task_seconds: float | None
    basis: str  # where the duration comes from, or why there is none
    wall_seconds: float | None = None
    dedicated_hours: float = 0.0
    spot_hours: float = 0.0
    autoscale: bool = False

    @property
    def node_hours(self) -> float:
        return self.dedicated_hours + self.spot_hours


def estimate(plan: Plan, task_seconds: float | None, basis: str) -> Estimate:
    """Fixed pools bill every node for the whole run: waves of tasks over the pool's slots times
    the duration. Autoscale pools: the task time itself, packed onto nodes (a lower bound)."""
    pool, tasks = plan.pool, len(plan.tasks)
    if task_seconds is None or tasks == 0:
        return Estimate(tasks, task_seconds, basis)
    nodes = pool.dedicated + pool.spot
    if pool.autoscale or nodes == 0:
        hours = tasks * task_seconds / pool.task_slots_per_node / 3600
        return Estimate(tasks, task_seconds, basis, None, hours, 0.0, autoscale=True)
    wall = math.ceil(tasks / (nodes * pool.task_slots_per_node)) * task_seconds
    return Estimate(tasks, task_seconds, basis, wall, pool.dedicated * wall / 3600, pool.spot * wall / 3600)


@dataclass(frozen=True)
class Cost:
    amount: float | None  # None when a price that is needed is unknown
    currency: str
    detail: str  # how it adds up


def cost(dedicated_hours: float, spot_hours: float, lookup: PriceLookup) -> Cost:
    price = lookup.price
    if price is None:
        return Cost(None, "", lookup.unknown())
    parts, total, missing = [], 0.0, []
    for hours, rate, kind in ((dedicated_hours, price.dedicated, "dedicated"), (spot_hours, price.spot, "spot")):
        if hours <= 0:
            continue
        if rate is None:
            missing.append(kind)
            continue
        total += hours * rate
        parts.append(f"{hours:.3g} {kind} node-h x {money(rate, price.currency)}/h")
    if missing:
        return Cost(None, price.currency, f"price unknown: no {' or '.join(missing)} price for {price.vm_size} "
                                          f"in {price.region}")
    return Cost(total, price.currency, " + ".join(parts) or "no node time")


def money(amount: float, currency: str) -> str:
    """2 decimals from 1 up; below, 3 significant digits (a spot node-hour costs fractions of a cent)."""
    if amount >= 1 or amount <= 0:
        return f"{amount:,.2f} {currency}"
    digits = 2 - math.floor(math.log10(amount))
    text = f"{amount:.{digits}f}".rstrip("0")
    return f"{text + '0' * max(0, 4 - len(text))} {currency}"


def price_dict(lookup: PriceLookup) -> dict[str, Any]:
    return {"price": asdict(lookup.price) if lookup.price else None, "problem": lookup.problem}

"""VM prices from the Retail Prices API (served on loopback in its documented shape), the cache,
--offline, "price unknown", and node-hours turned into an estimate."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from batchspec.observe import pricing
from batchspec.plan import build_plan
from batchspec.spec import load_spec
from tests.prices import PriceServer


def env_for(prices: PriceServer | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}
    if prices is not None:
        env[pricing.URL_ENV] = prices.url
    return env


def test_linux_dedicated_and_spot_prices_with_date_and_source(prices: PriceServer, tmp_path: Path) -> None:
    found = pricing.lookup("standard_a1_v2", "westeurope", windows=False, env=env_for(prices, tmp_path))
    price = found.price
    assert found.problem is None and price is not None
    assert (price.dedicated, price.spot) == (0.043, 0.0091)  # the newest meter; Spot before Low Priority
    assert price.vm_size == "Standard_A1_v2" and price.region == "westeurope" and price.os == "Linux"
    assert price.effective == "2024-05-01" and price.source == "127.0.0.1" and price.currency == "USD"
    assert "fetched" in price.describe() and "effective 2024-05-01" in price.describe()
    # The filter asks the service for one size in one region, Consumption prices only, page after page.
    query = parse_qs(urlparse(prices.requests[0]).query)["$filter"][0]
    assert query == ("serviceName eq 'Virtual Machines' and armRegionName eq 'westeurope' "
                     "and armSkuName eq 'standard_a1_v2' and priceType eq 'Consumption'")
    assert len(prices.requests) == 3  # 6 matching meters, 2 a page: NextPageLink followed


def test_windows_meters(prices: PriceServer, tmp_path: Path) -> None:
    found = pricing.lookup("Standard_A1_v2", "westeurope", windows=True, env=env_for(prices, tmp_path))
    assert found.price is not None and (found.price.dedicated, found.price.spot) == (0.066, 0.0132)
    assert found.price.os == "Windows"


def test_cached_for_a_week_then_fetched_again(prices: PriceServer, tmp_path: Path) -> None:
    env = env_for(prices, tmp_path)
    pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env, now=1_000_000.0)
    asked = len(prices.requests)
    again = pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env, now=1_000_000.0 + 86400)
    assert again.price is not None and len(prices.requests) == asked
    pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env, now=1_000_000.0 + 8 * 86400)
    assert len(prices.requests) > asked


def test_offline_uses_the_cache_only(prices: PriceServer, tmp_path: Path) -> None:
    env = env_for(prices, tmp_path)
    cold = pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env, offline=True)
    assert cold.price is None and cold.unknown() == (
        "price unknown (--offline and no cached price for Standard_A1_v2 in westeurope)")
    assert prices.requests == []
    pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env)
    asked = len(prices.requests)
    warm = pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env, offline=True,
                          now=10**12)  # however old
    assert warm.price is not None and len(prices.requests) == asked


def test_unreachable_api_is_price_unknown_or_the_stale_cache(prices: PriceServer, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api/retail/prices"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), pricing.URL_ENV: dead}
    found = pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env)
    assert found.price is None and found.unknown().startswith("price unknown (could not reach 127.0.0.1")

    prices.fail = True
    env = env_for(prices, tmp_path)
    assert pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env).price is None
    prices.fail = False
    pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env, now=0.0)  # cached long ago
    prices.fail = True
    stale = pricing.lookup("Standard_A1_v2", "westeurope", windows=False, env=env)
    assert stale.price is not None and stale.problem is not None and stale.problem.startswith("cached price;")


def test_unknown_size_region_and_no_region(prices: PriceServer, tmp_path: Path) -> None:
    env = env_for(prices, tmp_path)
    nothing = pricing.lookup("Standard_Z9_v9", "westeurope", windows=False, env=env)
    assert nothing.unknown() == "price unknown (no Linux price for Standard_Z9_v9 in westeurope at 127.0.0.1)"
    assert "the region is unknown" in pricing.lookup("Standard_A1_v2", None, windows=False, env=env).unknown()


@pytest.mark.parametrize(("env", "override", "region"), [
    ({"AZURE_BATCH_ENDPOINT": "https://acct.westeurope.batch.azure.com"}, None, "westeurope"),
    ({"AZURE_BATCH_ENDPOINT": "acct.eastus2.batch.azure.com/"}, None, "eastus2"),
    ({"AZURE_BATCH_ENDPOINT": "http://127.0.0.1:8899"}, None, None),
    ({"BATCHSPEC_REGION": "NorthEurope", "AZURE_BATCH_ENDPOINT": "https://a.eastus.batch.azure.com"}, None,
     "northeurope"),
    ({"BATCHSPEC_REGION": "northeurope"}, "uksouth", "uksouth"),
    ({}, None, None),
])
def test_region(env: dict[str, str], override: str | None, region: str | None) -> None:
    assert pricing.region_for(env, override)[0] == region


def spec_file(tmp_path: Path, nodes: str, tasks: int, extra: str = "") -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    for i in range(tasks):
        (tmp_path / "in" / f"f{i}.txt").write_text("x")
    path = tmp_path / "spec.yaml"
    path.write_text(
        "batchspec: 1\nname: est\n"
        "pool: {id: p, vm_size: standard_a1_v2, image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server},"
        f" node_agent_sku: batch.node.ubuntu 24.04, {nodes}}}\n"
        "inputs: {path: in/*.txt}\n"
        f"task: {{command: cat <<input>>{extra}}}\n")
    return path


def test_estimate_of_a_fixed_pool_bills_every_node_for_the_whole_run(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, "nodes: {dedicated: 1, spot: 2}, task_slots_per_node: 2", 13,
                     ", expected_duration: 10m")
    plan = build_plan(load_spec(spec))
    assert load_spec(spec).expected_task_seconds == 600
    est = pricing.estimate(plan, 600, "spec")
    # 13 tasks on 3 nodes x 2 slots: 3 waves of 10 minutes, every node billed for 30 minutes.
    assert est.wall_seconds == 1800 and est.dedicated_hours == 0.5 and est.spot_hours == 1.0
    lookup = pricing.PriceLookup(pricing.VmPrice("Standard_A1_v2", "westeurope", "Linux", "USD", 0.04, 0.01,
                                                 "2024-05-01", "2025-01-01", "prices.azure.com"))
    spent = pricing.cost(est.dedicated_hours, est.spot_hours, lookup)
    assert spent.amount == pytest.approx(0.5 * 0.04 + 1.0 * 0.01)
    missing = pricing.cost(1.0, 1.0, pricing.PriceLookup(pricing.VmPrice(
        "Standard_A1_v2", "westeurope", "Linux", "USD", 0.04, None, None, "2025-01-01", "x")))
    assert missing.amount is None and "no spot price" in missing.detail


def test_estimate_of_an_autoscale_pool_packs_the_task_time(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, "autoscale: {formula: '$TargetDedicatedNodes = 2;'}, task_slots_per_node: 4", 8)
    est = pricing.estimate(build_plan(load_spec(spec)), 900, "spec")
    assert est.autoscale and est.node_hours == pytest.approx(8 * 900 / 4 / 3600)


def test_expected_duration_does_not_change_the_job_id(tmp_path: Path) -> None:
    plain = build_plan(load_spec(spec_file(tmp_path, "nodes: {dedicated: 1}", 2)))
    timed = build_plan(load_spec(spec_file(tmp_path, "nodes: {dedicated: 1}", 2, ", expected_duration: 5m")))
    assert plain.job_id == timed.job_id

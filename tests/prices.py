"""Pytest plugin: a loopback stand-in for the Azure Retail Prices API.

It answers ``GET /api/retail/prices?$filter=...`` in the API's documented shape
(https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices):
``{"BillingCurrency", "CustomerEntityId", "CustomerEntityType", "Items": [...], "NextPageLink",
"Count"}``, items with the documented fields, filtered by the ``eq`` clauses the client sends
and paged (two items a page here, 100 on the real service) through ``NextPageLink`` with
``$skip``. The prices are made up; the shape is the service's.

Fixture ``prices`` (or ``with serve_prices() as prices``): a running server; ``prices.url`` is what
``BATCHSPEC_PRICES_URL`` takes.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

PAGE = 2


def meter(sku: str, sku_name: str, product: str, price: float, *, region: str = "westeurope",
          kind: str = "Consumption", since: str = "2024-05-01T00:00:00Z") -> dict[str, Any]:
    return {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": region,
        "location": "EU West" if region == "westeurope" else region,
        "effectiveStartDate": since,
        "meterId": f"00000000-0000-0000-0000-{zlib.crc32(f'{sku}{sku_name}{product}{since}'.encode()):012d}",
        "meterName": sku_name,
        "productId": "DZH318Z0BQ4L",
        "skuId": "DZH318Z0BQ4L/00DQ",
        "productName": product,
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": kind,
        "isPrimaryMeterRegion": True,
        "armSkuName": sku,
    }


CATALOG = [
    meter("Standard_A1_v2", "A1 v2", "Virtual Machines Av2 Series", 0.043),
    meter("Standard_A1_v2", "A1 v2", "Virtual Machines Av2 Series", 0.05, since="2021-01-01T00:00:00Z"),  # old
    meter("Standard_A1_v2", "A1 v2 Spot", "Virtual Machines Av2 Series", 0.0091),
    meter("Standard_A1_v2", "A1 v2 Low Priority", "Virtual Machines Av2 Series", 0.0086),
    meter("Standard_A1_v2", "A1 v2", "Virtual Machines Av2 Series Windows", 0.066),
    meter("Standard_A1_v2", "A1 v2 Spot", "Virtual Machines Av2 Series Windows", 0.0132),
    meter("Standard_A1_v2", "A1 v2", "Virtual Machines Av2 Series", 0.021, kind="DevTestConsumption"),
    meter("Standard_A1_v2", "A1 v2", "Virtual Machines Av2 Series", 0.052, region="eastus"),
    meter("Standard_D2s_v3", "D2s v3", "Virtual Machines DSv3 Series", 0.115),
]
_EQ = re.compile(r"(\w+) eq '((?:[^']|'')*)'")


@dataclass
class PriceServer:
    url: str
    requests: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=lambda: list(CATALOG))
    fail: bool = False  # answer 500


def _matches(item: dict[str, Any], clauses: list[tuple[str, str]]) -> bool:
    for name, value in clauses:
        key = "type" if name == "priceType" else name
        if str(item.get(key, "")).lower() != value.replace("''", "'").lower():  # case-insensitive, as documented
            return False
    return True


@pytest.fixture
def prices() -> Iterator[PriceServer]:
    with serve_prices() as server:
        yield server


@contextmanager
def serve_prices() -> Iterator[PriceServer]:
    """The stand-in API on a free loopback port for the duration of the block."""
    server_box: list[PriceServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = server_box[0]
            state.requests.append(self.path)
            parsed = urlparse(self.path)
            if parsed.path != "/api/retail/prices" or state.fail:
                self.send_response(500 if state.fail else 404)
                self.end_headers()
                return
            query = parse_qs(parsed.query)
            clauses = _EQ.findall(query.get("$filter", [""])[0])
            skip = int(query.get("$skip", ["0"])[0])
            found = [i for i in state.items if _matches(i, clauses)]
            page = found[skip: skip + PAGE]
            next_link = None
            if skip + PAGE < len(found):
                params = {k: v[0] for k, v in query.items()}
                params["$skip"] = str(skip + PAGE)
                next_link = f"{state.url}?{urlencode(params)}"
            body = json.dumps({"BillingCurrency": "USD", "CustomerEntityId": "Default",
                               "CustomerEntityType": "Retail", "Items": page, "NextPageLink": next_link,
                               "Count": len(page)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_box.append(PriceServer(f"http://127.0.0.1:{httpd.server_address[1]}/api/retail/prices"))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server_box[0]
    finally:
        httpd.shutdown()
        httpd.server_close()

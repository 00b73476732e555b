"""The query API and the dashboard on two real workers sharing the partitions: a customer is
answered by whichever worker is asked (Faust routes to the owner), populations add up both
workers, answers match the OpenAPI file, 400/401/404 are clear, and the dashboard page shows
data in headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import pytest
from yarl import URL
from referencing import Registry, Resource

from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "schemas" / "openapi.json").read_text())
TOKEN = "s3cret-token"
CUSTOMERS = [f"api-{n:02d}" for n in range(24)]


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of one OpenAPI component schema (OpenAPI 3.1 schemas are JSON Schema)."""
    registry = Registry().with_resource("urn:openapi", Resource.from_contents({**OPENAPI, "$schema": "https://json-schema.org/draft/2020-12/schema"}))
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{name}"}, registry=registry)


def get(url: str, token: str | None = TOKEN) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return response.status, json.loads(body) if response.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def order(customer: str, n: int) -> bytes:
    data = {"order_id": f"{customer}-{n}", "total": 50.0 + n, "currency": "USD", "margin": 20.0, "products": [{"product_id": "p", "price": 50.0 + n, "quantity": 1, "tier": "basic"}]}
    return cloudevent(f"{customer}-e{n}", "Order Completed", f"2024-03-{10 + n:02d}T10:00:00Z", customer, data)


def wait_until(check, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(what)


async def test_query_api_on_two_workers_and_the_dashboard(make_worker, broker: str, tmp_path: Path) -> None:
    env = worker_env(partitions=4, API_TOKEN=TOKEN)
    first = make_worker(env)
    second = make_worker(env)
    topics = first.topics

    # Both workers own some partitions once the rebalance settles.
    def both_hold_partitions():
        parts = [get(f"{w.url}/api/summary?local=1")[1]["summary"]["partitions"] for w in (first, second)]
        return parts if all(parts) and sorted(parts[0] + parts[1]) == [0, 1, 2, 3] else None

    layout = wait_until(both_hold_partitions, what="partitions spread over both workers")

    async with Kafka(broker, [topics["customer-scores"]]) as kafka:
        for customer in CUSTOMERS:
            await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, 0))
        await kafka.send(topics["orders"], "orders", CUSTOMERS[0].encode(), order(CUSTOMERS[0], 1))
        for customer in CUSTOMERS:
            await kafka.wait_for(lambda o, c=customer: o.doc["data"]["customer"] == c, timeout_s=60)
        await kafka.wait_for(lambda o: o.doc["data"]["cause"].get("event_id") == f"{CUSTOMERS[0]}-e1", timeout_s=60)

    customer_schema, error_schema = validator("Customer"), validator("Error")
    # Every customer, asked of either worker: the same answer, from the owner.
    for customer in CUSTOMERS:
        answers = [get(f"{w.url}/customers/{urllib.parse.quote(customer)}") for w in (first, second)]
        assert [status for status, _ in answers] == [200, 200], (customer, answers)
        (_, a), (_, b) = answers
        customer_schema.validate(a)
        assert a == b
        assert a["customer"] == customer
        assert a["inputs"]["orders"] == (2 if customer == CUSTOMERS[0] else 1)
        assert a["segments"]["lifecycle"] == ("repeat" if customer == CUSTOMERS[0] else "new")
        assert a["drivers"] and all(d["text"] for d in a["drivers"])
        assert 0 <= a["scores"]["churn_risk"] <= 1

    for worker in (first, second):
        status, body = get(f"{worker.url}/customers/nobody-like-this")
        assert status == 404 and body["error"] == "not_found"
        error_schema.validate(body)
        status, body = get(f"{worker.url}/customers/{CUSTOMERS[1]}/unencoded-slash")  # the id "api-01/unencoded-slash"
        assert status == 404 and body["error"] == "not_found", (status, body)
        status, body = get(f"{worker.url}/customers/{'x' * 200}")
        assert status == 400 and body["error"] == "bad_customer_id"
        status, body = get(f"{worker.url}/customers/{CUSTOMERS[1]}", token=None)
        assert status == 401 and body["error"] == "unauthorized"
        status, body = get(f"{worker.url}/customers/{CUSTOMERS[1]}", token="wrong")
        assert status == 401
        assert get(f"{worker.url}/metrics", token=None)[0] == 200  # ops pages stay open
        # A raw non-ASCII path (as curl sends it) is refused by aiohttp's parser: a 400, and
        # the worker's log must not quote the request line with the id in it.
        with socket.create_connection((URL(worker.url).host, URL(worker.url).port), timeout=10) as raw:
            raw.sendall("GET /customers/café-log-probe HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert raw.recv(64).split(b" ")[1] == b"400"
        time.sleep(0.5)
        assert "log-probe" not in worker.log_path.read_text(errors="replace")
        for faust_page in (f"/table/customer-state/{CUSTOMERS[1]}/", f"/router/customer-state/{CUSTOMERS[1]}/"):
            try:  # Faust's own table and router pages are off: they would bypass the token
                urllib.request.urlopen(f"{worker.url}{faust_page}", timeout=10)
                raise AssertionError(f"{faust_page} is served")
            except urllib.error.HTTPError as err:
                assert err.code == 404, (faust_page, err.code)

    # Populations over both workers, whichever is asked.
    seg = [get(f"{w.url}/segments")[1] for w in (first, second)]
    assert seg[0] == seg[1]
    validator("Segments").validate(seg[0])
    assert seg[0]["customers"] == len(CUSTOMERS) and not seg[0]["partial"]
    assert seg[0]["populations"]["lifecycle"] == {"new": len(CUSTOMERS) - 1, "repeat": 1}
    local_parts = [get(f"{w.url}/api/summary?local=1")[1] for w in (first, second)]
    for part in local_parts:
        validator("LocalSummary").validate(part)
    local = [part["summary"]["customers"] for part in local_parts]
    assert sum(local) == len(CUSTOMERS) and all(local), (local, layout)

    status, summary = get(f"{first.url}/api/summary")
    assert status == 200
    validator("Summary").validate(summary)
    assert sorted(summary["workers"]) == sorted([first.url, second.url])
    flows = {(f["family"], f["from"], f["to"]): f["count"] for f in summary["activity"]["flows"]}
    assert flows[("lifecycle", "none", "new")] == len(CUSTOMERS) and flows[("lifecycle", "new", "repeat")] == 1
    assert summary["throughput"]["consumed"] == len(CUSTOMERS) + 1
    assert {t["trigger"] for t in summary["activity"]["latest_triggers"]} == {"onboarding"}
    assert sum(summary["summary"]["churn_risk_histogram"]["counts"]) == len(CUSTOMERS)

    # The dashboard, rendered by a real browser: its script fetched the summary and drew it.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: `make test` installs it (tests/install-system-tools)"
    url = f"{first.url}/dashboard?token={TOKEN}"
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=8000"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        shot = tmp_path / "dashboard.png"
        subprocess.run([*common, "--window-size=1280,1000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert 'data-loaded="yes"' in dom, dom[:2000]
    assert f'<div class="value" id="customers">{len(CUSTOMERS)}</div>' in dom
    assert 'data-segment="new"' in dom and 'data-family="lifecycle"' in dom
    assert dom.count('class="flow"') >= 2  # none -> new and new -> repeat in the Sankey
    assert "onboarding" in dom
    assert shot.exists() and shot.stat().st_size > 20_000  # a real rendering, not a blank page
    # Without the token the page itself is refused.
    assert get(f"{first.url}/dashboard", token=None)[0] == 401


async def test_a_query_whose_owner_is_hung_or_gone_gets_a_503_to_retry(make_worker, broker: str) -> None:
    """The README's promise: 503 (retry) while the owner cannot answer — not a 500, and not a
    wait as long as the HTTP client's 5-minute default."""
    import signal

    from tests.integration.kafka_helpers import partition_of

    env = worker_env(partitions=4, API_TOKEN=TOKEN)
    first, second = make_worker(env), make_worker(env)
    topics = first.topics

    def second_holds():
        parts = [get(f"{w.url}/api/summary?local=1")[1]["summary"]["partitions"] for w in (first, second)]
        return parts[1] if all(parts) and sorted(parts[0] + parts[1]) == [0, 1, 2, 3] else None

    held = wait_until(second_holds, what="partitions spread over both workers")
    customer = next(c for c in CUSTOMERS if partition_of(c, 4) in held)
    async with Kafka(broker, [topics["customer-scores"]]) as kafka:
        await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, 0))
        await kafka.wait_for(lambda o: o.doc["data"]["customer"] == customer, timeout_s=60)
    url = f"{first.url}/customers/{urllib.parse.quote(customer)}"
    assert get(url)[0] == 200  # forwarded to the second worker, which answers

    second.process.send_signal(signal.SIGSTOP)  # hung: accepts connections, answers nothing
    try:
        started = time.monotonic()
        status, body = get(url)
        waited = time.monotonic() - started
    finally:
        second.process.send_signal(signal.SIGCONT)
    assert (status, body["error"]) == (503, "not_ready") and waited < 8, (status, body, waited)
    validator("Error").validate(body)

    second.stop(kill=True)  # gone: nothing listens on its port
    status, body = get(url)
    assert (status, body["error"]) == (503, "not_ready"), (status, body)
    # Once the partitions moved to the first worker, it answers itself.
    assert wait_until(lambda: get(url)[0] == 200, timeout_s=60, what="the first worker owning every partition")

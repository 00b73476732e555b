"""A killed worker loses nothing: state comes back from the changelog on restart."""

from __future__ import annotations

import pytest

from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent

pytestmark = pytest.mark.integration

CUSTOMERS = [f"restart-{n}" for n in range(10)]


def order_event(customer: str, n: int) -> bytes:
    data = {
        "order_id": f"{customer}-o{n}",
        "total": 10.0 * (n + 1),
        "currency": "USD",
        "margin": 4.0 * (n + 1),
        "products": [{"product_id": "p", "price": 10.0 * (n + 1), "quantity": 1, "tier": "basic"}],
    }
    return cloudevent(f"{customer}-e{n}", "Order Completed", f"2024-0{n + 1}-10T10:00:00Z", customer, data)


async def publish_round(kafka: Kafka, topic: str, scores_topic: str, n: int) -> None:
    for customer in CUSTOMERS:
        await kafka.send(topic, "orders", customer.encode(), order_event(customer, n))
    for customer in CUSTOMERS:
        await kafka.wait_for(lambda o, c=customer: o.topic == scores_topic and o.doc["data"]["cause"].get("event_id") == f"{c}-e{n}", timeout_s=60)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_sigkilled_worker_resumes_with_all_state(make_worker, broker: str, store: str, tmp_path) -> None:
    env = worker_env(partitions=2, STORE=store, DATA_DIR=str(tmp_path / "data"))
    first = make_worker(env)
    topics = first.topics
    async with Kafka(broker, [topics["customer-scores"]]) as kafka:
        for n in range(2):
            await publish_round(kafka, topics["orders"], topics["customer-scores"], n)
        # Mid-stream: the third round is published and the worker is SIGKILLed (no graceful
        # commit, no flush) as soon as the first of its score updates appears.
        for customer in CUSTOMERS:
            await kafka.send(topics["orders"], "orders", customer.encode(), order_event(customer, 2))
        await kafka.wait_for(lambda o: o.topic == topics["customer-scores"] and o.doc["data"]["cause"].get("event_id", "").endswith("-e2"))
        first.stop(kill=True)

        second = make_worker(env)
        await publish_round(kafka, topics["orders"], topics["customer-scores"], 3)
        await kafka.settle(quiet_s=1.5)

    last = {}
    for output in kafka.outputs:
        data = output.doc["data"]
        if data["cause"].get("event_id", "").endswith("-e3"):
            last[data["customer"]] = data
    assert sorted(last) == sorted(CUSTOMERS)
    # Four orders of 10, 20, 30, 40 each: every one counted once, none lost in the kill.
    summary = {c: (d["inputs"]["orders"], d["inputs"]["revenue"], d["scores"]["historic_clv"]) for c, d in last.items()}
    assert summary == {c: (4, pytest.approx(100.0), pytest.approx(40.0)) for c in CUSTOMERS}
    assert second.process is not None and second.process.poll() is None

"""PURCHASE_DAY_TIMEZONE reaches the worker: a shop in New York, two orders one evening there
(they straddle midnight UTC) are one purchase day, so the customer stays `new`."""

from __future__ import annotations

import pytest

from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent

pytestmark = pytest.mark.integration


def order(order_id: str, total: float) -> dict:
    return {"order_id": order_id, "total": total, "currency": "USD", "margin": total / 4,
            "products": [{"product_id": "p", "price": total, "quantity": 1, "tier": "basic"}]}


async def test_the_worker_counts_purchase_days_in_the_shops_time_zone(make_worker, broker: str) -> None:
    worker = make_worker(worker_env(PURCHASE_DAY_TIMEZONE="America/New_York"))
    topics = worker.topics
    scores = topics["customer-scores"]
    async with Kafka(broker, [scores]) as kafka:
        # 18:40 and 19:10 on 2024-12-31 in New York; 23:40 on the 31st and 00:10 on 2025-01-01 UTC.
        await kafka.send(topics["orders"], "orders", b"nyc-1", cloudevent("n1", "Order Completed", "2024-12-31T23:40:00Z", "nyc-1", order("N-1", 40.0)))
        await kafka.send(topics["orders"], "orders", b"nyc-1", cloudevent("n2", "Order Completed", "2025-01-01T00:10:00Z", "nyc-1", order("N-2", 60.0)))
        second = await kafka.wait_for(lambda o: o.topic == scores and o.doc["data"]["cause"].get("event_id") == "n2")
    data = second.doc["data"]
    assert (data["inputs"]["orders"], data["inputs"]["transactions"], data["inputs"]["repeat_transactions"]) == (2, 1, 0)
    assert data["segments"]["lifecycle"] == "new"  # by UTC days it would be "repeat" (tests/unit/test_purchase_days.py)

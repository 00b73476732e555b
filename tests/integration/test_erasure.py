"""Erasure on the real broker: an Erasure Requested event removes the customer from state and
timers, writes tombstones to customer-scores and the state changelog, emits an audit record
without the customer id, and later queries — also after a restart — find nothing. Events
dated before the request and read after it bring nobody back, also after a restart (the
erasure marker in the changelog holds the id's hash only); later ones start a new customer."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent, partition_of

pytestmark = pytest.mark.integration


def pick(name: str, partition: int) -> str:
    return next(f"{name}-{n}" for n in range(1000) if partition_of(f"{name}-{n}", 2) == partition)


GONE, STAYS = pick("erase-me", 0), pick("keep-me", 0)


def order(customer: str, oid: str, when: str) -> bytes:
    data = {"order_id": oid, "total": 60.0, "currency": "USD", "margin": 20.0, "products": [{"product_id": "p", "price": 60.0, "quantity": 1, "tier": "basic"}]}
    return cloudevent(f"ev-{oid}", "Order Completed", when, customer, data)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


async def test_erasure_removes_the_customer_everywhere(make_worker, broker: str, tmp_path) -> None:
    env = worker_env(partitions=2, STORE="rocksdb", DATA_DIR=str(tmp_path / "data"))
    worker = make_worker(env)
    t = worker.topics
    changelog = f"{env['STREAMER_APP_ID']}-customer-state-changelog"
    async with Kafka(broker, [t["customer-scores"], t["segment-changes"], t["campaign-triggers"], t["audit"], changelog]) as kafka:
        for customer in (GONE, STAYS):
            await kafka.send(t["orders"], "orders", customer.encode(), order(customer, f"{customer}-1", "2024-01-10T10:00:00Z"))
            await kafka.send(t["orders"], "orders", customer.encode(), order(customer, f"{customer}-2", "2024-02-10T10:00:00Z"))
        await kafka.wait_for(lambda o: o.topic == t["customer-scores"] and o.doc and o.doc["data"]["cause"].get("event_id") == f"ev-{STAYS}-2")
        assert status_of(f"{worker.url}/customers/{GONE}") == 200

        request = cloudevent("erase-1", "Erasure Requested", "2024-02-11T00:00:00Z", GONE, {"request_id": "dsr-42", "reason": "GDPR art. 17"})
        await kafka.send(t["erasure-requests"], "erasure-requests", GONE.encode(), request)
        audit = await kafka.wait_for(lambda o: o.topic == t["audit"])
        tombstone = await kafka.wait_for(lambda o: o.topic == t["customer-scores"] and o.key == GONE.encode() and o.doc is None)
        # The changelog gets its tombstone at the next write-back (before the next commit).
        await kafka.wait_for(lambda o: o.topic == changelog and o.key == GONE.encode() and o.doc is None, timeout_s=20)
        assert audit.key == b"dsr-42" and GONE.encode() not in json.dumps(audit.doc).encode()
        assert audit.doc["data"]["customer_sha256"] == hashlib.sha256(GONE.encode()).hexdigest()
        assert audit.doc["data"]["found"] is True and audit.doc["data"]["removed"] == ["state", "timers", "scores", "changelog"]
        assert status_of(f"{worker.url}/customers/{GONE}") == 404
        assert status_of(f"{worker.url}/customers/{STAYS}") == 200
        # The erasure marker reaches the changelog with the tombstone: the id's hash, no id.
        marker = await kafka.wait_for(lambda o: o.topic == changelog and (o.key or b"").startswith(b"\x00erased:"), timeout_s=20)
        assert marker.key == b"\x00erased:" + hashlib.sha256(GONE.encode()).hexdigest().encode()
        assert GONE not in json.dumps(marker.doc) and marker.doc["erased_at"] == 1707609600.0  # 2024-02-11

        # An order published before the request, read after it: dropped, nothing published.
        # (Counted in the metrics below; the check after "time passes" finds no output for it.)
        await kafka.send(t["orders"], "orders", GONE.encode(), order(GONE, f"{GONE}-late", "2024-02-10T23:00:00Z"))

        # Time passes (another customer of the partition orders much later): the erased
        # customer's timers (at risk, lapse, onboarding steps...) are gone with them.
        await kafka.send(t["orders"], "orders", STAYS.encode(), order(STAYS, f"{STAYS}-3", "2025-06-01T10:00:00Z"))
        await kafka.wait_for(lambda o: o.topic == t["customer-scores"] and o.doc and o.doc["data"]["cause"].get("event_id") == f"ev-{STAYS}-3")
        await kafka.settle(quiet_s=2.0)
        after = kafka.outputs[kafka.outputs.index(tombstone) + 1 :]
        assert not [o for o in after if o.key == GONE.encode() and o.topic != changelog]

        # Unknown customers are audited as not found.
        await kafka.send(t["erasure-requests"], "erasure-requests", b"never-seen", cloudevent("erase-2", "Erasure Requested", "2024-02-11T00:00:00Z", "never-seen", {"request_id": "dsr-43"}))
        unknown = await kafka.wait_for(lambda o: o.topic == t["audit"] and o.key == b"dsr-43")
        assert unknown.doc["data"]["found"] is False

    metrics = worker.metrics()
    assert 'clv_erasures_total{found="true"} 1.0' in metrics and 'clv_erasures_total{found="false"} 1.0' in metrics
    assert 'clv_events_before_erasure_total{topic="orders"} 1.0' in metrics
    assert GONE not in metrics
    # After a restart (state recovered from local RocksDB and the changelog) still nothing.
    worker.stop()
    worker.start()
    assert status_of(f"{worker.url}/customers/{GONE}") == 404
    assert status_of(f"{worker.url}/customers/{STAYS}") == 200

    # The restarted worker still knows the erasure: an older event stays out, a newer one
    # starts a new customer with nothing of the erased one.
    async with Kafka(broker, [t["customer-scores"], t["segment-changes"], t["campaign-triggers"]]) as kafka:
        await kafka.send(t["email-events"], "email-events", GONE.encode(), cloudevent("late-mail", "Email Opened", "2024-02-09T08:00:00Z", GONE, {"email_id": "m-1", "campaign_id": "c-1"}))
        await kafka.send(t["orders"], "orders", GONE.encode(), order(GONE, f"{GONE}-new", "2024-03-01T10:00:00Z"))
        scored = await kafka.wait_for(lambda o: o.topic == t["customer-scores"] and o.doc and o.doc["data"]["cause"].get("event_id") == f"ev-{GONE}-new")
        await kafka.settle(quiet_s=2.0)
        assert scored.doc["data"]["inputs"]["orders"] == 1 and scored.doc["data"]["inputs"]["revenue"] == 60.0
        assert not [o for o in kafka.outputs if o.doc and o.doc["data"].get("cause", {}).get("event_id") == "late-mail"]
    assert status_of(f"{worker.url}/customers/{GONE}") == 200
    metrics = worker.metrics()
    assert 'clv_events_before_erasure_total{topic="email-events"} 1.0' in metrics

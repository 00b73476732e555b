"""Late, out-of-order and redelivered events give the same state as ordered ones, on the real
broker.

Twin customers on the same partition (so they share the partition's event-time clock) get the
same history across all three input topics: one twin in time order, each event once; the
other in a random order with a third of its events sent twice. Asked afterwards, the worker
must give both twins the same inputs (orders, revenue, margin, refunds, email, survey and
community state) and the same scores.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from streamer import contracts
from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, partition_of

pytestmark = pytest.mark.integration

PARTITIONS = 2
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
START = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)

#: (example file, days after START, changes to its data)
HISTORY = [
    ("order-completed.v1.basic-product.json", 0, {"order_id": "O-1", "currency": "USD"}),
    ("email-delivered.v1.transactional.json", 0.01, {}),
    ("survey-answered.v1.onboarding.json", 2, {}),
    ("email-delivered.v1.campaign.json", 5, {}),
    ("email-opened.v1.campaign.json", 5.1, {}),
    ("email-link-clicked.v1.campaign.json", 5.2, {}),
    ("order-completed.v1.advanced-with-cost.json", 20, {"order_id": "O-2"}),
    ("community-joined.v1.basic.json", 21, {}),
    ("community-posted.v1.question.json", 23, {}),
    ("order-refunded.v1.partial.json", 25, {"order_id": "O-2"}),
    ("community-replied.v1.basic.json", 30, {}),
    ("review-posted.v1.five-stars.json", 31, {}),
    ("referral-made.v1.link.json", 40, {}),
    ("order-completed.v1.margin-and-cost.json", 60, {"order_id": "O-3", "currency": "USD"}),
    ("email-opened.v1.campaign.json", 61, {}),
]


def events_for(customer: str) -> list[tuple[str, str, bytes]]:
    """(topic role, event id, value) of the history, in time order."""
    out = []
    for n, (name, days, changes) in enumerate(HISTORY):
        doc = json.loads((EXAMPLES / name).read_text())
        doc["id"] = f"h{n}"
        doc["subject"] = customer
        doc["time"] = (START + timedelta(days=days)).isoformat().replace("+00:00", "Z")
        doc["data"] = {**doc["data"], **changes}
        out.append((contracts.INPUT_TYPES[doc["type"]], doc["id"], orjson.dumps(doc)))
    return out


def twins(count: int) -> list[tuple[str, str]]:
    """Pairs (ordered, shuffled) of customer ids on the same partition, both partitions used."""
    pairs = []
    for k in range(count):
        target = k % PARTITIONS
        ids = [f"{kind}-{k}-{n}" for kind in ("ordered", "shuffled") for n in range(200)]
        ordered = next(c for c in ids if c.startswith("ordered") and partition_of(c, PARTITIONS) == target)
        shuffled = next(c for c in ids if c.startswith("shuffled") and partition_of(c, PARTITIONS) == target)
        pairs.append((ordered, shuffled))
    return pairs


def query(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return orjson.loads(response.read())


async def test_out_of_order_and_redelivered_events_give_the_same_state(make_worker) -> None:
    worker = make_worker(worker_env(partitions=PARTITIONS))
    topics = worker.topics
    rng = random.Random(5)
    pairs = twins(6)
    expected: set[tuple[str, str]] = set()
    duplicates_sent = 0
    async with Kafka(worker.bootstrap, [topics["customer-scores"]]) as kafka:
        for ordered, shuffled in pairs:
            for role, event_id, value in events_for(ordered):
                await kafka.send(topics[role], role, ordered.encode(), value)
            mixed = events_for(shuffled)
            mixed += rng.sample(mixed, len(mixed) // 3)  # redelivered copies
            duplicates_sent += len(mixed) - len(HISTORY)
            rng.shuffle(mixed)
            for role, event_id, value in mixed:
                await kafka.send(topics[role], role, shuffled.encode(), value)
            expected |= {(c, f"h{n}") for c in (ordered, shuffled) for n in range(len(HISTORY))}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scored = {(o.doc["data"]["customer"], o.doc["data"]["cause"].get("event_id")) for o in kafka.outputs if o.doc}
            if expected <= scored:
                break
            await asyncio.sleep(0.2)
        await kafka.settle(quiet_s=2.0)
        event_scores = [o for o in kafka.outputs if o.doc and o.doc["data"]["cause"].get("event_id")]
    assert expected <= scored, sorted(expected - scored)[:5]
    # Each event scored once: the redelivered copies changed nothing and published nothing.
    assert len(event_scores) == len(expected), (len(event_scores), len(expected))

    for ordered, shuffled in pairs:
        a, b = query(f"{worker.url}/customers/{ordered}"), query(f"{worker.url}/customers/{shuffled}")
        facts = {k: a["inputs"][k] for k in ("orders", "referrals", "has_survey", "emails_opened", "emails_clicked")}
        assert facts == {"orders": 3, "referrals": 1, "has_survey": True, "emails_opened": 2, "emails_clicked": 1}, a["inputs"]
        assert b["inputs"] == a["inputs"], (ordered, a["inputs"], b["inputs"])
        assert b["scores"] == a["scores"], (ordered, a["scores"], b["scores"])
    print(f"\n{len(pairs)} twin pairs, {len(HISTORY)} events each; {duplicates_sent} redelivered copies ignored; same inputs and scores")

"""End to end on the real broker: a scripted history for a few customers across all three
input topics, through a real ``streamer worker``, and the exact outputs that come out."""

from __future__ import annotations

import base64
import math
from collections import defaultdict
from datetime import datetime, timezone

import orjson
import pytest

from streamer.core.config import Limits, ScoringConfig
from streamer.core.engine import DictStore, Engine, Record
from tests.integration.kafka_helpers import Kafka, Output, cloudevent, partition_count, partition_of, topic_config

pytestmark = pytest.mark.integration

PARTITIONS = 2
DAY = 86_400.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pick(name: str, partition: int) -> str:
    """A customer id starting with ``name`` that the default partitioner puts on ``partition``."""
    for n in range(1000):
        candidate = f"{name}-{n}"
        if partition_of(candidate, PARTITIONS) == partition:
            return candidate
    raise AssertionError("no id found")


ALICE, BOB, CAROL = pick("alice", 0), pick("bob", 0), pick("carol", 0)
DAVE = pick("dave", 1)


def order(order_id: str, total: float, tier: str = "basic", **money: float) -> dict:
    return {
        "order_id": order_id,
        "total": total,
        "currency": "USD",
        **money,
        "products": [{"product_id": f"p-{order_id}", "price": total, "quantity": 1, "tier": tier}],
    }


def history() -> list[tuple[str, str | None, bytes, str]]:
    """(topic role, key, value, what to wait for: "score" | "dead-letter" | "nothing")."""
    ce = cloudevent
    return [
        ("orders", ALICE, ce("a1", "Order Completed", "2024-01-10T10:00:00Z", ALICE, order("A-1", 80.0, margin=30.0)), "score"),
        ("orders", BOB, ce("b1", "Order Completed", "2024-01-15T09:00:00Z", BOB, order("B-1", 40.0, margin=10.0)), "score"),
        ("orders", BOB, ce("b2", "Order Completed", "2024-01-15T18:00:00Z", BOB, order("B-2", 20.0, cost=15.0)), "score"),
        ("community-events", CAROL, ce("c1", "Community Joined", "2024-01-20T08:00:00Z", CAROL, {"community_id": "studio"}), "score"),
        ("email-events", CAROL, ce("c2", "Survey Answered", "2024-01-21T08:00:00Z", CAROL, {"survey_id": "s1", "goal": "record an album"}), "score"),
        ("orders", ALICE, ce("a2", "Order Completed", "2024-02-05T10:00:00Z", ALICE, order("A-2", 120.0, "advanced", cost=70.0)), "score"),
        ("email-events", ALICE, ce("a3", "Email Opened", "2024-02-06T10:00:00Z", ALICE, {"email_id": "e1"}), "score"),
        # Redelivery of alice's first order: must change nothing and publish nothing.
        ("orders", ALICE, ce("a1", "Order Completed", "2024-01-10T10:00:00Z", ALICE, order("A-1", 80.0, margin=30.0)), "nothing"),
        ("orders", ALICE, ce("a4", "Order Completed", "2024-03-01T10:00:00Z", ALICE, order("A-3", 60.0, margin=20.0)), "score"),
        ("orders", ALICE, ce("a5", "Order Refunded", "2024-03-05T10:00:00Z", ALICE, {"order_id": "A-2", "total": 60.0, "currency": "USD"}), "score"),
        ("orders", ALICE, b'{"specversion": "1.0", "id": "broken', "dead-letter"),
        ("orders", ALICE, ce("a6", "Email Opened", "2024-03-06T10:00:00Z", ALICE, {"email_id": "e2"}), "dead-letter"),
        ("orders", CAROL, ce("c3", "Order Completed", "2024-06-01T10:00:00Z", CAROL, order("C-1", 100.0, margin=40.0)), "score"),
        ("orders", DAVE, ce("d1", "Order Completed", "2023-01-01T12:00:00Z", DAVE, order("D-1", 50.0, margin=20.0)), "score"),
        ("orders", DAVE, ce("d2", "Order Completed", "2024-06-01T12:00:00Z", DAVE, order("D-2", 70.0, margin=25.0)), "score"),
        # Carol's order moves partition 0's event-time clock past bob's lapse date.
        ("orders", CAROL, ce("c4", "Order Completed", "2025-02-01T10:00:00Z", CAROL, order("C-2", 90.0, margin=30.0)), "score"),
    ]


def comparable(output_doc: dict) -> dict:
    """Drop wall-clock fields (dead-letter records say when they were rejected)."""
    doc = dict(output_doc)
    if doc["type"] == "Event Rejected":
        doc.pop("time")
        doc["data"] = {k: v for k, v in doc["data"].items() if k != "rejected_at"}
    return doc


def by_topic_and_key(items: list[tuple[str, bytes | None, dict]]) -> dict[tuple[str, bytes], list[dict]]:
    grouped: dict[tuple[str, bytes], list[dict]] = defaultdict(list)
    for topic, key, doc in items:
        grouped[(topic, key or b"")].append(comparable(doc))
    return dict(grouped)


def lifecycle_changes(outputs: list[Output], segment_topic: str, customer: str) -> list[tuple[str | None, str | None, str]]:
    return [
        (o.doc["data"]["from"], o.doc["data"]["to"], o.doc["data"]["at"])
        for o in outputs
        if o.topic == segment_topic and o.doc["data"]["customer"] == customer and o.doc["data"]["family"] == "lifecycle"
    ]


async def test_scripted_history_gives_exact_outputs(make_worker, broker: str) -> None:
    from tests.integration.conftest import worker_env

    worker = make_worker(worker_env(partitions=PARTITIONS, VALUE_TIER_MIN_POPULATION="1"))
    topics = worker.topics
    out_topics = [topics["customer-scores"], topics["segment-changes"], topics["campaign-triggers"], topics["dead-letter"]]
    sent: list[Record] = []
    async with Kafka(broker, out_topics) as kafka:
        for role, key, value, expect in history():
            record = await kafka.send(topics[role], role, key.encode() if key else None, value)
            sent.append(record)
            if expect == "score":
                event_id = orjson.loads(value)["id"]
                await kafka.wait_for(lambda o, e=event_id: o.topic == topics["customer-scores"] and o.doc["data"]["cause"].get("event_id") == e)
            elif expect == "dead-letter":
                await kafka.wait_for(lambda o, r=record: o.topic == topics["dead-letter"] and o.doc["data"]["source"]["offset"] == r.offset and o.doc["data"]["source"]["topic"] == r.topic)
        await kafka.settle(quiet_s=2.0)
        outputs = list(kafka.outputs)

    # 1. Exactly what the pure core produces for the same records, byte for byte (bar the
    #    dead-letter wall-clock stamp): the Faust shell adds and loses nothing.
    engine = Engine(ScoringConfig(value_tier_min_population=1), Limits())
    store = DictStore()
    expected: list[tuple[str, bytes | None, dict]] = []
    role_topic = {role: topics[role] for role in ("customer-scores", "segment-changes", "campaign-triggers", "dead-letter")}
    for record in sent:
        for out in engine.process(record, store).outgoing:
            expected.append((role_topic[out.topic_role], out.key, orjson.loads(out.value)))
    actual = [(o.topic, o.key, o.doc) for o in outputs]
    assert len(actual) == len(expected)
    assert by_topic_and_key(actual) == by_topic_and_key(expected)

    # 2. The facts, independently of the engine.
    seg = topics["segment-changes"]
    # At risk once P(dropped out | silence) reaches 0.6 with p = 0.25 after one purchase day:
    # silence = μ·ln(0.6·0.75 / (0.4·0.25)), μ = (span of purchase times + 90-day prior) / 1.
    bob_mu = 90 + 9 / 24  # bob's two orders are 9 hours apart
    bob_at_risk = iso(at("2024-01-15T18:00:00Z") + bob_mu * math.log(4.5) * DAY + 1)
    assert lifecycle_changes(outputs, seg, BOB) == [
        (None, "new", "2024-01-15T09:00:00.000Z"),
        ("new", "at_risk", bob_at_risk),
        ("at_risk", "lapsed", "2025-01-14T18:00:01.000Z"),  # 365 days after the last order, by event time
    ]
    assert lifecycle_changes(outputs, seg, DAVE) == [
        (None, "new", "2023-01-01T12:00:00.000Z"),
        ("new", "at_risk", iso(at("2023-01-01T12:00:00Z") + 90 * math.log(4.5) * DAY + 1)),
        ("at_risk", "lapsed", "2024-01-01T12:00:01.000Z"),
        ("lapsed", "reactivated", "2024-06-01T12:00:00.000Z"),
    ]
    alice_changes = lifecycle_changes(outputs, seg, ALICE)
    assert alice_changes[:3] == [
        (None, "new", "2024-01-10T10:00:00.000Z"),
        ("new", "repeat", "2024-02-05T10:00:00.000Z"),
        ("repeat", "loyal", "2024-03-01T10:00:00.000Z"),
    ]

    scores = [o.doc["data"] for o in outputs if o.topic == topics["customer-scores"]]
    alice_last = [s for s in scores if s["customer"] == ALICE and s["cause"].get("event_id") == "a5"][0]
    assert alice_last["inputs"]["orders"] == 3
    assert alice_last["inputs"]["revenue"] == pytest.approx(80 + 120 - 60 + 60)
    # A 60 refund on a 120 order with 50 margin keeps half of that margin.
    assert alice_last["scores"]["historic_clv"] == pytest.approx(30 + 25 + 20)
    assert alice_last["segments"]["lifecycle"] == "loyal"
    assert alice_last["model_version"] == "formula-1+btyd-prior-cdnow.prior-cdnow+online-0"  # no fit, no label yet
    assert 0 < alice_last["scores"]["p_alive"] <= 1 and alice_last["scores"]["expected_purchases"] > 0
    bob_last = [s for s in scores if s["customer"] == BOB and s["cause"].get("event_id") == "b2"][0]
    assert (bob_last["inputs"]["orders"], bob_last["inputs"]["transactions"]) == (2, 1)  # same-day orders
    assert len([s for s in scores if s["cause"].get("event_id") == "a1"]) == 1  # the redelivery counted once

    dead = [o.doc["data"] for o in outputs if o.topic == topics["dead-letter"]]
    assert [d["reason"] for d in dead] == ["bad_json", "wrong_topic"]
    broken = sent[10]
    assert dead[0]["source"] == {
        "topic": topics["orders"],
        "partition": broken.partition,
        "offset": broken.offset,
        "timestamp_ms": broken.timestamp_ms,
        "key_b64": base64.b64encode(ALICE.encode()).decode(),
    }
    assert base64.b64decode(dead[0]["raw_b64"]) == broken.value

    metrics = worker.metrics()
    assert 'clv_events_invalid_total{reason="bad_json",topic="orders"} 1.0' in metrics
    assert 'clv_events_duplicate_total{topic="orders"} 1.0' in metrics
    assert 'clv_segment_transitions_total{family="lifecycle",from_segment="at_risk",to_segment="lapsed"} 2.0' in metrics
    assert ALICE not in metrics and BOB not in metrics  # no customer id in any label


async def test_topics_are_created_compacted_and_co_partitioned(make_worker, broker: str) -> None:
    from tests.integration.conftest import worker_env

    worker = make_worker(worker_env(partitions=3))
    topics = worker.topics
    assert (await topic_config(broker, topics["customer-scores"]))["cleanup.policy"] == "compact"
    changelog = f"{worker.env['STREAMER_APP_ID']}-customer-state-changelog"
    counts = {name: await partition_count(broker, name) for name in (topics["orders"], topics["email-events"], topics["community-events"], changelog)}
    assert set(counts.values()) == {3}, counts

"""The producer helper (streamer/producer.py): every builder's events are valid and accepted by
the worker's decoder, ids are deterministic, invalid events raise before anything is sent."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from streamer import contracts, producer
from streamer.core.config import Limits
from streamer.core.events import decode
from streamer.errors import ConfigError, InvalidEvent
from streamer.producer import (
    ClvProducer,
    Outgoing,
    build,
    community_event,
    email_event,
    erasure_requested,
    order_completed,
    order_refunded,
    product,
    rfc3339,
    survey_answered,
)

T = "2025-03-14T09:26:53Z"
CUSTOMER = "cust-000123"


def one_of_each() -> list[Outgoing]:
    """One event of every input type, built with the builders producer teams use."""
    line = [product("mic-usb-01", 79.5, name="USB microphone", sku="SKU-1012", category="recording")]
    return [
        order_completed(CUSTOMER, "ORD-1", 74.5, margin=27.9, discount=5.0, products=line, time=T),
        order_completed(CUSTOMER, "ORD-2", 74.5, cost=40.0, currency="EUR", products=line, time=T),
        order_refunded(CUSTOMER, "ORD-1", 20.0, reason="damaged", time=T),
        email_event("Email Delivered", CUSTOMER, email_id="m-1", campaign_id="c-1", campaign_name="Weekly", time=T),
        email_event("Email Opened", CUSTOMER, email_id="m-1", time=T),
        email_event("Email Link Clicked", CUSTOMER, email_id="m-1", link_url="https://shop.example.com/sale", time=T),
        email_event("Email Bounced", CUSTOMER, email_id="m-1", bounce_type="soft", time=T),
        email_event("Unsubscribed", CUSTOMER, list_id="newsletter", time=T),
        survey_answered(CUSTOMER, "onboarding-v1", goal="learn guitar", preferences=["acoustic"], time=T),
        community_event("Community Joined", CUSTOMER, community_id="studio", time=T),
        community_event("Community Posted", CUSTOMER, post_id="p-1", topic="mixing", time=T),
        community_event("Community Replied", CUSTOMER, post_id="p-1", reply_id="r-1", time=T),
        community_event("Answer Accepted", CUSTOMER, post_id="p-1", answer_id="r-1", time=T),
        community_event("Review Posted", CUSTOMER, product_id="mic-usb-01", rating=5, review_id="rev-1", time=T),
        community_event("Referral Made", CUSTOMER, referral_code="ref-1", channel="email", time=T),
        erasure_requested(CUSTOMER, "dsr-1", reason="GDPR art. 17", time=T),
    ]


def test_every_input_type_is_covered_and_valid_against_its_contract() -> None:
    records = one_of_each()
    assert {r.event["type"] for r in records} == set(contracts.INPUT_TYPES)
    limits = Limits(fx_rates={"USD": 1.0, "EUR": 1.08})
    for record in records:
        assert contracts.first_error(record.event) is None
        assert record.role == contracts.INPUT_TYPES[record.event["type"]]
        assert record.key == CUSTOMER.encode() == record.event["subject"].encode()
        assert orjson.loads(record.value) == record.event
        # What the worker itself does with the record: no InvalidEvent.
        event = decode(record.value, record.role, record.key, limits, time.time())
        assert (event.id, event.customer, event.type) == (record.event["id"], CUSTOMER, record.event["type"])


ENVELOPE = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data"}
INPUT_EXAMPLES = [
    path for path in sorted(contracts.SCHEMA_DIR.glob("examples/*.json")) if json.loads(path.read_text())["type"] in contracts.INPUT_TYPES
]


@pytest.mark.parametrize("path", INPUT_EXAMPLES, ids=lambda p: p.name)
def test_builders_reproduce_the_contract_examples(path: Any) -> None:
    example = json.loads(path.read_text())
    extensions = {k: v for k, v in example.items() if k not in ENVELOPE}
    record = build(
        example["type"], example["subject"], example["data"],
        time=example["time"], id=example["id"], source=example["source"], extensions=extensions,
    )
    assert record.event == {k: v for k, v in example.items() if k != "dataschema"}


def test_ids_are_deterministic_unless_given() -> None:
    line = [product("p", 10.0)]
    a = order_completed("c", "O-1", 10.0, margin=3.0, products=line, time=T)
    b = order_completed("c", "O-1", 10.0, margin=3.0, products=line, time=T)
    assert a.event["id"] == b.event["id"] and a.value == b.value
    assert a.event["id"].startswith("order-completed-")
    others = [
        order_completed("c", "O-2", 10.0, margin=3.0, products=line, time=T),
        order_completed("c2", "O-1", 10.0, margin=3.0, products=line, time=T),
        order_completed("c", "O-1", 10.0, margin=3.0, products=line, time="2025-03-14T09:26:54Z"),
        order_refunded("c", "O-1", 10.0, time=T),
    ]
    assert len({a.event["id"], *(o.event["id"] for o in others)}) == 5
    assert order_completed("c", "O-1", 10.0, margin=3.0, products=line, time=T, id="mine-1").event["id"] == "mine-1"
    # The key order of data does not matter; None means "not given".
    assert build("Email Opened", "c", {"email_id": "m", "campaign_id": "x"}, time=T).event["id"] == build(
        "Email Opened", "c", {"campaign_id": "x", "email_id": "m", "campaign_name": None}, time=T
    ).event["id"]


def test_times_are_rfc3339_utc() -> None:
    berlin = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2025, 3, 14, 10, 26, 53, tzinfo=berlin)) == "2025-03-14T09:26:53Z"
    assert rfc3339(datetime(2025, 3, 14, 9, 26, 53, 120000)) == "2025-03-14T09:26:53.120000Z"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    with pytest.raises(InvalidEvent):
        rfc3339(True)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="schema_violation: time"):
        email_event("Email Opened", "c", email_id="m", time="2025-03-14 09:26:53")


@pytest.mark.parametrize(
    "make, reason, detail",
    [
        (lambda: order_completed("c", "O", 10.0, products=[product("p", 10.0)], time=T), "schema_violation", "'margin', 'cost'"),
        (lambda: order_completed("c", "O", 10.0, margin=1, products=[], time=T), "schema_violation", "data.products"),
        (
            lambda: order_completed("c", "O", 10.0, margin=1, currency="usd", products=[product("p", 1)], time=T),
            "schema_violation",
            "data.currency",
        ),
        (lambda: order_completed("c", "O", float("nan"), margin=1, products=[product("p", 1)], time=T), "schema_violation", "data.total"),
        (lambda: order_refunded("c", "O", 0, time=T), "schema_violation", "data.total"),
        (lambda: order_refunded("", "O", 5, time=T), "missing_customer_id", "subject"),
        (lambda: survey_answered("c", "s-1", time=T), "schema_violation", "goal"),
        (lambda: email_event("Email Opened", "c", email_id="m", colour="red", time=T), "schema_violation", "colour"),
        (lambda: email_event("Review Posted", "c", product_id="p", rating=5, time=T), "wrong_topic", "community-events"),
        (lambda: email_event("Survey Answered", "c", survey_id="s", goal="g", time=T), "unknown_type", "survey_answered"),
        (lambda: community_event("Email Opened", "c", email_id="m", time=T), "wrong_topic", "email-events"),
        (lambda: build("Order Shipped", "c", {}, time=T), "unknown_type", "Order Shipped"),
        (lambda: build("Customer Scored", "c", {}, time=T), "unknown_type", "Customer Scored"),
        (lambda: build("Community Joined", 42, {}, time=T), "missing_customer_id", "string"),
        (lambda: build("Community Joined", "c", {"community_id": object()}, time=T), "schema_violation", "JSON"),
        (lambda: community_event("Community Posted", "c", post_id="p", topic="x" * 300, time=T), "schema_violation", "data.topic"),
        (lambda: build("Community Joined", "c", {"community_id": "x" * 100}, time=T, max_bytes=200), "oversized", "200"),
    ],
)
def test_invalid_events_raise_the_worker_reason(make: Any, reason: str, detail: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        make()
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_outgoing_topic_names_come_from_the_deployment() -> None:
    record = community_event("Community Joined", "c", time=T)
    assert record.topic() == "community-events"
    assert record.topic({"community-events": "prod-community", "orders": "prod-orders"}) == "prod-community"


class FakeKafka:
    """Stands in for AIOKafkaProducer: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> Any:
        import asyncio

        self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result((topic, len(self.sent) - 1))
        return future


async def test_producer_methods_build_validate_and_send_to_the_right_topic() -> None:
    clv = ClvProducer("kafka:9092", topics={"orders": "o", "email-events": "e", "community-events": "c"}, source="/shop")
    fake = FakeKafka()
    clv._producer = fake
    assert await clv.order_completed("cust-1", "O-1", 5.0, margin=1.0, products=[product("p", 5.0)], time=T) == ("o", 0)
    await clv.email_event("Email Opened", "cust-1", email_id="m", time=T, source="/mailer")
    await clv.community_event("Community Joined", "cust-2", time=T)
    await clv.survey_answered("cust-2", "s", goal="g", time=T)
    await clv.order_refunded("cust-1", "O-1", 5.0, time=T)
    with pytest.raises(InvalidEvent):
        await clv.order_refunded("cust-1", "O-1", -5.0, time=T)
    assert [(topic, key) for topic, key, _ in fake.sent] == [
        ("o", b"cust-1"), ("e", b"cust-1"), ("c", b"cust-2"), ("e", b"cust-2"), ("o", b"cust-1")
    ]
    sources = [orjson.loads(value)["source"] for _, _, value in fake.sent]
    assert sources == ["/shop", "/mailer", "/shop", "/shop", "/shop"]


async def test_producer_needs_a_bootstrap_and_a_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP"):
        ClvProducer()
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("TOPIC_ORDERS", "shop-orders")
    clv = ClvProducer()
    assert clv.bootstrap == "kafka:9092" and clv.topics["orders"] == "shop-orders"
    with pytest.raises(RuntimeError, match="not started"):
        await clv.send(community_event("Community Joined", "c", time=T))


def test_module_exports_exist() -> None:
    assert all(hasattr(producer, name) for name in producer.__all__)


def test_what_the_worker_would_dead_letter_is_refused_when_built():
    """The worker's own decoding runs on every built event: a customer id of 100 characters but
    300 bytes, or a margin above the total, passed the schema and were dead-lettered there."""
    lines = [producer.product("p", 5.0)]
    when = "2025-03-14T09:26:53Z"
    with pytest.raises(producer.InvalidEvent, match="schema_violation: subject: a customer id has at most 128 bytes in UTF-8, this one 300"):
        producer.order_completed("雪" * 100, "O-1", 5.0, margin=1.0, products=lines, time=when)
    with pytest.raises(producer.InvalidEvent, match="absurd_value: margin exceeds the order total"):
        producer.order_completed("c-1", "O-1", 5.0, margin=9.0, products=lines, time=when)
    # The currency only against the worker's rates, when given.
    eur = dict(order_id="O-1", total=5.0, currency="EUR", margin=1.0, products=lines)
    assert producer.build("Order Completed", "c-1", eur, time=when).role == "orders"
    with pytest.raises(producer.InvalidEvent, match="unsupported_currency"):
        producer.build("Order Completed", "c-1", eur, time=when, limits=Limits())
    assert producer.build("Order Completed", "c-1", eur, time=when, limits=Limits(fx_rates={"USD": 1.0, "EUR": 1.1})).role == "orders"

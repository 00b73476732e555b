"""Producer helper for producer teams: contract-valid CloudEvents, the right topic and key.

Two layers, both running every event through the worker's own decoding (its contract in
``schemas/``, then the worker's limits: :func:`streamer.core.events.decode`) before it can
leave the process, so what the worker would dead-letter is refused here with the same reason:

* **Pure functions, no Kafka.** :func:`order_completed`, :func:`order_refunded`,
  :func:`email_event`, :func:`survey_answered`, :func:`community_event` and the generic
  :func:`build` return an :class:`Outgoing`: the topic role the event belongs on, the record
  key (the customer id, UTF-8, equal to ``subject``), the value (compact JSON bytes) and the
  event itself. Use them with any Kafka client, in tests, or to write files.
* **ClvProducer**, an aiokafka producer with one method per builder that sends to the right
  topic with the right key and waits for the broker's acknowledgement.

An invalid event raises :class:`~streamer.errors.InvalidEvent` whose ``reason`` is the code
the worker would dead-letter it under (``schema_violation``, ``unknown_type``, ``wrong_topic``,
``oversized``) and whose ``detail`` names the JSON path, the same text the worker would put in
the dead-letter record.

Event ids: pass ``id=`` to use your own (unique per ``source``); without it the id is a hash
of (type, customer, time, data), so building the same event twice gives the same id and the
worker drops the second copy: retries are safe. Two *different* events never share an id.

>>> record = order_completed(
...     "cust-000123", "ORD-2025-031400123", 74.50, margin=27.90, discount=5.00,
...     products=[product("mic-usb-01", 79.50, name="USB microphone")],
...     time="2025-03-14T09:26:53Z", source="/shop/checkout")
>>> record.role, record.key, record.topic()
('orders', b'cust-000123', 'orders')
>>> record.event["id"]
'order-completed-b44da615d25ae348e0afad73fe011391'
>>> record.topic({"orders": "shop-orders"})  # the TOPIC_ORDERS of your deployment
'shop-orders'
>>> order_completed("cust-000123", "ORD-1", -5, margin=1, products=[product("p", 5)], time="2025-03-14T09:26:53Z")
Traceback (most recent call last):
...
streamer.errors.InvalidEvent: schema_violation: data.total: -5 is less than the minimum of 0

Sending (``bootstrap`` defaults to ``KAFKA_BOOTSTRAP``, topic names to ``TOPIC_ORDERS`` /
``TOPIC_EMAIL`` / ``TOPIC_COMMUNITY``)::

    async with ClvProducer("kafka:9092", source="/shop/checkout") as producer:
        await producer.order_completed("cust-000123", "ORD-1", 74.5, margin=27.9,
                                       products=[product("mic-usb-01", 79.5)], time=datetime.now(timezone.utc))
        await producer.email_event("Email Opened", "cust-000123", email_id="mail-42", time="2025-03-15T08:00:00Z")
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

import time as wall_clock

from streamer import contracts
from streamer.core.config import Limits
from streamer.core.events import decode
from streamer.errors import ConfigError, InvalidEvent

__all__ = [
    "DEFAULT_SOURCE",
    "MAX_EVENT_BYTES",
    "Outgoing",
    "ClvProducer",
    "build",
    "community_event",
    "email_event",
    "event_id",
    "order_completed",
    "order_refunded",
    "product",
    "rfc3339",
    "survey_answered",
    "topic_role",
]

DEFAULT_SOURCE = "/clv-producer"
"""``source`` of events whose builder is not given one (name your producer instead)."""

MAX_EVENT_BYTES = 65_536
"""The worker's default ``MAX_EVENT_BYTES``: larger events would be dead-lettered as ``oversized``."""


@dataclass(frozen=True)
class Outgoing:
    """One validated event, ready for Kafka: produce ``value`` to ``topic()`` with ``key``."""

    role: str  # topic role: "orders", "email-events" or "community-events"
    key: bytes  # the customer id, UTF-8 (the event's subject)
    value: bytes  # compact JSON
    event: dict[str, Any]

    def topic(self, topics: Mapping[str, str] | None = None) -> str:
        """The topic name: ``topics[role]`` (e.g. ``Settings.topics``), else the default name (= role)."""
        return topics[self.role] if topics else self.role


def topic_role(type_name: str) -> str:
    """The topic role an input event type belongs on.

    >>> topic_role("Survey Answered")
    'email-events'
    >>> topic_role("Order Shipped")
    Traceback (most recent call last):
    ...
    streamer.errors.InvalidEvent: unknown_type: 'Order Shipped' is not an input event type
    """
    role = contracts.INPUT_TYPES.get(type_name)
    if role is None:
        raise InvalidEvent("unknown_type", f"{type_name!r} is not an input event type")
    return role


def rfc3339(when: datetime | str | float) -> str:
    """An event time as the contract wants it (RFC 3339, UTC ``Z``).

    ``datetime`` (naive means UTC) and epoch seconds are converted; strings pass unchanged (the
    contract then checks them).

    >>> rfc3339(datetime(2025, 3, 14, 9, 26, 53))
    '2025-03-14T09:26:53Z'
    >>> rfc3339(1741944413.25)
    '2025-03-14T09:26:53.250000Z'
    """
    if isinstance(when, str):
        return when
    if isinstance(when, datetime):
        moment = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    elif isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
        moment = datetime.fromtimestamp(when, timezone.utc)
    else:
        raise InvalidEvent("schema_violation", f"time: {when!r} is not a datetime, epoch seconds or RFC 3339 string")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise InvalidEvent("schema_violation", f"not JSON-serialisable: {exc}") from None


def event_id(type_name: str, customer: str, time: str, data: Mapping[str, Any]) -> str:
    """Deterministic event id: the type's slug and a hash of (type, customer, time, data).

    >>> event_id("Email Opened", "cust-1", "2025-03-15T08:00:00Z", {"email_id": "mail-42"})
    'email-opened-f283710601f838ba54dba89ac0dca373'
    """
    canonical = orjson.dumps([type_name, customer, time, data], option=orjson.OPT_SORT_KEYS)
    return f"{contracts.TYPE_SLUGS[type_name]}-{hashlib.sha256(canonical).hexdigest()[:32]}"


def build(
    type_name: str,
    customer: str,
    data: Mapping[str, Any],
    *,
    time: datetime | str | float,
    id: str | None = None,
    source: str = DEFAULT_SOURCE,
    extensions: Mapping[str, str | bool | int] | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    limits: Limits | None = None,
) -> Outgoing:
    """Any input event: envelope around ``data``, validated; raises :class:`InvalidEvent`.

    ``data`` keys whose value is None are left out (optional fields not given);
    ``extensions``: CloudEvents extension attributes, e.g. ``{"traceparent": "00-..."}``.
    The event then goes through the worker's own decoding (:func:`streamer.core.events.decode`):
    an id of more than 128 bytes, a margin above the total, a time out of range are refused
    here as there. Its currency is checked only against ``limits`` (the worker's
    ``REPORTING_CURRENCY`` and ``FX_RATES``) when they are given.

    >>> build("Review Posted", "cust-1", {"product_id": "mic-usb-01", "rating": 6}, time="2025-03-15T08:00:00Z")
    Traceback (most recent call last):
    ...
    streamer.errors.InvalidEvent: schema_violation: data.rating: 6 is greater than the maximum of 5
    """
    role = topic_role(type_name)
    if not isinstance(customer, str):
        raise InvalidEvent("missing_customer_id", f"customer id must be a string, got {type(customer).__name__}")
    payload = {name: value for name, value in data.items() if value is not None}
    stamp = rfc3339(time)
    _json(payload)  # a clear error for values JSON cannot hold, before hashing them
    event = {
        "specversion": "1.0",
        "id": event_id(type_name, customer, stamp, payload) if id is None else id,
        "source": source,
        "type": type_name,
        "time": stamp,
        "subject": customer,
        "datacontenttype": "application/json",
        "data": payload,
        **(extensions or {}),
    }
    value = _json(event)
    if len(value) > max_bytes:
        raise InvalidEvent("oversized", f"{len(value)} bytes exceeds the limit of {max_bytes}")
    if limits is None:  # any currency: a rate of 1 for this one
        currency = payload.get("currency")
        limits = Limits(max_event_bytes=max_bytes, fx_rates={currency: 1.0} if isinstance(currency, str) else {})
    decode(value, role, customer.encode(), limits, wall_clock.time())
    return Outgoing(role, customer.encode(), value, event)


def product(product_id: str, price: float, quantity: int = 1, tier: str = "basic", **extra: Any) -> dict[str, Any]:
    """One order line; ``extra``: ``sku``, ``name``, ``category``.

    >>> product("mic-usb-01", 79.5, name="USB microphone")
    {'product_id': 'mic-usb-01', 'price': 79.5, 'quantity': 1, 'tier': 'basic', 'name': 'USB microphone'}
    """
    return {"product_id": product_id, "price": price, "quantity": quantity, "tier": tier, **extra}


def order_completed(
    customer: str,
    order_id: str,
    total: float,
    *,
    products: list[dict[str, Any]],
    time: datetime | str | float,
    margin: float | None = None,
    cost: float | None = None,
    currency: str = "USD",
    discount: float | None = None,
    id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> Outgoing:
    """``Order Completed`` (topic orders): ``total`` paid after discount, ``margin`` and/or ``cost``
    (at least one: CLV here is margin), ``products`` built with :func:`product`."""
    data = {
        "order_id": order_id, "total": total, "currency": currency, "discount": discount,
        "margin": margin, "cost": cost, "products": products,
    }
    return build("Order Completed", customer, data, time=time, id=id, source=source)


def order_refunded(
    customer: str,
    order_id: str,
    total: float,
    *,
    time: datetime | str | float,
    currency: str = "USD",
    reason: str | None = None,
    id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> Outgoing:
    """``Order Refunded`` (topic orders): ``total`` is the amount refunded (> 0) of ``order_id``."""
    data = {"order_id": order_id, "total": total, "currency": currency, "reason": reason}
    return build("Order Refunded", customer, data, time=time, id=id, source=source)


def _keyword_builder(role: str, doc: str, dedicated: Mapping[str, str] | None = None) -> Callable[..., Outgoing]:
    """A builder for the event types of one topic whose data fields are given as keywords.

    ``dedicated``: types that have their own builder (type name -> its function name).
    """

    def builder(
        type_name: str,
        customer: str,
        *,
        time: datetime | str | float,
        id: str | None = None,
        source: str = DEFAULT_SOURCE,
        **data: Any,
    ) -> Outgoing:
        if dedicated and type_name in dedicated:
            raise InvalidEvent("unknown_type", f"use {dedicated[type_name]}() for {type_name!r}")
        if topic_role(type_name) != role:
            raise InvalidEvent("wrong_topic", f"{type_name!r} belongs on the {topic_role(type_name)!r} topic, not {role!r}")
        return build(type_name, customer, data, time=time, id=id, source=source)

    builder.__doc__ = doc
    return builder


email_event = _keyword_builder(
    "email-events",
    """``Email Delivered`` / ``Email Opened`` / ``Email Link Clicked`` / ``Email Bounced`` /
    ``Unsubscribed`` (topic email-events); ``data`` as keywords (``email_id``, ``campaign_id``,
    ``campaign_name``, ``link_url``, ``bounce_type``, ``list_id``: see schemas/README.md).

    >>> email_event("Email Bounced", "cust-1", email_id="mail-42", bounce_type="hard", time="2025-03-15T08:00:00Z").role
    'email-events'
    """,
    dedicated={"Survey Answered": "survey_answered"},
)
email_event.__name__ = email_event.__qualname__ = "email_event"


def survey_answered(
    customer: str,
    survey_id: str,
    *,
    time: datetime | str | float,
    goal: str | None = None,
    problem: str | None = None,
    preferences: list[str] | None = None,
    id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> Outgoing:
    """``Survey Answered`` (topic email-events): zero-party data, at least one of goal / problem / preferences."""
    data = {"survey_id": survey_id, "goal": goal, "problem": problem, "preferences": preferences}
    return build("Survey Answered", customer, data, time=time, id=id, source=source)


community_event = _keyword_builder(
    "community-events",
    """``Community Joined`` / ``Community Posted`` / ``Community Replied`` / ``Answer Accepted`` /
    ``Review Posted`` / ``Referral Made`` (topic community-events); ``data`` as keywords.

    >>> community_event("Review Posted", "cust-1", product_id="mic-usb-01", rating=5, time="2025-03-20T18:00:00Z").event["data"]
    {'product_id': 'mic-usb-01', 'rating': 5}
    """,
)
community_event.__name__ = community_event.__qualname__ = "community_event"


def erasure_requested(
    customer: str,
    request_id: str,
    *,
    time: datetime | str | float,
    reason: str | None = None,
    id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> Outgoing:
    """``Erasure Requested`` (topic erasure-requests): remove the customer from the service;
    the audit record carries ``request_id`` and a hash of the customer id.

    >>> erasure_requested("cust-1", "dsr-7", time="2025-04-02T09:00:00Z").role
    'erasure-requests'
    """
    return build("Erasure Requested", customer, {"request_id": request_id, "reason": reason}, time=time, id=id, source=source)


def _sends(builder: Callable[..., Outgoing]) -> Callable[..., Awaitable[Any]]:
    """A ClvProducer method: build with ``builder`` (``source`` defaults to the producer's), send, wait."""

    async def method(self: "ClvProducer", *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("source", self.source)
        return await self.send(builder(*args, **kwargs))

    method.__name__ = builder.__name__
    method.__qualname__ = f"ClvProducer.{builder.__name__}"
    method.__doc__ = (
        f"Build with :func:`{builder.__name__}` (same arguments) and send it; returns the broker's "
        "``RecordMetadata``. Raises :class:`InvalidEvent` before sending anything invalid."
    )
    return method


class ClvProducer:
    """An aiokafka producer for the clv-streamer input topics.

    ``bootstrap`` defaults to ``KAFKA_BOOTSTRAP``; ``topics`` (role -> name) to the
    ``TOPIC_ORDERS`` / ``TOPIC_EMAIL`` / ``TOPIC_COMMUNITY`` settings; ``source`` is the
    default ``source`` of the events built by its methods; other keywords go to
    ``AIOKafkaProducer`` (e.g. ``acks="all"``, ``linger_ms``). The key is always the customer
    id and the partitioner aiokafka's default (murmur2), as the worker requires.

    >>> import asyncio
    >>> from streamer.broker import EmbeddedBroker
    >>> async def publish(bootstrap):
    ...     async with ClvProducer(bootstrap, topics={"orders": "doctest-orders"}, source="/shop/checkout") as producer:
    ...         sent = await producer.order_completed(
    ...             "cust-000123", "ORD-1", 74.5, margin=27.9, products=[product("mic-usb-01", 79.5)],
    ...             time="2025-03-14T09:26:53Z")
    ...     return sent.topic, sent.offset
    >>> with EmbeddedBroker() as broker:
    ...     asyncio.run(publish(broker.bootstrap))
    ('doctest-orders', 0)
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topics: Mapping[str, str] | None = None,
        source: str = DEFAULT_SOURCE,
        **options: Any,
    ) -> None:
        if bootstrap is None or topics is None:
            from streamer import settings

            loaded = settings.load()
            bootstrap = bootstrap or loaded.kafka_bootstrap
            topics = topics or loaded.topics
        if not bootstrap:
            raise ConfigError("KAFKA_BOOTSTRAP is not set: pass ClvProducer(bootstrap=...) or export KAFKA_BOOTSTRAP=host:port")
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.source = source
        self._options = options
        self._producer: Any = None

    async def start(self) -> "ClvProducer":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return self

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> "ClvProducer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def enqueue(self, record: Outgoing) -> "asyncio.Future[Any]":
        """Hand ``record`` to the producer's batches; the returned future resolves to its
        ``RecordMetadata`` once the broker acknowledged it (for bulk sends: gather them).
        Records of one partition are delivered in the order they are enqueued."""
        if self._producer is None:
            raise RuntimeError("ClvProducer is not started: use `async with ClvProducer(...) as producer:`")
        return await self._producer.send(record.topic(self.topics), value=record.value, key=record.key)

    async def send(self, record: Outgoing) -> Any:
        """Send one built record and wait for the acknowledgement; returns its ``RecordMetadata``."""
        return await (await self.enqueue(record))

    async def flush(self) -> None:
        """Wait until every enqueued record is sent."""
        if self._producer is not None:
            await self._producer.flush()

    order_completed = _sends(order_completed)
    order_refunded = _sends(order_refunded)
    email_event = _sends(email_event)
    survey_answered = _sends(survey_answered)
    community_event = _sends(community_event)
    erasure_requested = _sends(erasure_requested)

"""Decode and validate one raw Kafka record into an :class:`Event`.

Everything that can be wrong with an input on its own is detected here and raised as
:class:`~streamer.errors.InvalidEvent` with a reason code, so the shell only has to route it to
the dead-letter topic (what only the customer's state can refuse, such as one refund too many,
is raised the same way by ``streamer.core.state.apply``). Order of checks: cheapest and most fundamental first, so the reason
names the first thing a producer must fix.
"""

from __future__ import annotations

import sys
import unicodedata

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from streamer import contracts
from streamer.core.config import Limits
from streamer.errors import InvalidEvent


@dataclass(frozen=True, slots=True)
class Event:
    """A validated input event, in the reporting currency."""

    id: str
    type: str
    time: float  # event time, epoch seconds
    customer: str
    data: dict[str, Any]
    source: str


def parse_time(value: str) -> float:
    """RFC 3339 string -> epoch seconds. Raises ValueError on a malformed or naive time."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("time has no UTC offset")
    return parsed.timestamp()


#: Longest customer id (the record key and ``subject``), in bytes of UTF-8.
MAX_CUSTOMER_ID_BYTES = 128


def decode(raw: bytes | None, topic_role: str, key: bytes | None, limits: Limits, wall_now: float) -> Event:
    """Turn one record's bytes into an :class:`Event`, or raise :class:`InvalidEvent`.

    ``topic_role`` is the logical input topic ("orders", "email-events", "community-events",
    "erasure-requests"),
    ``wall_now`` the wall-clock time used to reject events from the far future.
    """
    if raw is None:
        raise InvalidEvent("bad_json", "record has no value (null payload)")
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes exceeds the limit of {limits.max_event_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_json", _json_error(raw, exc)) from None
    if not isinstance(doc, dict):
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(doc).__name__}")

    subject = doc.get("subject")
    if not isinstance(subject, str):
        got = ("null" if "subject" in doc else "missing") if subject is None else f"a JSON {_JSON_KIND.get(type(subject), type(subject).__name__)}"
        raise InvalidEvent("missing_customer_id", f"CloudEvents 'subject' (the customer id) must be a non-empty string; it is {got}")
    if not shows_something(subject):
        raise InvalidEvent("missing_customer_id", "CloudEvents 'subject' (the customer id) is empty or has no visible character")
    type_name = doc.get("type")
    if not isinstance(type_name, str) or (expected_role := contracts.INPUT_TYPES.get(type_name)) is None:
        raise InvalidEvent("unknown_type", f"unknown event type {str(type_name)[:80]!r}")
    if expected_role != topic_role:
        raise InvalidEvent("wrong_topic", f"{type_name!r} belongs on the {expected_role!r} topic, not {topic_role!r}")

    error = contracts.first_error(doc, finite=True)  # parsed by orjson: no NaN or Infinity
    if error is not None:
        raise InvalidEvent("schema_violation", error)

    customer_id = subject.encode()
    if len(customer_id) > MAX_CUSTOMER_ID_BYTES:
        # The schema counts characters (128); ids are keys, labels of nothing, and looked up
        # by the query API in bytes: 128 emoji would be 512 bytes no query could name.
        raise InvalidEvent("schema_violation", f"subject: a customer id has at most {MAX_CUSTOMER_ID_BYTES} bytes in UTF-8, this one {len(customer_id)}")
    if key != customer_id:
        # The key decides the partition, and the partition decides which state a customer's
        # events meet: a mismatch (or no key, which producers spread over partitions) would
        # split one customer's state across partitions.
        if key is None:
            raise InvalidEvent("key_mismatch", "record has no key; the key must be the event's subject (customer id)")
        raise InvalidEvent("key_mismatch", "record key differs from the event's subject (customer id)")

    try:
        time = parse_time(doc["time"])
    except ValueError as exc:
        raise InvalidEvent("schema_violation", f"time: {exc}") from None
    if time < limits.min_event_time or time > wall_now + limits.max_future_skew_s:
        raise InvalidEvent("absurd_value", f"event time {doc['time']} is outside the accepted range")

    data = doc["data"]
    if type_name in ("Order Completed", "Order Refunded"):
        data = _normalise_money(type_name, data, limits)
    # Interned: the id is a key in several per-partition structures (due-queue, ranking,
    # population rows); one shared string instead of a copy per decode in each.
    return Event(id=doc["id"], type=type_name, time=time, customer=sys.intern(subject), data=data, source=doc["source"])


#: Python types orjson parses JSON into -> the JSON name a producer knows them by.
_JSON_KIND = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}
#: Unicode categories of characters that show nothing: separators (spaces), controls, format
#: characters (zero-width space, direction marks, BOM), private-use code points and lone
#: surrogates. Unassigned code points (Cn) are not among them: to this Python's Unicode
#: database a newer emoji is unassigned, and it shows.
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cs"})
#: Letters and symbols that show nothing all the same: Hangul fillers, the blank Braille
#: pattern.
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def shows_something(text: str) -> bool:
    """Whether ``text`` can be a customer id someone reads: not blank, and (beyond ASCII,
    where any non-space shows) with a visible character."""
    return bool(text.strip()) and (text.isascii() or visible(text))


def visible(text: str) -> bool:
    """Whether ``text`` has a character that shows: an id of only a zero-width space or a
    right-to-left mark would look empty wherever a marketer reads it."""
    return any(char not in _BLANK_CHARACTERS and unicodedata.category(char) not in _INVISIBLE for char in text)


def _json_error(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """orjson's message, except for bytes that are not UTF-8, where it speaks of surrogates."""
    try:
        raw.decode()
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8: byte 0x{raw[bad.start]:02x} at position {bad.start}"
    return f"not valid JSON: {exc}"


def _normalise_money(type_name: str, data: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Convert amounts to the reporting currency and derive ``margin`` from ``cost`` if needed."""
    rate = limits.fx_rates.get(data["currency"])
    if rate is None:
        raise InvalidEvent(
            "unsupported_currency",
            f"currency {data['currency']} has no configured rate to {limits.reporting_currency} (FX_RATES)",
        )
    total = float(data["total"]) * rate
    if type_name == "Order Refunded":
        return {"order_id": data["order_id"], "total": total}
    margin = float(data["margin"]) * rate if "margin" in data else total - float(data["cost"]) * rate
    if margin > total + 1e-6:
        raise InvalidEvent("absurd_value", "margin exceeds the order total")
    if margin < -10 * max(total, 1.0):
        raise InvalidEvent("absurd_value", "margin is a loss of more than ten times the order total")
    tiers = {p["tier"] for p in data["products"]}
    return {
        "order_id": data["order_id"],
        "total": total,
        "margin": margin,
        "discount": float(data.get("discount", 0.0)) * rate,
        "basic": "basic" in tiers,
        "advanced": "advanced" in tiers,
    }

"""Shared builders for the pure-core unit tests (not a test module)."""

from __future__ import annotations

import math
import sys
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamer.core.config import DAY, ScoringConfig  # noqa: E402
from streamer.core.events import Event  # noqa: E402
from streamer.core.features import Features, compute  # noqa: E402
from streamer.core.scoring import FormulaScorer, score  # noqa: E402
from streamer.core.state import CustomerState, apply  # noqa: E402

#: 2025-01-01T00:00:00Z
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
assert T0 == 1_735_689_600.0


def iso(t: float) -> str:
    """Epoch seconds -> RFC 3339 with microseconds and Z (what a producer would send)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# -- decoded events (what events.decode returns), for state / features tests -----------------


def order(oid: str, t: float, total: float = 100.0, margin: float = 30.0, discount: float = 0.0,
          basic: bool = True, advanced: bool = False, customer: str = "c1", eid: str | None = None) -> Event:
    return Event(
        id=eid or f"oc-{oid}", type="Order Completed", time=t, customer=customer,
        data={"order_id": oid, "total": total, "margin": margin, "discount": discount, "basic": basic, "advanced": advanced},
        source="/test",
    )


def refund(eid: str, oid: str, t: float, total: float, customer: str = "c1") -> Event:
    return Event(id=eid, type="Order Refunded", time=t, customer=customer, data={"order_id": oid, "total": total}, source="/test")


def other(eid: str, type_name: str, t: float, data: dict[str, Any] | None = None, customer: str = "c1") -> Event:
    return Event(id=eid, type=type_name, time=t, customer=customer, data=data or {}, source="/test")


def fold(events: list[Event], config: ScoringConfig | None = None, customer: str = "c1") -> CustomerState:
    config = config or ScoringConfig()
    state = CustomerState(customer=customer)
    for event in events:
        state = apply(state, event, config)
    return state


def features_at(events: list[Event], now: float, config: ScoringConfig | None = None) -> Features:
    config = config or ScoringConfig()
    return compute(fold(events, config), now, config)


def scored(events: list[Event], now: float, config: ScoringConfig | None = None) -> tuple[Features, dict[str, float]]:
    config = config or ScoringConfig()
    f = features_at(events, now, config)
    return f, score(f, [FormulaScorer(config)])


def assert_features_close(a: Features, b: Features, skip: tuple[str, ...] = ()) -> None:
    """Field by field: exact for ints / bools / None, 1e-9 relative for floats (sum order)."""
    for fld in fields(Features):
        if fld.name in skip:
            continue
        x, y = getattr(a, fld.name), getattr(b, fld.name)
        if isinstance(x, float) and isinstance(y, float):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (fld.name, x, y)
        else:
            assert x == y and type(x) is type(y), (fld.name, x, y)


# -- raw CloudEvents (what producers send), for decode / engine tests ------------------------


def envelope(type_name: str, subject: str, t: float | str, data: dict[str, Any], eid: str, **extra: Any) -> dict[str, Any]:
    doc = {
        "specversion": "1.0",
        "id": eid,
        "source": "/test/shop",
        "type": type_name,
        "time": t if isinstance(t, str) else iso(t),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }
    doc.update(extra)
    return doc


def order_doc(subject: str, t: float | str, order_id: str, total: float = 100.0, margin: float | None = 30.0,
              cost: float | None = None, currency: str = "USD", discount: float | None = None,
              tiers: tuple[str, ...] = ("basic",), eid: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"order_id": order_id, "total": total, "currency": currency}
    if discount is not None:
        data["discount"] = discount
    if margin is not None:
        data["margin"] = margin
    if cost is not None:
        data["cost"] = cost
    data["products"] = [
        {"product_id": f"p-{i}", "price": total / len(tiers), "quantity": 1, "tier": tier} for i, tier in enumerate(tiers)
    ]
    return envelope("Order Completed", subject, t, data, eid or f"evt-{order_id}")


def refund_doc(subject: str, t: float | str, order_id: str, total: float, eid: str, currency: str = "USD") -> dict[str, Any]:
    return envelope("Order Refunded", subject, t, {"order_id": order_id, "total": total, "currency": currency}, eid)


def email_doc(subject: str, t: float | str, eid: str, type_name: str = "Email Opened") -> dict[str, Any]:
    return envelope(type_name, subject, t, {"email_id": f"mail-{eid}", "campaign_id": "weekly-1"}, eid)


def raw(doc: Any) -> bytes:
    return orjson.dumps(doc)


__all__ = [
    "DAY", "T0", "iso", "parse", "order", "refund", "other", "fold", "features_at", "scored",
    "assert_features_close", "envelope", "order_doc", "refund_doc", "email_doc", "raw",
]

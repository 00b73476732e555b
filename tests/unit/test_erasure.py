"""Erasure in the core: the customer leaves the store, the due-queue, the rankings and the
counts; a tombstone and an audit record (hash only) come out; unknown customers are audited."""

from __future__ import annotations

import hashlib

import orjson
from corekit import DAY, T0, envelope, order_doc, raw

from streamer import contracts
from streamer.core import views
from streamer.core.engine import AUDIT, SCORES, DictStore, Engine, Record


def run(engine: Engine, store: DictStore, role: str, doc: dict, offset: int):
    return engine.process(Record(role, role, 0, offset, doc["subject"].encode(), raw(doc)), store)


def test_erasure_removes_everything_about_the_customer():
    engine, store = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    run(engine, store, "orders", order_doc("a", T0, "A1"), 0)
    run(engine, store, "orders", order_doc("b", T0 + DAY, "B1"), 1)
    before = views.partition_summary(engine)
    assert engine.partitions[0].timers.due_of("a") is not None and before["customers"] == 2

    result = run(engine, store, "erasure-requests", envelope("Erasure Requested", "a", T0 + 2 * DAY, {"request_id": "dsr-1"}, "er-1"), 0)
    assert result.erased is True and result.rejected is None
    assert store.get("a") is None and store.get("b") is not None
    clock = engine.partitions[0]
    assert "a" not in clock.columns and clock.timers.due_of("a") is None and clock.timers.due_of("b") is not None
    assert store.get("b").value is not None and len(clock.ranks) == 1
    after = views.partition_summary(engine)
    assert after["customers"] == 1 and after["populations"]["lifecycle"] == {"new": 1}
    assert sum(after["churn_risk_histogram"]["counts"]) == 1
    (tomb, audit) = result.outgoing
    assert (tomb.topic_role, tomb.key, tomb.value) == (SCORES, b"a", None)
    doc = orjson.loads(audit.value)
    assert audit.topic_role == AUDIT and audit.key == b"dsr-1" and contracts.first_error(doc) is None
    assert doc["data"]["customer_sha256"] == hashlib.sha256(b"a").hexdigest() and b'"a"' not in audit.value

    # The clock moving past a's old due moments fires nothing for a.
    later = run(engine, store, "orders", order_doc("b", T0 + 400 * DAY, "B2"), 2)
    assert all(o.key != b"a" for o in later.outgoing)


def test_erasing_an_unknown_customer_is_audited_as_not_found():
    engine, store = Engine(), DictStore()
    result = run(engine, store, "erasure-requests", envelope("Erasure Requested", "nobody", T0, {"request_id": "dsr-2"}, "er-2"), 0)
    assert result.erased is False
    assert orjson.loads(result.outgoing[1].value)["data"]["found"] is False


def test_an_erasure_on_another_topic_is_rejected():
    engine, store = Engine(), DictStore()
    result = run(engine, store, "orders", envelope("Erasure Requested", "a", T0, {"request_id": "dsr-3"}, "er-3"), 0)
    assert result.rejected == "wrong_topic"

"""Erasure in the core: the customer leaves the store, the due-queue, the rankings and the
counts; a tombstone and an audit record (hash only) come out; unknown customers are audited;
events dated before the erasure and read after it do not bring the customer back."""

from __future__ import annotations

import hashlib

import orjson
from corekit import DAY, T0, email_doc, envelope, order_doc, raw

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


def erase(engine: Engine, store: DictStore, customer: str, t: float, offset: int):
    return run(engine, store, "erasure-requests", envelope("Erasure Requested", customer, t, {"request_id": f"dsr-{offset}"}, f"er-{offset}"), offset)


def test_events_dated_before_the_erasure_do_not_bring_the_customer_back():
    engine, store = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    run(engine, store, "orders", order_doc("a", T0, "A1"), 0)
    erase(engine, store, "a", T0 + 2 * DAY, 1)
    clock = engine.partitions[0]
    # Published before the request, read after it (another topic, or a replay from the start).
    for offset, doc, role in ((2, order_doc("a", T0 + DAY, "A2"), "orders"), (3, email_doc("a", T0 + 2 * DAY, "m1"), "email-events"), (4, order_doc("a", T0, "A1"), "orders")):
        late = run(engine, store, role, doc, offset)
        assert late.before_erasure is True and late.rejected is None and not late.new_customer
        assert [o for o in late.outgoing if o.key == b"a"] == []
    assert store.get("a") is None and clock.customers == 0 and views.partition_summary(engine)["customers"] == 0

    # After the request: a new relationship, scored from its own events only.
    back = run(engine, store, "orders", order_doc("a", T0 + 10 * DAY, "A3", total=40.0), 5)
    assert back.before_erasure is False and back.new_customer is True
    assert list(store.get("a").orders) == ["A3"] and clock.customers == 1
    # ... and an event of the erased relationship read now is still not theirs.
    later = run(engine, store, "orders", order_doc("a", T0 + DAY + 1, "A4"), 6)
    assert later.before_erasure is True and list(store.get("a").orders) == ["A3"]
    # The other customers of the partition are not concerned.
    other = run(engine, store, "orders", order_doc("b", T0, "B1"), 7)
    assert other.before_erasure is False and store.get("b") is not None


def test_the_erasure_covers_what_it_removed_even_if_dated_after_the_request():
    engine, store = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    run(engine, store, "orders", order_doc("a", T0 + 5 * DAY, "A1"), 0)
    erase(engine, store, "a", T0 + DAY, 1)  # the request's own time is before that order
    assert run(engine, store, "orders", order_doc("a", T0 + 4 * DAY, "A0"), 2).before_erasure is True
    assert run(engine, store, "orders", order_doc("a", T0 + 5 * DAY, "A1"), 3).before_erasure is True
    assert run(engine, store, "orders", order_doc("a", T0 + 6 * DAY, "A2"), 4).new_customer is True
    # A second request widens what is covered; an older one never narrows it.
    erase(engine, store, "a", T0 + 7 * DAY, 5)
    erase(engine, store, "a", T0 + 3 * DAY, 6)
    assert engine.partitions[0].erasures[hashlib.sha256(b"a").hexdigest()] == T0 + 7 * DAY
    assert run(engine, store, "orders", order_doc("a", T0 + 6 * DAY, "A2"), 7).before_erasure is True


def test_an_unknown_customer_erased_early_is_not_created_by_older_events():
    engine, store = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    erase(engine, store, "early", T0 + DAY, 0)  # the request is read before their orders
    assert run(engine, store, "orders", order_doc("early", T0, "E1"), 1).before_erasure is True
    assert store.get("early") is None


def test_erasure_markers_hold_no_id_and_survive_a_restore():
    engine, store = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    run(engine, store, "orders", order_doc("secret-id", T0, "S1"), 0)
    run(engine, store, "orders", order_doc("b", T0, "B1"), 1)
    erase(engine, store, "secret-id", T0 + DAY, 2)
    assert store.erasures == {hashlib.sha256(b"secret-id").hexdigest(): (0, T0 + DAY)}
    assert "secret-id" not in repr(engine.partitions[0].erasures) and "secret-id" not in repr(store.erasures)

    # A restarted worker: a fresh engine rebuilt from the stored states and markers.
    fresh = Engine(wall_clock=lambda: T0 + 500 * DAY)
    markers = [(digest, partition, at) for digest, (partition, at) in store.erasures.items()]
    assert fresh.restore_partitions([0], store.data.values(), markers) == 1
    late = run(fresh, store, "orders", order_doc("secret-id", T0 + DAY / 2, "S2"), 3)
    assert late.before_erasure is True and store.get("secret-id") is None
    # A marker of a partition this worker does not own is not taken.
    elsewhere = Engine()
    elsewhere.restore_partitions([1], [], markers)
    assert elsewhere.partitions[1].erasures == {}


def test_a_request_read_again_does_not_erase_the_customer_who_came_back():
    """A restart before the commit, a replay of the inputs or a producer's retry reads the same
    request again, after the customer has started anew: that relationship is not its to remove."""
    engine, store = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    request = envelope("Erasure Requested", "a", T0 + 2 * DAY, {"request_id": "dsr-9"}, "er-9")
    run(engine, store, "orders", order_doc("a", T0, "A1"), 0)
    first = run(engine, store, "erasure-requests", request, 1)
    run(engine, store, "orders", order_doc("a", T0 + 10 * DAY, "A3"), 2)

    again = run(engine, store, "erasure-requests", request, 3)
    assert again.erased is False and list(store.get("a").orders) == ["A3"]
    assert [o.topic_role for o in again.outgoing] == [AUDIT]  # no tombstone over the new customer's scores
    assert orjson.loads(again.outgoing[0].value)["id"] == orjson.loads(first.outgoing[1].value)["id"]
    assert engine.partitions[0].erasures[hashlib.sha256(b"a").hexdigest()] == T0 + 2 * DAY
    assert run(engine, store, "orders", order_doc("a", T0 + 10 * DAY, "A3"), 4).duplicate is True
    assert run(engine, store, "orders", order_doc("a", T0 + 9 * DAY, "A2"), 5).before_erasure is False
    assert set(store.get("a").orders) == {"A2", "A3"}

    # Read again with nobody back: the same records as the first time, found or not.
    engine2, store2 = Engine(wall_clock=lambda: T0 + 500 * DAY), DictStore()
    run(engine2, store2, "orders", order_doc("a", T0, "A1"), 0)
    run(engine2, store2, "erasure-requests", request, 1)
    repeat = run(engine2, store2, "erasure-requests", request, 2)
    assert [(o.topic_role, o.key, o.value) for o in repeat.outgoing][0] == (SCORES, b"a", None)

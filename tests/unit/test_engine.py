"""Engine: a scripted history with exact segment changes, dead letters, duplicates,
determinism, restore-and-continue, and a simulator run validated against the contracts."""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from corekit import DAY, T0, email_doc, envelope, order_doc, parse, raw

from streamer import contracts
from streamer.core import outputs
from streamer.core.config import Limits, ScoringConfig
from streamer.core.engine import DEAD_LETTER, SCORES, SEGMENT_CHANGES, DictStore, Engine, PartitionClock, Record
from streamer.core.state import CustomerState, is_void
from streamer.simulator import TOPIC_OF_TYPE, ShopSimulator

WALL = T0 + 500 * DAY
TOPICS = {"orders": "shop.orders", "email-events": "shop.email-events", "community-events": "shop.community-events"}
OFFSETS: Counter = Counter()


def rec(role: str, key: bytes | None, value: bytes | None, partition: int = 0, offset: int | None = None) -> Record:
    if offset is None:
        offset = OFFSETS[(role, partition)]
        OFFSETS[(role, partition)] += 1
    return Record(role, TOPICS[role], partition, offset, key, value, timestamp_ms=1_700_000_000_000 + offset)


def engine(**kw) -> Engine:
    return Engine(wall_clock=lambda: WALL, **kw)


def lifecycle_engine() -> Engine:
    """Formula and BTYD scorers only: no label timers of the online learners in between, so
    the lifecycle timers can be counted and ordered exactly."""
    from streamer.core.scoring import FormulaScorer
    from streamer.models.scorer import BTYDScorer

    # No other families and no triggers either: their timers are tested in test_triggers.
    cfg = ScoringConfig(families=(), triggers={})
    return engine(config=cfg, scorers=[FormulaScorer(cfg), BTYDScorer(cfg.btyd_horizon_days, cfg.annual_discount_rate)])


def run(records: list[Record], eng: Engine | None = None, store: DictStore | None = None):
    eng = eng or engine()
    store = store if store is not None else DictStore()
    return eng, store, [eng.process(r, store) for r in records]


def docs(result, role: str | None = None) -> list[dict]:
    return [orjson.loads(o.value) for o in result.outgoing if role is None or o.topic_role == role]


def changes(result, families: tuple[str, ...] = ("lifecycle", "value_tier")) -> list[tuple]:
    """Segment changes of ``families`` (the others have their own tests in test_triggers)."""
    out = []
    for o in result.outgoing:
        if o.topic_role == SEGMENT_CHANGES:
            d = orjson.loads(o.value)["data"]
            if d["family"] in families:
                out.append((d["customer"], d["family"], d["from"], d["to"], parse(d["at"])))
    return out


# -- the scripted history -----------------------------------------------------------------------

A, B, C = "cust-a", "cust-b", "cust-c"
BAD_VALUE = b'{"oops'


def risk_days(p: float, mean: float, threshold: float = 0.6) -> float:
    """Silence after which P(dropped out) reaches the threshold, from the churn model."""
    return mean * math.log(threshold * (1 - p) / ((1 - threshold) * p))


RISK_1 = risk_days(0.8 / 3.2, 90.0)  # one purchase day: p = 0.25, mean interval 90
RISK_A = risk_days(0.8 / 4.2, (10 + 90) / 2)  # days 0 and 10: p = 0.8 / 4.2, mean interval 50


def scripted() -> list[Record]:
    b1 = raw(order_doc(B, T0 + 1 * DAY, "B1"))
    return [
        rec("orders", A.encode(), raw(order_doc(A, T0, "A1")), offset=0),
        rec("orders", B.encode(), b1, offset=1),
        rec("email-events", C.encode(), raw(email_doc(C, T0 + 2 * DAY, "c-open-1")), offset=0),
        rec("orders", A.encode(), raw(order_doc(A, T0 + 10 * DAY, "A2", total=80.0, margin=20.0)), offset=2),
        rec("orders", B.encode(), b1, offset=3),  # redelivered
        rec("orders", B.encode(), BAD_VALUE, offset=4),  # garbage
        rec("orders", C.encode(), raw(order_doc(C, T0 + 200 * DAY, "C1")), offset=5),
        rec("email-events", C.encode(), raw(email_doc(C, T0 + 400 * DAY, "c-open-2")), offset=1),
        rec("email-events", C.encode(), raw(email_doc(C, T0 + 400 * DAY, "c-open-2")), offset=2),  # redelivered
        rec("orders", A.encode(), raw(order_doc(A, T0 + 410 * DAY, "A3")), offset=6),
    ]


LIFE, TIER = "lifecycle", "value_tier"
EXPECTED_CHANGES = [
    [(A, LIFE, None, "new", T0), (A, TIER, None, "unranked", T0)],
    [(B, LIFE, None, "new", T0 + DAY), (B, TIER, None, "unranked", T0 + DAY)],
    [],  # C has no orders: scored, no segment
    [(A, LIFE, "new", "repeat", T0 + 10 * DAY)],
    [],  # duplicate
    [],  # dead letter
    [
        (A, LIFE, "repeat", "at_risk", T0 + (10 + RISK_A) * DAY + 1),  # fired by C's later event
        (B, LIFE, "new", "at_risk", T0 + (1 + RISK_1) * DAY + 1),
        (C, LIFE, None, "new", T0 + 200 * DAY),
        (C, TIER, None, "unranked", T0 + 200 * DAY),
    ],
    [
        (C, LIFE, "new", "at_risk", T0 + (200 + RISK_1) * DAY + 1),
        (B, LIFE, "at_risk", "lapsed", T0 + (1 + 365) * DAY + 1),  # lapses fired by C's e-mail event
        (A, LIFE, "at_risk", "lapsed", T0 + (10 + 365) * DAY + 1),
    ],
    [],  # duplicate
    [(A, LIFE, "lapsed", "reactivated", T0 + 410 * DAY)],
]


def assert_changes(actual: list[tuple], expected: list[tuple]) -> None:
    assert [c[:4] for c in actual] == [e[:4] for e in expected]
    for a, e in zip(actual, expected):
        assert a[4] == pytest.approx(e[4], abs=1e-3), (a, e)  # RFC 3339 in milliseconds


def test_scripted_segment_changes():
    assert RISK_1 == pytest.approx(135.367, abs=1e-3) and RISK_A == pytest.approx(92.619, abs=1e-3)
    _, store, results = run(scripted(), lifecycle_engine())
    for i, (result, expected) in enumerate(zip(results, EXPECTED_CHANGES, strict=True)):
        assert_changes(changes(result), expected)
        assert [(t.family, t.old, t.new) for t in result.transitions] == [e[1:4] for e in expected], i
    assert [r.timers_fired for r in results] == [0, 0, 0, 0, 0, 0, 2, 3, 0, 0]
    assert [r.new_customer for r in results] == [True, True, True, False, False, False, False, False, False, False]
    assert [r.duplicate for r in results] == [False, False, False, False, True, False, False, False, True, False]
    assert [r.rejected for r in results] == [None] * 5 + ["bad_json"] + [None] * 4
    assert [r.event_type for r in results] == [
        "Order Completed", "Order Completed", "Email Opened", "Order Completed", "Order Completed",
        None, "Order Completed", "Email Opened", "Email Opened", "Order Completed",
    ]
    assert {c: store.get(c).segments for c in (A, B, C)} == {
        A: {LIFE: "reactivated", TIER: "unranked"},
        B: {LIFE: "lapsed", TIER: "unranked"},
        C: {LIFE: "at_risk", TIER: "unranked"},
    }
    assert store.get(B).next_due is None
    assert store.get(C).next_due == pytest.approx(T0 + 565 * DAY + 1)


def test_scripted_score_updates():
    _, _, results = run(scripted(), lifecycle_engine())
    # Every applied event ends with its own score update; each timer adds one before it.
    per_record = [[(d["subject"], d["data"]["cause"]) for d in docs(r, SCORES)] for r in results]
    assert per_record[0] == [(A, {"event_id": "evt-A1", "event_type": "Order Completed"})]
    assert per_record[2] == [(C, {"event_id": "c-open-1", "event_type": "Email Opened"})]
    assert per_record[4] == per_record[5] == per_record[8] == []
    assert [s for s, _ in per_record[6]] == [A, B, C]
    assert [s for s, _ in per_record[7]] == [C, B, A, C]
    timer = per_record[7][1][1]
    assert timer == {"timer": "due@" + outputs.rfc3339(T0 + 366 * DAY + 1)}
    first = docs(results[0], SCORES)[0]["data"]
    assert first["as_of"] == "2025-01-01T00:00:00.000Z"
    assert first["model_version"] == "formula-1+btyd-prior-cdnow.prior-cdnow"  # before any population fit
    assert first["segments"] == {LIFE: "new", TIER: "unranked"}
    assert first["scores"]["historic_clv"] == 30.0
    assert first["scores"]["churn_risk"] == 0.25
    assert first["inputs"]["orders"] == 1 and first["inputs"]["revenue"] == 100.0
    # C's e-mail-only score: no orders, no segments yet.
    c_only = docs(results[2], SCORES)[0]["data"]
    assert c_only["segments"] == {}
    assert c_only["scores"] == {"historic_clv": 0.0, "formula_clv": 0.0, "churn_risk": 0.0, "dropout_probability": 0.0}
    # A late event is scored at the partition clock, not at its own time.
    _, _, late = run(scripted()[:2] + [rec("orders", A.encode(), raw(order_doc(A, T0 + 0.5 * DAY, "A0")), offset=9)])
    assert docs(late[2], SCORES)[0]["data"]["as_of"] == "2025-01-02T00:00:00.000Z"


def test_dead_letter_record():
    _, _, results = run(scripted())
    (out,) = results[5].outgoing
    assert (out.topic_role, out.key) == (DEAD_LETTER, B.encode())
    doc = orjson.loads(out.value)
    assert doc["type"] == "Event Rejected"
    assert doc["subject"] == "shop.orders/0/4"
    assert doc["time"] == outputs.rfc3339(WALL)
    data = doc["data"]
    assert data["reason"] == "bad_json"
    assert data["detail"].startswith("not valid JSON")
    assert data["source"] == {
        "topic": "shop.orders", "partition": 0, "offset": 4, "timestamp_ms": 1_700_000_000_004,
        "key_b64": base64.b64encode(B.encode()).decode(),
    }
    assert base64.b64decode(data["raw_b64"]) == BAD_VALUE
    assert (data["raw_size"], data["raw_truncated"], data["rejected_at"]) == (len(BAD_VALUE), False, "2026-05-16T00:00:00.000Z")
    assert contracts.first_error(doc) is None


def test_dead_letter_without_key_or_value_and_truncated():
    eng = engine()
    result = eng.process(Record("orders", "shop.orders", 3, 77, None, None, None), DictStore())
    (out,) = result.outgoing
    data = orjson.loads(out.value)["data"]
    assert out.key == b""
    assert (data["reason"], data["source"]["key_b64"], data["raw_b64"], data["raw_size"]) == ("bad_json", None, "", 0)
    big = b"[" + b"1," * 50_000 + b"1]"
    result = eng.process(Record("orders", "shop.orders", 3, 78, b"k", big, None), DictStore())
    data = orjson.loads(result.outgoing[0].value)["data"]
    assert data["reason"] == "oversized"
    assert base64.b64decode(data["raw_b64"]) == big[: 64 * 1024]
    assert (data["raw_size"], data["raw_truncated"]) == (len(big), True)
    assert contracts.first_error(orjson.loads(result.outgoing[0].value)) is None


def test_reject_from_the_shell_keeps_the_contract_with_a_long_detail():
    """Regression: the detail of a processing_error must fit the schema's 256 characters."""
    r = rec("orders", b"k", b"{}", offset=5)
    result = engine().reject(r, "processing_error", "RuntimeError: " + "x" * 2000)
    doc = orjson.loads(result.outgoing[0].value)
    assert result.rejected == "processing_error"
    assert len(doc["data"]["detail"]) == 256
    assert doc["data"]["detail"].startswith("RuntimeError: xxx")
    assert contracts.first_error(doc) is None


def test_a_flood_of_refunds_is_dead_lettered_past_the_bound_and_the_state_stays_small():
    """Refunds may name orders not seen yet (a late order), so nothing else bounded them: 5,000
    made a stored state of ~1 MB, more than Kafka takes, and 43,000 one that no longer read
    back (every later event of that customer, an erasure too, failed)."""
    eng, store = engine(), DictStore()
    eng.process(rec("orders", b"c-flood", raw(order_doc("c-flood", T0, "O1")), offset=0), store)
    reasons = []
    for i in range(250):
        doc = envelope("Order Refunded", "c-flood", T0 + DAY, {"order_id": f"X{i}", "total": 1.0, "currency": "USD"}, f"rf-{i}")
        result = eng.process(rec("orders", b"c-flood", raw(doc), offset=1 + i), store)
        reasons.append(result.rejected)
    kept = ScoringConfig().max_refunds_kept
    assert reasons[:kept] == [None] * kept and set(reasons[kept:]) == {"absurd_value"}
    assert sum(map(len, store.get("c-flood").refunds.values())) == kept
    assert len(store.get("c-flood").to_bytes("none")) < 16_384
    detail = orjson.loads(result.outgoing[0].value)["data"]["detail"]
    assert f"at most {kept}" in detail


def test_duplicates_produce_no_output():
    records = scripted()
    _, store, results = run(records)
    before = {c: s.to_bytes() for c, s in store.data.items()}
    eng, store2, _ = run(records)
    again = [eng.process(r, store2) for r in records if r.value != BAD_VALUE]
    assert all(r.duplicate and not r.outgoing and not r.transitions for r in again)
    assert {c: s.to_bytes() for c, s in store2.data.items()} == before


def test_segment_change_ids_are_deterministic_and_distinct():
    _, _, results = run(scripted())
    every = [d for r in results for d in docs(r, SEGMENT_CHANGES)]
    assert len({d["id"] for d in every}) == len(every)
    ids = [d["id"] for d in every if d["data"]["family"] in (LIFE, TIER)]
    assert len(ids) == len(set(ids)) == 13
    assert all(i.startswith("seg-") for i in ids)
    first = docs(results[0], SEGMENT_CHANGES)[0]
    assert first["id"] == outputs.deterministic_id("seg", A, LIFE, None, "new", T0)


# -- determinism and restore ---------------------------------------------------------------------


def outgoing_bytes(results) -> list[list[tuple]]:
    return [[(o.topic_role, o.key, o.value) for o in r.outgoing] for r in results]


def test_a_stored_learner_of_another_label_horizon_is_not_taken():
    """After learn_horizon_days changes in the rules file, the learners persisted under the old
    horizon would correct the new horizon's offsets with what they learned for the old one."""
    from streamer.models.online import FEATURE_NAMES, Snapshot

    trained = Engine(ScoringConfig(learn_horizon_days=90), Limits())
    snap = Snapshot(0.0, {name: 0.0 for name in FEATURE_NAMES} | {"p_no_purchase": 0.5}, 1.0)
    for _ in range(3):
        trained.online.learner.learn(snap, True, 0, 90 * DAY)
    stored = trained.export_models()
    assert Engine(ScoringConfig(learn_horizon_days=90), Limits()).import_models(stored) == ["online"]  # control
    other = Engine(ScoringConfig(learn_horizon_days=30), Limits())
    assert "online" not in other.import_models(stored)
    assert other.online.learner.version == 0 and other.online.learner.horizon_s == 30 * DAY


def test_processing_twice_is_byte_identical():
    _, _, first = run(scripted())
    _, _, second = run(scripted())
    assert outgoing_bytes(first) == outgoing_bytes(second)


def restore_and_continue(records: list[Record], split: int, eng_factory=engine):
    """Process records[:split], persist states as bytes, restore a fresh engine, process the rest."""
    eng1, store1, head = run(records[:split], eng_factory())
    eng2, store2 = eng_factory(), DictStore()
    # The learned models come back from the model-state topic (persisted at the split here).
    assert eng2.import_models(eng1.export_models()) or eng1.online.learner.version == 0
    by_partition: dict[int, list[CustomerState]] = {}
    for customer, state in store1.data.items():
        restored = CustomerState.from_bytes(state.to_bytes())
        store2.put(customer, restored)
        by_partition.setdefault(restored.partition, []).append(restored)
    for p in eng1.partitions:
        assert eng2.restore_partition(p, by_partition.get(p, [])) == len(by_partition.get(p, []))
        assert eng2.partitions[p].now == eng1.partitions[p].now
        assert eng2.partitions[p].timers.due_times() == eng1.partitions[p].timers.due_times()
        assert eng2.partitions[p].ranks.values() == eng1.partitions[p].ranks.values()
    tail = [eng2.process(r, store2) for r in records[split:]]
    return head + tail, store2


def test_restore_then_continue_matches_an_uninterrupted_run():
    records = scripted()
    _, store, expected = run(records)
    for split in range(1, len(records)):
        results, store2 = restore_and_continue(records, split)
        assert outgoing_bytes(results) == outgoing_bytes(expected), split
        assert {c: s.to_bytes() for c, s in store2.data.items()} == {c: s.to_bytes() for c, s in store.data.items()}


def test_partition_clock_schedule_and_pop():
    clock = PartitionClock()
    clock.schedule("a", 10.0)
    clock.schedule("b", 5.0)
    clock.schedule("a", 3.0)  # rescheduled: the old entry goes stale
    clock.schedule("c", 7.0)
    clock.schedule("c", None)  # cleared
    clock.now = 6.0
    assert clock.pop_due() == (3.0, "a")
    assert clock.pop_due() == (5.0, "b")
    assert clock.pop_due() is None
    clock.now = 100.0
    assert clock.pop_due() is None  # a@10 and c@7 are stale
    assert clock.timers.due_times() == {}


def test_partitions_have_separate_clocks():
    r1 = rec("orders", A.encode(), raw(order_doc(A, T0, "A1")), partition=0, offset=0)
    r2 = rec("orders", B.encode(), raw(order_doc(B, T0 + 400 * DAY, "B1")), partition=1, offset=0)
    eng, store, results = run([r1, r2])
    assert results[1].timers_fired == 0  # B's partition clock does not lapse A
    assert store.get(A).segments[LIFE] == "new"
    assert (eng.partitions[0].now, eng.partitions[1].now) == (T0, T0 + 400 * DAY)
    eng.forget_partition(0)
    assert set(eng.partitions) == {1}


# -- a simulator run -----------------------------------------------------------------------------

SIM_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SIM_UNTIL = SIM_START + timedelta(days=200)
SIM_WALL = (SIM_UNTIL + timedelta(days=1)).timestamp()
EXPECTED_REASON = {
    "non_json": "bad_json",
    "not_an_object": "not_an_object",
    "missing_subject": "missing_customer_id",
    "unknown_type": "unknown_type",
    "schema_violation": "schema_violation",
    "absurd_time": "absurd_value",
    "wrong_topic": "wrong_topic",
    "oversized": "oversized",
}


def bad_kind(role: str, value: bytes) -> str:
    """Which of the simulator's BAD_KINDS a bad record is, judged from its content."""
    if len(value) > 1024 * 1024:
        return "oversized"
    try:
        doc = json.loads(value)
    except ValueError:
        return "non_json"
    if not isinstance(doc, dict):
        return "not_an_object"
    if not doc.get("subject"):
        return "missing_subject"
    if doc.get("type") not in TOPIC_OF_TYPE:
        return "unknown_type"
    if TOPIC_OF_TYPE[doc["type"]] != role:
        return "wrong_topic"
    if doc["time"] in ("2999-01-01T00:00:00Z", "1900-01-01T00:00:00Z"):
        return "absurd_time"
    return "schema_violation"


def sim_records(n_customers: int, seed: int, invalid_fraction: float, until: datetime, partitions: int = 4):
    sim = ShopSimulator(n_customers, SIM_START, seed=seed, invalid_fraction=invalid_fraction)
    offsets: Counter = Counter()
    records = []
    for role, key, value in sim.raw_events(until):
        p = zlib.crc32(key) % partitions
        records.append(Record(role, TOPICS[role], p, offsets[(role, p)], key, value, None))
        offsets[(role, p)] += 1
    return sim, records


@pytest.fixture(scope="module")
def sim_run():
    sim, records = sim_records(300, 3, 0.05, SIM_UNTIL)
    _, clean = sim_records(300, 3, 0.0, SIM_UNTIL)
    eng = Engine(wall_clock=lambda: SIM_WALL)
    store = DictStore()
    results = [eng.process(r, store) for r in records]
    return sim, records, clean, results, store


def test_simulator_run_rejects_exactly_the_bad_inputs(sim_run):
    sim, records, clean, results, _ = sim_run
    clean_values = iter((r.topic_role, r.value) for r in clean)
    next_clean = next(clean_values)
    kinds: Counter = Counter()
    scored = duplicates = 0
    for record, result in zip(records, results, strict=True):
        if (record.topic_role, record.value) == next_clean:
            next_clean = next(clean_values, None)
            event = orjson.loads(record.value)
            assert result.rejected is None, (result.rejected, event["type"])
            assert result.event_type == event["type"]
            if result.duplicate:
                duplicates += 1
                continue
            own = [d for d in docs(result, SCORES) if d["data"]["cause"].get("event_id") == event["id"]]
            assert len(own) == 1 and own[0]["subject"] == event["subject"]
            scored += 1
        else:
            kind = bad_kind(record.topic_role, record.value)
            kinds[kind] += 1
            assert result.rejected == EXPECTED_REASON[kind], (kind, result.rejected)
            (out,) = result.outgoing
            data = orjson.loads(out.value)["data"]
            assert data["reason"] == EXPECTED_REASON[kind]
            assert data["source"]["offset"] == record.offset and data["source"]["partition"] == record.partition
    assert next_clean is None  # every valid event was seen, in order
    assert scored + duplicates == len(clean)
    assert scored > 8000 and duplicates == 0
    assert kinds == Counter({k: n for k, n in sim.bad_counts.items() if n})
    assert set(kinds) == set(EXPECTED_REASON)  # every kind occurred in this run


def test_simulator_outputs_validate_against_the_contracts(sim_run):
    _, _, _, results, _ = sim_run
    seen: Counter = Counter()
    for result in results:
        for out in result.outgoing:
            doc = orjson.loads(out.value)
            assert contracts.first_error(doc) is None, (doc["type"], contracts.first_error(doc))
            assert contracts.OUTPUT_TYPES[doc["type"]] == out.topic_role
            if out.topic_role != DEAD_LETTER:
                assert out.key == doc["subject"].encode() == doc["data"]["customer"].encode()
            seen[doc["type"]] += 1
    assert seen["Customer Scored"] > 8000
    assert seen["Segment Changed"] > 500
    assert seen["Event Rejected"] == sum(r.rejected is not None for r in results) > 300


def test_simulator_run_reaches_every_lifecycle_segment(sim_run):
    *_, results, store = sim_run
    reached = {t.new for r in results for t in r.transitions if t.family == "lifecycle"}
    # 200 days are too short for a 365-day lapse, so neither lapsed nor reactivated occur.
    # None: the lifecycle left by a customer whose every order was refunded (no purchase).
    assert reached == {"new", "repeat", "loyal", "at_risk", None}
    # The published state agrees with the last segment change of each customer.
    last: dict[tuple[str, str], str | None] = {}
    for r in results:
        for o in r.outgoing:
            if o.topic_role == SEGMENT_CHANGES:
                d = orjson.loads(o.value)["data"]
                last[(d["customer"], d["family"])] = d["to"]
    for (customer, family), segment in last.items():
        assert store.get(customer).segments[family] == segment
    # Those who ended with no lifecycle after having one returned everything they bought.
    left = [store.get(c) for (c, family), segment in last.items() if family == "lifecycle" and segment is None]
    assert left and all(s.orders and all(is_void(o, s.refunds.get(oid)) for oid, o in s.orders.items()) for s in left)


def test_simulator_run_restore_matches_uninterrupted():
    _, records = sim_records(60, 11, 0.02, SIM_START + timedelta(days=150))
    wall = (SIM_START + timedelta(days=151)).timestamp()
    factory = lambda: Engine(wall_clock=lambda: wall)  # noqa: E731
    _, store, expected = run(records, factory())
    for split in (1, len(records) // 3, len(records) // 2, len(records) - 7):
        results, store2 = restore_and_continue(records, split, factory)
        assert outgoing_bytes(results) == outgoing_bytes(expected), split
        assert {c: s.to_bytes() for c, s in store2.data.items()} == {c: s.to_bytes() for c, s in store.data.items()}


def test_value_tiers_are_ranked_once_the_partition_is_populated():
    cfg = ScoringConfig(value_tier_min_population=3)
    totals = [100.0, 200.0, 300.0, 400.0, 10.0]
    records = [
        rec("orders", f"v{i}".encode(), raw(order_doc(f"v{i}", T0 + i * 3600, f"V{i}", total=t, margin=t / 10)), offset=i)
        for i, t in enumerate(totals)
    ]
    _, store, results = run(records, engine(config=cfg))
    tiers = [[(c[0], c[2], c[3]) for c in changes(r) if c[1] == TIER] for r in results]
    assert tiers == [
        [("v0", None, "unranked")],
        [("v1", None, "unranked")],
        [("v2", None, "high")],  # above 2 of 3 customers: 0.6 <= q < 0.9
        [("v3", None, "high")],  # above 3 of 4
        [("v4", None, "low")],  # above none of 5
    ]
    assert store.get("v0").segments[TIER] == "unranked"  # re-ranked only when re-evaluated
    assert sorted(store.get(f"v{i}").value for i in range(5)) == sorted(
        store.get(f"v{i}").value for i in (4, 0, 1, 2, 3)
    )
    assert store.get("v3").value == pytest.approx(4 * store.get("v0").value)


class _FailsForCustomer:
    """A scorer that raises for one customer id, to test containment."""

    name, version = "boom", "1"

    def __init__(self, customer_orders: int) -> None:
        self.orders = customer_orders

    def predict_one(self, features, scores):
        if features.orders == self.orders:
            raise RuntimeError("scorer exploded")
        return {}


def test_a_failing_event_keeps_the_timer_outputs_it_fired_and_goes_to_dead_letter():
    from streamer.core.scoring import FormulaScorer

    cfg = ScoringConfig()
    eng = Engine(cfg, scorers=[FormulaScorer(cfg), _FailsForCustomer(customer_orders=2)], wall_clock=lambda: WALL)
    store = DictStore()
    eng.process(rec("orders", b"a", raw(order_doc("a", T0, "A-1"))), store)
    eng.process(rec("orders", b"b", raw(order_doc("b", T0 + DAY, "B-1"))), store)
    # b's second order, 200 days on, first fires a's at-risk timer, then fails for b itself.
    result = eng.process(rec("orders", b"b", raw(order_doc("b", T0 + 200 * DAY, "B-2"))), store)
    assert result.rejected == "processing_error"
    assert result.timers_fired >= 1
    timer_changes = [c for c in changes(result) if c[0] == "a"]
    assert ("a", "lifecycle", "new", "at_risk") in [c[:4] for c in timer_changes]
    dead = docs(result, DEAD_LETTER)
    assert len(dead) == 1 and dead[0]["data"]["detail"] == "RuntimeError: scorer exploded"
    assert len(store.get("b").orders) == 1  # the failed event changed nothing for b


def test_a_failing_timer_does_not_stop_the_other_timers():
    from streamer.core.scoring import FormulaScorer

    cfg = ScoringConfig()
    eng = Engine(cfg, scorers=[FormulaScorer(cfg), _FailsForCustomer(customer_orders=1)], wall_clock=lambda: WALL)
    store = DictStore()
    # Seed two one-order customers without the failing scorer, then switch it on.
    plain = Engine(cfg, wall_clock=lambda: WALL)
    plain.process(rec("orders", b"a", raw(order_doc("a", T0, "A-1"))), store)
    plain.process(rec("orders", b"c", raw(order_doc("c", T0, "C-1"), )), store)
    eng.restore_partition(0, store.data.values())
    result = eng.process(rec("orders", b"b", raw(order_doc("b", T0 + 400 * DAY, "B-1"))), store)
    # Both timers of a and c fail (one order each), b's own event fails too: all contained.
    assert result.timer_errors >= 2
    assert result.rejected == "processing_error"


def test_the_engine_counts_customers_without_a_table_scan():
    eng, store, _ = run([rec("orders", k.encode(), raw(order_doc(k, T0, f"{k}-1"))) for k in ("x", "y", "z")])
    eng.process(rec("orders", b"x", raw(order_doc("x", T0 + DAY, "x-2"))), store)
    assert eng.customers == 3
    fresh = engine()
    fresh.restore_partition(0, store.data.values())
    assert fresh.customers == 3


def test_delayed_labels_arrive_once_at_their_event_time_and_count_only_their_window():
    eng, store = engine(), DictStore()
    learned: list[tuple[float, bool, float, float]] = []
    original = eng.online.learner.learn

    def spy(snapshot, churned, actual, at):
        learned.append((snapshot.at, churned, actual, at))
        return original(snapshot, churned, actual, at)

    eng.online.learner.learn = spy
    horizon = eng.config.learn_horizon_days * DAY
    steps = [
        rec("orders", b"a", raw(order_doc("a", T0, "A-1"))),  # a's prediction is made now
        rec("orders", b"a", raw(order_doc("a", T0 + 30 * DAY, "A-2"))),  # inside the window
        rec("email-events", b"b", raw(email_doc("b", T0 + 89 * DAY, "b-1"))),  # not yet due
        rec("email-events", b"b", raw(email_doc("b", T0 + 91 * DAY, "b-2"))),  # due: b's clock passes it
        rec("orders", b"a", raw(order_doc("a", T0 + 95 * DAY, "A-3"))),  # after the window: not in that label
        rec("email-events", b"b", raw(email_doc("b", T0 + 95 * DAY + 3600, "b-3"))),  # nothing new is due
    ]
    counts = [eng.process(r, store).labels_learned for r in steps]
    assert counts == [0, 0, 0, 1, 0, 0]
    # One label: the prediction made at T0, one purchase day (T0+30d) in (T0, T0+90d], learned
    # when the partition clock passed T0+90d.
    assert learned == [(T0, False, 1.0, T0 + horizon)]
    # The next prediction was remembered when a was evaluated at the label (T0+90d+1s timer).
    assert Snapshot_at(store.get("a")) == pytest.approx(T0 + horizon + 1)
    assert eng.online.learner.version == 1


def Snapshot_at(state: CustomerState) -> float:
    from streamer.models.online import Snapshot

    return Snapshot.from_list(state.pending).at

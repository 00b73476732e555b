"""Tests for the deterministic shop simulator (streamer/simulator.py)."""

from __future__ import annotations

import gzip
import itertools
import json
import sys
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# The repo root may not be on sys.path when pytest is run as a plain script.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamer.contracts import INPUT_TYPES  # noqa: E402
from streamer.simulator import BAD_KINDS, ShopSimulator  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=timezone.utc)
UNTIL = START + timedelta(days=365)

# The contracts' mapping, which test_schemas.py checks against schemas/README.md.
TOPIC_OF = INPUT_TYPES
_EMAIL = {"email_id", "campaign_id", "campaign_name"}
ALLOWED_DATA = {
    "Order Completed": {"order_id", "total", "currency", "discount", "margin", "cost", "products"},
    "Order Refunded": {"order_id", "total", "currency", "reason"},
    "Email Delivered": _EMAIL,
    "Email Opened": _EMAIL,
    "Email Link Clicked": _EMAIL | {"link_url"},
    "Email Bounced": _EMAIL | {"bounce_type"},
    "Unsubscribed": {"email_id", "list_id", "campaign_id"},
    "Survey Answered": {"survey_id", "goal", "problem", "preferences"},
    "Community Joined": {"community_id"},
    "Community Posted": {"post_id", "topic"},
    "Community Replied": {"post_id", "reply_id"},
    "Answer Accepted": {"post_id", "answer_id"},
    "Review Posted": {"product_id", "rating", "review_id"},
    "Referral Made": {"referral_code", "channel"},
}
REQUIRED_DATA = {
    "Order Completed": {"order_id", "total", "currency", "products"},
    "Order Refunded": {"order_id", "total", "currency"},
    "Email Delivered": {"email_id"},
    "Email Opened": {"email_id"},
    "Email Link Clicked": {"email_id", "link_url"},
    "Email Bounced": {"email_id", "bounce_type"},
    "Unsubscribed": set(),
    "Survey Answered": {"survey_id"},
    "Community Joined": set(),
    "Community Posted": {"post_id"},
    "Community Replied": {"post_id", "reply_id"},
    "Answer Accepted": {"post_id", "answer_id"},
    "Review Posted": {"product_id", "rating"},
    "Referral Made": {"referral_code"},
}
PRODUCT_FIELDS = {"product_id", "sku", "name", "category", "price", "quantity", "tier"}
CAMPAIGN_TYPES = {"Email Delivered", "Email Bounced"}


def ts(event: dict) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def year():
    """300 customers over a year: (simulator, list of (role, customer, event))."""
    sim = ShopSimulator(300, START, seed=11)
    return sim, list(sim.events(UNTIL))


# -- determinism and ordering -------------------------------------------------------------------


def test_same_seed_same_output_and_other_seed_differs():
    until = START + timedelta(days=120)
    a = list(ShopSimulator(80, START, seed=5, invalid_fraction=0.1).raw_events(until))
    b = list(ShopSimulator(80, START, seed=5, invalid_fraction=0.1).raw_events(until))
    c = list(ShopSimulator(80, START, seed=6, invalid_fraction=0.1).raw_events(until))
    assert a == b
    assert a != c


def test_truth_is_deterministic(year):
    sim, _ = year
    again = ShopSimulator(300, START, seed=11)
    list(again.events(UNTIL))
    assert again.truth == sim.truth


def test_times_non_decreasing_and_before_until(year):
    _, events = year
    times = [ts(e) for _, _, e in events]
    assert times, "expected events"
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[-1] < UNTIL
    assert times[0] >= START
    for _, _, e in events[:500]:
        # RFC 3339 UTC with microseconds and a Z suffix
        assert len(e["time"]) == 27 and e["time"].endswith("Z")


def test_resumable_in_chunks_equals_one_call():
    one = list(ShopSimulator(60, START, seed=3).events(START + timedelta(days=200)))
    sim = ShopSimulator(60, START, seed=3)
    chunks = []
    for days in (0, 1, 10, 10, 45.5, 100, 199.99, 200):
        chunks.extend(sim.events(START + timedelta(days=days)))
    assert chunks == one


def test_abandoned_iterator_resumes_after_last_yielded():
    until = START + timedelta(days=100)
    one = list(ShopSimulator(40, START, seed=4).events(until))
    sim = ShopSimulator(40, START, seed=4)
    first = list(itertools.islice(sim.events(until), 123))
    assert first + list(sim.events(until)) == one


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0.0, 150.0))
def test_resumable_property(seed, cut):
    end = START + timedelta(days=150)
    one = list(ShopSimulator(15, START, seed=seed).raw_events(end))
    sim = ShopSimulator(15, START, seed=seed)
    two = list(sim.raw_events(START + timedelta(days=cut))) + list(sim.raw_events(end))
    assert two == one


def test_naive_start_works_and_gives_naive_truth():
    naive = START.replace(tzinfo=None)
    sim = ShopSimulator(20, naive, seed=2)
    aware = ShopSimulator(20, START, seed=2)
    assert list(sim.events(naive + timedelta(days=60))) == list(aware.events(START + timedelta(days=60)))
    assert sim.truth["sim-000001"].joined_at.tzinfo is None
    assert aware.truth["sim-000001"].joined_at.tzinfo is not None


# -- envelope and contracts ----------------------------------------------------------------------


def test_envelope_topics_and_data_fields(year):
    _, events = year
    ids = set()
    for role, cid, e in events:
        assert e["specversion"] == "1.0"
        assert e["source"] == "/sim/shop"
        assert e["subject"] == cid
        assert TOPIC_OF[e["type"]] == role, e
        data = e["data"]
        assert set(data) <= ALLOWED_DATA[e["type"]], e
        assert REQUIRED_DATA[e["type"]] <= set(data), e
        ids.add(e["id"])
    assert len(ids) == len(events)
    # Erasure requests are privacy operations, not shop behaviour: the simulator sends none.
    assert set(e["type"] for _, _, e in events) == set(TOPIC_OF) - {"Erasure Requested"}, "every input type should occur in a year"
    assert all(cid.startswith("sim-") and len(cid) == 10 for _, cid, _ in events)


def test_type_specific_rules(year):
    _, events = year
    for _, _, e in events:
        d, t = e["type"], e["data"]
        if d == "Email Bounced":
            assert t["bounce_type"] in ("hard", "soft")
        elif d == "Review Posted":
            assert isinstance(t["rating"], int) and 1 <= t["rating"] <= 5
        elif d == "Survey Answered":
            assert {"goal", "problem", "preferences"} & set(t)
            assert len(t.get("preferences", [])) <= 50
        elif d == "Referral Made":
            assert "@" not in t["referral_code"]  # a code, never personal data


def test_contracts_validate_2000_events():
    contracts = pytest.importorskip("streamer.contracts")
    sim = ShopSimulator(200, START, seed=9)
    events = list(itertools.islice(sim.events(UNTIL), 2000))
    # Make sure the sample is not all e-mail: take the rarer types from further along too.
    rest = [e for _, _, e in sim.events(UNTIL) if e["type"] not in ("Email Delivered", "Email Opened")]
    sample = [e for _, _, e in events] + rest[:2000]
    assert len(sample) >= 2000
    errors = [(e["type"], contracts.first_error(e)) for e in sample]
    assert [x for x in errors if x[1] is not None] == []
    # ...and the injected schema violations really violate the schema.
    bad_sim = ShopSimulator(100, START, seed=9, invalid_fraction=0.3)
    violations = [
        json.loads(v) for r, k, v in bad_sim.raw_events(START + timedelta(days=60))
        if classify(r, k, v) == "schema_violation"
    ]
    assert violations
    assert all(contracts.first_error(doc) is not None for doc in violations)


# -- orders ----------------------------------------------------------------------------------------


def test_order_totals_consistent(year):
    _, events = year
    orders = [e["data"] for _, _, e in events if e["type"] == "Order Completed"]
    assert orders
    ids = [o["order_id"] for o in orders]
    assert len(set(ids)) == len(ids)
    discounted = 0
    for o in orders:
        assert len(o["products"]) in range(1, 5)
        gross = sum(p["price"] * p["quantity"] for p in o["products"])
        discount = o.get("discount", 0.0)
        discounted += discount > 0
        assert discount >= 0
        assert o["total"] >= 0
        assert abs(gross - discount - o["total"]) < 0.011, o
        assert o["currency"] == "USD"
        assert "margin" in o or "cost" in o
        if "margin" in o:
            assert 0.24 * o["total"] - 0.01 <= o["margin"] <= 0.46 * o["total"] + 0.01
        if "cost" in o:
            assert 0 <= o["cost"] <= o["total"]
        for p in o["products"]:
            assert set(p) == PRODUCT_FIELDS
            assert p["tier"] in ("basic", "advanced")
            assert p["price"] >= 0 and isinstance(p["quantity"], int) and p["quantity"] >= 1
    assert 0.12 < discounted / len(orders) < 0.28


def test_refunds_after_order_and_not_more_than_it(year):
    _, events = year
    orders = {}
    refunds = 0
    for _, cid, e in events:
        d = e["data"]
        if e["type"] == "Order Completed":
            orders[d["order_id"]] = (cid, ts(e), d["total"])
        elif e["type"] == "Order Refunded":
            refunds += 1
            cid0, t0, total = orders[d["order_id"]]
            assert cid == cid0
            assert ts(e) > t0 + timedelta(days=1)
            assert 0 < d["total"] <= total
    assert refunds > 0
    assert refunds / len(orders) < 0.07


def test_first_orders_mostly_basic_and_advanced_comes_later(year):
    _, events = year
    seen = set()
    first_basic = first_lines = later_adv = 0
    for _, cid, e in events:
        if e["type"] != "Order Completed":
            continue
        tiers = [p["tier"] for p in e["data"]["products"]]
        if cid not in seen:
            seen.add(cid)
            first_lines += len(tiers)
            first_basic += tiers.count("basic")
        else:
            later_adv += tiers.count("advanced")
    assert first_basic / first_lines > 0.8
    assert later_adv > 0


# -- customer life cycle -------------------------------------------------------------------------


def test_no_events_before_first_order(year):
    sim, events = year
    first: dict[str, dict] = {}
    for _, cid, e in events:
        first.setdefault(cid, e)
        assert ts(e) >= sim.truth[cid].joined_at
    for cid, e in first.items():
        assert e["type"] == "Order Completed"
        assert ts(e) == sim.truth[cid].joined_at


def test_dead_customers_stop_ordering_and_truth_counts(year):
    sim, events = year
    order_times = defaultdict(list)
    for _, cid, e in events:
        if e["type"] == "Order Completed":
            order_times[cid].append(ts(e))
    dead = [t for t in sim.truth.values() if t.died_at is not None]
    assert dead
    for truth in sim.truth.values():
        assert truth.orders == len(order_times[truth.customer_id])
    for truth in dead:
        times = order_times[truth.customer_id]
        assert max(times) == truth.died_at  # dies right after its last purchase
        assert len(times) >= 2  # BG/NBD: dropout only after a repeat purchase


def test_population_shape(year):
    sim, _ = year
    truths = list(sim.truth.values())
    n = len(truths)
    rates = [t.purchase_rate_per_year for t in truths]
    assert 2.5 < sum(rates) / n < 6.0
    assert max(rates) > 3 * sum(rates) / n  # heavy tail
    assert 0.17 < sum(t.dropout_prob for t in truths) / n < 0.33
    assert 60 < sum(t.mean_order_value for t in truths) / n < 130
    assert 0.15 < sum(t.engaged for t in truths) / n < 0.5
    joined = [t.joined_at for t in truths]
    assert min(joined) >= START and max(joined) < START + timedelta(days=90)
    assert [t.customer_id for t in truths][:2] == ["sim-000001", "sim-000002"]


def test_email_stops_after_unsubscribe_or_hard_bounce_and_opens_follow_delivery(year):
    _, events = year
    stopped: dict[str, datetime] = {}
    delivered: set[str] = set()
    opens = Counter()
    for _, cid, e in events:
        t, d = e["type"], e["data"]
        if t in CAMPAIGN_TYPES and cid in stopped:
            pytest.fail(f"{cid} got {t} after leaving the list")
        if t == "Unsubscribed" or (t == "Email Bounced" and d["bounce_type"] == "hard"):
            stopped.setdefault(cid, ts(e))
        if t == "Email Delivered":
            delivered.add(d["email_id"])
        if t in ("Email Opened", "Email Link Clicked"):
            assert d["email_id"] in delivered
            opens[t] += 1
    assert stopped
    assert 0 < opens["Email Link Clicked"] < opens["Email Opened"]


def test_engaged_and_alive_open_more(year):
    sim, events = year
    sent = Counter()
    opened = Counter()
    for _, cid, e in events:
        if e["type"] not in ("Email Delivered", "Email Opened"):
            continue
        truth = sim.truth[cid]
        # Group by state at the campaign's send time (the email id carries the campaign date).
        alive = truth.died_at is None or ts(e) - timedelta(days=3) < truth.died_at
        group = "dead" if not alive else ("engaged" if truth.engaged else "other")
        (sent if e["type"] == "Email Delivered" else opened)[group] += 1
    rate = {g: opened[g] / sent[g] for g in sent}
    assert rate["engaged"] > rate["other"] > rate["dead"]
    assert rate["dead"] < 0.12


def test_community_and_surveys_mostly_engaged(year):
    sim, events = year
    by_engaged = Counter()
    for _, cid, e in events:
        if e["type"] in ("Community Joined", "Survey Answered"):
            by_engaged[sim.truth[cid].engaged] += 1
    assert by_engaged[True] > 3 * by_engaged[False]


# -- bad inputs --------------------------------------------------------------------------------------


def classify(role: str, key: bytes, value: bytes) -> str:
    """Which bad kind a record is, or 'valid'."""
    if len(value) > 1024 * 1024:
        return "oversized"
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return "non_json"
    if not isinstance(doc, dict):
        return "not_an_object"
    if not doc.get("subject"):
        return "missing_subject"
    if doc.get("type") not in TOPIC_OF:
        return "unknown_type"
    if TOPIC_OF[doc["type"]] != role:
        return "wrong_topic"
    if doc["time"][:4] in ("2999", "1900"):
        return "absurd_time"
    d, t = doc["data"], doc["type"]
    if t in ("Order Completed", "Order Refunded") and d["total"] <= 0 and (t == "Order Refunded" or d["total"] < 0):
        return "schema_violation"
    if t == "Review Posted" and not 1 <= d["rating"] <= 5:
        return "schema_violation"
    if not REQUIRED_DATA[t] <= set(d):
        return "schema_violation"
    return "valid"


def test_invalid_fraction_produces_every_bad_kind_and_keeps_valid_stream():
    until = START + timedelta(days=120)
    clean = [(r, c.encode(), e) for r, c, e in ShopSimulator(150, START, seed=21).events(until)]
    sim = ShopSimulator(150, START, seed=21, invalid_fraction=0.2)
    records = list(sim.raw_events(until))
    kinds = Counter()
    valid = []
    for role, key, value in records:
        assert isinstance(key, bytes) and isinstance(value, bytes)
        kind = classify(role, key, value)
        kinds[kind] += 1
        if kind == "valid":
            valid.append((role, key, json.loads(value)))
    assert set(kinds) == set(BAD_KINDS) | {"valid"}, kinds
    assert {k: v for k, v in kinds.items() if k != "valid"} == sim.bad_counts
    bad = len(records) - kinds["valid"]
    assert 0.17 < bad / len(records) < 0.23
    # Every valid event is still there, unchanged, in order, with the right key.
    assert valid == clean
    # Bad ids never collide with valid ones (so dedup cannot swallow a valid event).
    valid_ids = {e["id"] for _, _, e in valid}
    for role, key, value in records:
        if classify(role, key, value) in ("missing_subject", "unknown_type", "wrong_topic", "absurd_time"):
            assert json.loads(value)["id"] not in valid_ids


def test_non_json_includes_gzip_and_truncated():
    sim = ShopSimulator(100, START, seed=8, invalid_fraction=0.3)
    samples = [v for r, k, v in sim.raw_events(START + timedelta(days=60)) if classify(r, k, v) == "non_json"]
    assert any(v.startswith(b"\x1f\x8b") and json.loads(gzip.decompress(v)) for v in samples)
    assert any(v.startswith(b"{") for v in samples)


def test_zero_invalid_fraction_is_all_valid_compact_json():
    sim = ShopSimulator(50, START, seed=1)
    for role, key, value in sim.raw_events(START + timedelta(days=60)):
        assert classify(role, key, value) == "valid"
        assert b", " not in value[:50] and b": " not in value[:50]  # compact separators
        assert json.loads(value)["subject"].encode() == key


def test_bad_arguments_rejected():
    with pytest.raises(ValueError):
        ShopSimulator(10, START, invalid_fraction=1.0)
    with pytest.raises(ValueError):
        ShopSimulator(-1, START)

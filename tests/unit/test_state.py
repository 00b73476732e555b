"""state.apply: order independence, idempotence, refunds, same-day orders, folding."""

from __future__ import annotations

import copy

import orjson
import pytest
from corekit import DAY, T0, assert_features_close, features_at, fold, order, other, refund
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.core.config import ScoringConfig
from streamer.core.events import Event
from streamer.core.features import compute
from streamer.core.state import STATE_VERSION, CustomerState, apply, is_duplicate

CFG = ScoringConfig()
NOW = T0 + 400 * DAY  # after every generated event

# -- a strategy for a set of valid events of one customer -------------------------------------

money = st.integers(min_value=0, max_value=200_000).map(lambda cents: cents / 100)
times = st.builds(lambda d, s: T0 + d * DAY + s, st.integers(0, 90), st.integers(0, 86_399))

OTHER_TYPES = {
    "Email Delivered": {"email_id": "m"},
    "Email Opened": {"email_id": "m"},
    "Email Link Clicked": {"email_id": "m", "link_url": "https://x"},
    "Email Bounced": None,  # bounce type drawn
    "Unsubscribed": {},
    "Community Joined": {},
    "Community Posted": {"post_id": "p"},
    "Community Replied": {"post_id": "p", "reply_id": "r"},
    "Answer Accepted": {"post_id": "p", "answer_id": "a"},
    "Review Posted": None,  # rating drawn
    "Referral Made": {"referral_code": "ref"},
}


@st.composite
def order_events(draw, n_max: int = 8, day_max: int = 90) -> list[Event]:
    n = draw(st.integers(0, n_max))
    out = []
    for i in range(n):
        total = draw(money)
        margin = draw(st.floats(min_value=-total, max_value=total, allow_nan=False).map(lambda m: round(m, 2)))
        t = T0 + draw(st.integers(0, day_max)) * DAY + draw(st.integers(0, 86_399))
        out.append(order(f"o{i}", t, total, margin, draw(money), draw(st.booleans()), draw(st.booleans())))
    return out


@st.composite
def histories(draw) -> list[Event]:
    """Orders, refunds (also of orders never seen), email / community / survey events."""
    orders = draw(order_events())
    events: list[Event] = list(orders)
    order_ids = [e.data["order_id"] for e in orders] + ["ghost"]
    for i in range(draw(st.integers(0, 5))):
        amount = draw(st.integers(1, 150_000)) / 100
        events.append(refund(f"rf{i}", draw(st.sampled_from(order_ids)), draw(times), amount))
    for i in range(draw(st.integers(0, 12))):
        type_name = draw(st.sampled_from(sorted(OTHER_TYPES)))
        data = OTHER_TYPES[type_name]
        if type_name == "Email Bounced":
            data = {"email_id": "m", "bounce_type": draw(st.sampled_from(["hard", "soft"]))}
        elif type_name == "Review Posted":
            data = {"product_id": "p", "rating": draw(st.integers(1, 5))}
        events.append(other(f"x{i}", type_name, draw(times), dict(data)))
    # Surveys at distinct times (equal-time surveys are a tie the state breaks by arrival).
    survey_times = draw(st.lists(times, max_size=3, unique=True))
    for i, t in enumerate(survey_times):
        events.append(other(f"s{i}", "Survey Answered", t, {"survey_id": "s", "goal": f"goal {i}"}))
    return events


def comparable(state: CustomerState) -> dict:
    doc = state.to_dict()
    doc["seen"] = sorted(doc["seen"])
    return doc


# -- (a) any permutation gives the same state ------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_permutation_gives_the_same_state(data):
    events = data.draw(histories())
    permuted = data.draw(st.permutations(events))
    a, b = fold(events), fold(permuted)
    fa, fb = compute(a, NOW, CFG), compute(b, NOW, CFG)
    # Exactly equal, not merely close: published inputs and scores are rounded, and a last-bit
    # difference can land on either side of a rounding boundary.
    assert fa == fb
    assert comparable(a) == comparable(b)
    assert a.last_event_at == b.last_event_at == max((e.time for e in events), default=0.0)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_permutation_features_match_a_direct_computation(data):
    """Revenue / margin / orders / transactions against a computation written out here."""
    events = data.draw(histories())
    state = fold(data.draw(st.permutations(events)))
    f = compute(state, NOW, CFG)
    orders = {e.data["order_id"]: e for e in events if e.type == "Order Completed"}
    refunded: dict[str, float] = {}
    for e in events:
        if e.type == "Order Refunded":
            refunded[e.data["order_id"]] = refunded.get(e.data["order_id"], 0.0) + e.data["total"]
    revenue = margin = 0.0
    for oid, e in orders.items():
        total = e.data["total"]
        back = min(refunded.get(oid, 0.0), total)
        revenue += total - back
        margin += e.data["margin"] * ((total - back) / total if total > 0 else 1.0)
    # A fully refunded order was returned: no purchase (its value above is 0 anyway).
    bought = {oid: e for oid, e in orders.items() if not (e.data["total"] > 0 and refunded.get(oid, 0.0) >= e.data["total"])}
    assert f.orders == len(bought)
    assert f.transactions == len({int(e.time // DAY) for e in bought.values()})
    assert f.revenue == pytest.approx(revenue, rel=1e-9, abs=1e-9)
    assert f.margin == pytest.approx(margin, rel=1e-9, abs=1e-9)
    assert f.discount == pytest.approx(sum(e.data["discount"] for e in bought.values()), abs=1e-9)
    assert f.bought_basic == any(e.data["basic"] for e in bought.values())
    assert f.bought_advanced == any(e.data["advanced"] for e in bought.values())
    others = [e for e in events if e.type not in ("Order Completed", "Order Refunded")]
    assert f.emails_opened == sum(e.type == "Email Opened" for e in others)
    assert f.emails_clicked == sum(e.type == "Email Link Clicked" for e in others)
    assert f.referrals == sum(e.type == "Referral Made" for e in others)
    assert f.community_actions == sum(
        e.type in ("Community Posted", "Community Replied", "Answer Accepted", "Review Posted") for e in others
    )
    assert f.unsubscribed == any(e.type == "Unsubscribed" for e in others)
    assert f.hard_bounced == any(e.type == "Email Bounced" and e.data["bounce_type"] == "hard" for e in others)
    assert f.has_survey == any(e.type == "Survey Answered" for e in others)


# -- (b) idempotence ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_applying_any_event_twice_changes_nothing(data):
    events = data.draw(histories())
    if not events:
        return
    state = fold(events)
    again = data.draw(st.sampled_from(events))
    before = copy.deepcopy(state.to_dict())
    assert is_duplicate(state, again)
    after = apply(state, again, CFG)
    assert after.to_dict() == before
    assert state.to_dict() == before

    # A redelivery right after the original, anywhere in the stream, is also a no-op.
    i = data.draw(st.integers(0, len(events) - 1))
    doubled = events[: i + 1] + [events[i]] + events[i + 1 :]
    assert fold(doubled).to_dict() == fold(events).to_dict()


def test_apply_does_not_modify_its_input():
    state = fold([order("o1", T0, 100.0, 30.0)])
    before = copy.deepcopy(state.to_dict())
    new = apply(state, order("o2", T0 + DAY, 50.0, 10.0), CFG)
    assert state.to_dict() == before
    assert set(new.orders) == {"o1", "o2"}


def test_same_order_id_under_another_event_id_is_a_duplicate():
    state = fold([order("o1", T0, 100.0, 30.0, eid="e1"), order("o1", T0 + 5, 999.0, 1.0, eid="e2")])
    assert state.orders == {"o1": [T0, 100.0, 30.0, 0.0, 1]}


def test_refund_dedup_is_by_event_id():
    state = fold([order("o1", T0, 100.0, 30.0), refund("r1", "o1", T0 + DAY, 10.0), refund("r1", "o1", T0 + DAY, 10.0)])
    assert state.refunds == {"o1": {"/test r1": 10.0}}  # keyed by (source, id)
    state = apply(state, refund("r2", "o1", T0 + 2 * DAY, 10.0), CFG)
    f = compute(state, T0 + 3 * DAY, CFG)
    assert f.revenue == pytest.approx(80.0)


def test_seen_ids_are_bounded_newest_last():
    cfg = ScoringConfig(dedup_ids_kept=4)
    events = [other(f"e{i}", "Email Delivered", T0 + i, {"email_id": "m"}) for i in range(6)]
    state = fold(events, cfg)
    assert state.seen == ["/test e2", "/test e3", "/test e4", "/test e5"]
    assert state.email["delivered"] == 6
    assert apply(state, events[5], cfg).email["delivered"] == 6
    assert not is_duplicate(state, events[0])  # evicted: the documented limit of the window


def test_the_same_id_from_two_producers_is_two_events():
    """Ids are unique per source (CloudEvents): the forum's post 42 is not the mail service's
    open 42, nor the support desk's refund r-1 the shop's."""
    opened = other("42", "Email Opened", T0, {"email_id": "m"})
    posted = Event(id="42", type="Community Posted", time=T0 + 1, customer="c1", data={"post_id": "p", "topic": "t"}, source="/forum")
    shop = refund("r-1", "o1", T0 + DAY, 10.0)
    desk = Event(id="r-1", type="Order Refunded", time=T0 + DAY, customer="c1", data={"order_id": "o1", "total": 5.0}, source="/support")
    state = fold([order("o1", T0, 100.0, 30.0), opened, posted, shop, desk])
    assert state.email["opened"] == 1 and state.community["posts"] == 1
    assert compute(state, T0 + 2 * DAY, CFG).revenue == pytest.approx(85.0)
    assert all(is_duplicate(state, e) for e in (opened, posted, shop, desk))


def test_bare_ids_of_states_written_before_source_keys_still_catch_a_redelivery():
    state = fold([order("o1", T0, 100.0, 30.0)])
    state.seen, state.refunds = ["e1"], {"o1": {"r1": 10.0}}  # as an earlier version stored them
    assert is_duplicate(state, other("e1", "Email Opened", T0, {"email_id": "m"}))
    assert is_duplicate(state, refund("r1", "o1", T0 + DAY, 10.0))


def test_refunds_kept_are_bounded_and_the_one_past_the_bound_is_refused():
    from streamer.errors import InvalidEvent

    cfg = ScoringConfig(max_refunds_kept=3)
    state = fold([order("o1", T0, 100.0, 30.0), *(refund(f"r{i}", f"never-seen-{i}", T0 + i, 1.0) for i in range(3))], cfg)
    with pytest.raises(InvalidEvent) as refused:
        apply(state, refund("r9", "o1", T0 + DAY, 1.0), cfg)
    assert refused.value.reason == "absurd_value" and "at most 3" in refused.value.detail
    assert sum(map(len, state.refunds.values())) == 3


def test_a_refund_of_an_archived_order_comes_off_the_archive():
    """Refunded after its order was folded (more than max_orders_kept orders), the refund
    used to be kept under the order's id and never counted."""
    orders = [order(f"o{i}", T0 + i * DAY, 100.0, 30.0) for i in range(7)]
    late = refund("r0", "o0", T0 + 10 * DAY, 40.0)
    early = fold([orders[0], refund("r0", "o0", T0 + 0.5 * DAY, 40.0), *orders[1:]], SMALL)
    after = fold([*orders, late], SMALL)
    assert "o0" in after.archived_ids and "o0" not in after.refunds
    f_after, f_early = compute(after, T0 + 20 * DAY, SMALL), compute(early, T0 + 20 * DAY, SMALL)
    # The same margin rate on every order: the archive's average is the order's own.
    assert (f_early.revenue, f_early.margin) == pytest.approx((660.0, 198.0))
    assert (f_after.revenue, f_after.margin) == pytest.approx((660.0, 198.0))
    assert is_duplicate(after, late) and apply(after, late, SMALL) is after


def test_a_refund_of_an_archived_order_is_capped_by_that_order_as_before_the_fold():
    """A refund larger than its folded order (or a second one of the same order) took the
    whole archive down with it: 10 orders of 100 became 0 of revenue. Now it takes what that
    order still had, as the same refund would before the fold."""
    orders = [order(f"o{i}", T0 + i * DAY, 100.0, 30.0) for i in range(12)]
    before_fold = fold([orders[0], refund("r0", "o0", T0 + 0.5 * DAY, 1e7), *orders[1:]], SMALL)
    after_fold = fold([*orders, refund("r0", "o0", T0 + 20 * DAY, 1e7)], SMALL)
    assert "o0" in after_fold.archived_ids
    f_before, f_after = compute(before_fold, T0 + 30 * DAY, SMALL), compute(after_fold, T0 + 30 * DAY, SMALL)
    assert f_after.revenue == pytest.approx(1100.0) and f_before.revenue == pytest.approx(1100.0)
    # Partial refunds of one folded order add up to at most that order.
    parts = fold([*orders, refund("ra", "o1", T0 + 20 * DAY, 60.0), refund("rb", "o1", T0 + 21 * DAY, 60.0)], SMALL)
    assert compute(parts, T0 + 30 * DAY, SMALL).revenue == pytest.approx(1100.0)
    assert parts.archived_left[parts.archived_ids.index("o1")] == 0.0
    # The state round-trips; one stored before it kept what is left caps by the archive only.
    assert CustomerState.from_bytes(parts.to_bytes()) == parts
    old = orjson.loads(after_fold.to_bytes("none"))
    del old["archived_left"]
    legacy = apply(CustomerState.from_bytes(orjson.dumps(old)), refund("r1", "o1", T0 + 22 * DAY, 50.0), SMALL)
    assert legacy.archived_left == [] and legacy.archive[1] == pytest.approx(after_fold.archive[1] - 50.0)


def test_a_refund_redelivered_after_its_order_was_folded_is_still_a_duplicate():
    """Applied before the fold, the refund was kept under its order, and that entry went with
    the fold: its redelivery came off the archive a second time."""
    orders = [order(f"o{i}", T0 + i * DAY, 100.0, 30.0) for i in range(12)]
    first = refund("r0", "o0", T0 + 0.5 * DAY, 40.0)
    state = fold([orders[0], first, *orders[1:]], SMALL)
    assert "o0" in state.archived_ids and "o0" not in state.refunds
    assert is_duplicate(state, first) and apply(state, first, SMALL) is state
    assert compute(state, T0 + 30 * DAY, SMALL).revenue == pytest.approx(1160.0)


def test_unknown_type_raises():
    with pytest.raises(ValueError, match="no state handler"):
        apply(CustomerState("c1"), other("x", "Cart Viewed", T0), CFG)


# -- (c) refunds -------------------------------------------------------------------------------


def test_refund_before_its_order_gives_the_same_features():
    o, r = order("o1", T0 + DAY, 200.0, 60.0), refund("r1", "o1", T0 + 3 * DAY, 50.0)
    now = T0 + 10 * DAY
    late_order, in_order = features_at([r, o], now), features_at([o, r], now)
    assert_features_close(late_order, in_order)
    assert (in_order.revenue, in_order.margin, in_order.orders) == (150.0, 45.0, 1)


def test_refund_of_unseen_order_counts_nothing_yet():
    f = features_at([refund("r1", "o1", T0, 50.0)], T0 + DAY)
    assert (f.orders, f.revenue, f.margin, f.transactions, f.last_order_at) == (0, 0.0, 0.0, 0, None)


def test_partial_refunds_reduce_margin_proportionally():
    events = [order("o1", T0, 200.0, 60.0), refund("r1", "o1", T0 + DAY, 50.0), refund("r2", "o1", T0 + 2 * DAY, 30.0)]
    f = features_at(events, T0 + 5 * DAY)
    assert f.revenue == pytest.approx(120.0)
    assert f.margin == pytest.approx(60.0 * 120.0 / 200.0)  # 36
    assert f.margin_rate == pytest.approx(0.30)
    assert f.orders == 1 and f.transactions == 1
    assert f.aov == pytest.approx(120.0)


def test_partial_refund_of_a_loss_making_order_shrinks_the_loss():
    f = features_at([order("o1", T0, 100.0, -40.0), refund("r1", "o1", T0 + DAY, 25.0)], T0 + 2 * DAY)
    assert (f.revenue, f.margin) == (pytest.approx(75.0), pytest.approx(-30.0))


def test_refunds_beyond_the_order_total_cap_at_the_total():
    events = [
        order("o1", T0, 200.0, 60.0),
        order("o2", T0 + DAY, 50.0, 20.0),
        refund("r1", "o1", T0 + 2 * DAY, 150.0),
        refund("r2", "o1", T0 + 3 * DAY, 100.0),  # 250 refunded on a 200 order
    ]
    f = features_at(events, T0 + 5 * DAY)
    assert f.revenue == pytest.approx(50.0)  # o1 counts 0, never negative
    assert f.margin == pytest.approx(20.0)
    assert f.orders == 1 and f.transactions == 1  # o1, fully refunded, was returned: no purchase
    assert f.first_order_at == T0 + DAY


def test_a_fully_refunded_order_is_no_purchase_but_a_partly_refunded_one_is():
    events = [order("o1", T0, 100.0, 30.0), refund("r1", "o1", T0 + DAY, 100.0)]
    f = features_at(events, T0 + 5 * DAY)
    assert (f.orders, f.transactions, f.first_order_at, f.revenue, f.margin) == (0, 0, None, 0.0, 0.0)
    partly = features_at([order("o1", T0, 100.0, 30.0), refund("r1", "o1", T0 + DAY, 99.99)], T0 + 5 * DAY)
    assert (partly.orders, partly.first_order_at) == (1, T0) and partly.revenue == pytest.approx(0.01)


def test_refund_of_a_zero_total_order_changes_nothing():
    f = features_at([order("o1", T0, 0.0, -5.0), refund("r1", "o1", T0 + DAY, 10.0)], T0 + 2 * DAY)
    assert (f.revenue, f.margin) == (0.0, -5.0)


# -- (d) same-day orders -----------------------------------------------------------------------


def test_same_utc_day_orders_are_one_transaction_but_all_revenue():
    day = T0 + 59 * DAY  # 2025-03-01 00:00:00Z
    events = [
        order("a", day, 100.0, 30.0, discount=5.0),
        order("b", day + 12 * 3600, 40.0, 10.0, advanced=True, basic=False),
        order("c", day + DAY - 1, 10.0, 2.0),  # 23:59:59
    ]
    f = features_at(events, day + 2 * DAY)
    assert (f.orders, f.transactions, f.repeat_transactions) == (3, 1, 0)
    assert f.revenue == pytest.approx(150.0)
    assert f.margin == pytest.approx(42.0)
    assert f.discount == pytest.approx(5.0)
    assert f.aov == pytest.approx(50.0)
    assert (f.first_order_at, f.last_order_at, f.previous_order_at) == (day, day + DAY - 1, None)
    assert (f.bought_basic, f.bought_advanced) == (True, True)

    f2 = features_at(events + [order("d", day + DAY, 5.0, 1.0)], day + 2 * DAY)  # 03-02 00:00:00
    assert (f2.orders, f2.transactions, f2.repeat_transactions) == (4, 2, 1)
    assert f2.previous_order_at == day + DAY - 1  # the latest order of the previous purchase day


def test_day_boundaries_are_utc():
    # 23:30 and 00:30 UTC are two days even though they are one day in UTC-2.
    f = features_at([order("a", T0 + DAY - 1800, 10.0, 1.0), order("b", T0 + DAY + 1800, 10.0, 1.0)], T0 + 2 * DAY)
    assert f.transactions == 2


# -- (e) folding beyond max_orders_kept ----------------------------------------------------------

SMALL = ScoringConfig(max_orders_kept=5)
BIG = ScoringConfig(max_orders_kept=10_000)


def test_folding_keeps_totals_exact():
    events: list[Event] = []
    for i in range(23):
        # Every third order shares a day with the previous one.
        t = T0 + (i - (i % 3 == 2)) * 3 * DAY + 3600 * (i % 3)
        events.append(order(f"o{i:02d}", t, 10.0 + i, 2.0 + i / 4, discount=1.0, basic=i == 0, advanced=i > 0))
        if i % 4 == 1:
            events.append(refund(f"r{i}", f"o{i:02d}", t + 60, 5.0))
    state = fold(events, SMALL)
    assert len(state.orders) == 5
    assert state.archive[0] == 18
    now = T0 + 80 * DAY
    small, big = compute(state, now, SMALL), compute(fold(events, BIG), now, BIG)
    assert small.orders == 23
    assert small.revenue == pytest.approx(sum(10.0 + i for i in range(23)) - 5.0 * 6)
    expected_margin = sum((2.0 + i / 4) * ((5.0 + i) / (10.0 + i) if i % 4 == 1 else 1.0) for i in range(23))
    assert small.margin == pytest.approx(expected_margin)
    assert small.discount == pytest.approx(23.0)
    assert small.transactions == big.transactions == len({int(e.time // DAY) for e in events if e.type == "Order Completed"})
    # Per-order flags and the loyalty window only see kept orders, by design.
    assert_features_close(small, big, skip=("bought_basic", "purchase_days_in_loyal_window", "loyal_until"))
    assert (small.bought_basic, big.bought_basic) == (False, True)  # the one basic order was folded
    assert small.purchase_days_in_loyal_window == 4  # the 5 kept orders span 4 purchase days


def test_folding_counts_each_archived_day_once():
    """Regression: a day whose first order was folded while its second was still kept."""
    events = [
        order("a", T0 + 1 * DAY, 10.0, 1.0),
        order("d1", T0 + 5 * DAY + 36_000, 10.0, 1.0),
        order("d2", T0 + 5 * DAY + 39_600, 10.0, 1.0),
        order("e", T0 + 9 * DAY, 10.0, 1.0),
        order("f", T0 + 12 * DAY, 10.0, 1.0),
    ]
    cfg = ScoringConfig(max_orders_kept=3)
    f = compute(fold(events, cfg), T0 + 20 * DAY, cfg)
    assert (f.orders, f.transactions) == (5, 4)  # days 1, 5, 9, 12


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_folding_in_time_order_matches_unbounded_state(data):
    orders = sorted(data.draw(order_events(n_max=20, day_max=40)), key=lambda e: (e.time, e.data["order_id"]))
    events: list[Event] = []
    for i, o in enumerate(orders):
        events.append(o)
        if data.draw(st.booleans()):  # refunds before the order is folded are netted into the archive
            events.append(refund(f"r{i}", o.data["order_id"], o.time + 1, data.draw(st.integers(1, 100_000)) / 100))
    now = T0 + 60 * DAY
    small, big = compute(fold(events, SMALL), now, SMALL), compute(fold(events, BIG), now, BIG)
    refunded = {e.data["order_id"]: e.data["total"] for e in events if e.type == "Order Refunded"}
    bought = [o for o in orders if not 0 < o.data["total"] <= refunded.get(o.data["order_id"], 0.0)]  # fully refunded: no purchase
    assert small.orders == big.orders == len(bought)
    # Flags and the loyalty window only see kept orders, by design.
    assert_features_close(
        small, big, skip=("bought_basic", "bought_advanced", "purchase_days_in_loyal_window", "loyal_until")
    )


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_folding_totals_are_exact_in_any_arrival_order(data):
    orders = data.draw(order_events(n_max=20, day_max=40))
    permuted = data.draw(st.permutations(orders))
    f = compute(fold(permuted, SMALL), T0 + 60 * DAY, SMALL)
    assert f.orders == len(orders)
    assert f.revenue == pytest.approx(sum(o.data["total"] for o in orders), rel=1e-9, abs=1e-9)
    assert f.margin == pytest.approx(sum(o.data["margin"] for o in orders), rel=1e-9, abs=1e-9)
    if orders:
        assert f.first_order_at == min(o.time for o in orders)
        assert f.last_order_at == max(o.time for o in orders)


# -- other handlers and serialisation -----------------------------------------------------------


def test_email_and_community_counters():
    events = [
        other("e1", "Email Delivered", T0, {"email_id": "m"}),
        other("e2", "Email Opened", T0 + 50, {"email_id": "m"}),
        other("e3", "Email Link Clicked", T0 + 20, {"email_id": "m", "link_url": "u"}),
        other("e4", "Email Bounced", T0 + 30, {"email_id": "m", "bounce_type": "soft"}),
        other("e5", "Email Bounced", T0 + 40, {"email_id": "m", "bounce_type": "hard"}),
        other("e6", "Unsubscribed", T0 + 60),
        other("c1", "Community Joined", T0 + 500),
        other("c2", "Community Joined", T0 + 100),
        other("c3", "Review Posted", T0 + 300, {"product_id": "p", "rating": 4}),
        other("c4", "Review Posted", T0 + 200, {"product_id": "p", "rating": 2}),
        other("c5", "Referral Made", T0 + 250, {"referral_code": "x"}),
        other("c6", "Community Posted", T0 + 260, {"post_id": "p"}),
    ]
    state = fold(events)
    assert state.email == {
        "first_at": T0, "delivered": 1, "opened": 1, "clicked": 1, "last_engaged_at": T0 + 50,
        "soft_bounces": 1, "hard_bounced": True, "unsubscribed": True,
    }
    assert state.community == {
        "joined_at": T0 + 100, "reviews": 2, "rating_sum": 6, "last_active_at": T0 + 300, "referrals": 1, "posts": 1,
    }
    assert state.last_event_at == T0 + 500
    f = compute(state, T0 + DAY, CFG)
    assert (f.emails_opened, f.emails_clicked, f.hard_bounced, f.unsubscribed) == (1, 1, True, True)
    assert (f.community_actions, f.referrals, f.orders, f.has_survey) == (3, 1, 0, False)


def test_newest_survey_wins_by_event_time():
    newer = other("s2", "Survey Answered", T0 + 2 * DAY, {"survey_id": "s", "goal": "record", "preferences": ["vinyl"]})
    older = other("s1", "Survey Answered", T0 + DAY, {"survey_id": "s", "problem": "time"})
    expected = {"at": T0 + 2 * DAY, "goal": "record", "preferences": ["vinyl"]}
    assert fold([older, newer]).survey == expected
    assert fold([newer, older]).survey == expected


def test_state_roundtrip_and_version():
    state = fold([order("o1", T0, 12.5, 3.25), refund("r1", "o1", T0 + 1, 2.5), other("e1", "Email Opened", T0 + 2, {"email_id": "m"})])
    state.segments = {"lifecycle": "new", "value_tier": None}
    state.value, state.next_due, state.partition = 4.5, T0 + 100.0, 7
    back = CustomerState.from_bytes(state.to_bytes())
    assert back == state
    assert back.v == STATE_VERSION
    doc = state.to_dict()
    doc["v"] = STATE_VERSION + 1
    import orjson

    with pytest.raises(ValueError, match="unsupported state version"):
        CustomerState.from_bytes(orjson.dumps(doc))


def test_stored_states_are_zstd_and_deflated_and_plain_json_ones_still_read():
    import orjson
    import zstandard

    from streamer.core.state import DEFLATED_STATE, STATE_ZDICT, ZSTD_MAGIC

    state = fold([order("o1", T0, 12.5, 3.25), order("o2", T0 + DAY, 40.0, 10.0), other("e1", "Email Opened", T0 + 2, {"email_id": "m"})])
    state.segments = {"lifecycle": "active", "value_tier": "mid", "churn_band": "low", "engagement": "engaged"}
    state.triggers = {"onboarding": [T0 + 60.0, T0 + 60.0]}
    stored = state.to_bytes()
    text = orjson.dumps(state)
    assert stored[:4] == ZSTD_MAGIC and len(stored) < 0.5 * len(text)
    # A standard zstd frame: any zstd reader with the dictionary gets the JSON back.
    plain_reader = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(STATE_ZDICT, dict_type=zstandard.DICT_TYPE_RAWCONTENT))
    assert plain_reader.decompress(stored) == text
    assert CustomerState.from_bytes(stored) == state
    deflated = state.to_bytes("deflate")  # STATE_COMPRESSION=deflate, what earlier versions wrote
    assert deflated[:1] == DEFLATED_STATE and len(deflated) < 0.5 * len(text)
    assert CustomerState.from_bytes(deflated) == state
    assert CustomerState.from_bytes(text) == state  # plain JSON, what the first versions wrote
    assert state.to_bytes("none") == text  # STATE_COMPRESSION=none
    with pytest.raises(ValueError, match="unknown state codec"):
        state.to_bytes("lz4")
    for broken in (stored[:-3], ZSTD_MAGIC + b"garbage", deflated[:-3], DEFLATED_STATE + b"garbage"):
        with pytest.raises(ValueError, match="corrupt state"):
            CustomerState.from_bytes(broken)


def test_a_zstd_frame_that_claims_a_huge_state_is_refused_before_allocating_it():
    import zstandard

    from streamer.core.state import ZSTD_MAGIC

    frame = zstandard.ZstdCompressor().compress(b" " * (17 * 1024 * 1024))  # says 17 MiB inside
    assert frame[:4] == ZSTD_MAGIC
    with pytest.raises(ValueError, match="corrupt state: a frame of 17825792 bytes"):
        CustomerState.from_bytes(frame)


def test_zstd_states_round_trip_from_several_threads():
    # The (de)compressors are per thread: states coded on other threads (a test, a tool) at
    # the same time come back whole.
    from concurrent.futures import ThreadPoolExecutor

    states = [fold([order(f"o{n}-{k}", T0 + k * DAY, 10.0 + k, 1.0) for k in range(n % 7 + 1)]) for n in range(400)]
    with ThreadPoolExecutor(4) as pool:
        back = list(pool.map(lambda s: CustomerState.from_bytes(s.to_bytes()), states))
    assert back == states


def test_redelivery_of_an_archived_order_is_still_a_duplicate() -> None:
    from corekit import DAY, T0, order

    from streamer.core.config import ScoringConfig
    from streamer.core.state import CustomerState, apply, is_duplicate

    cfg = ScoringConfig(max_orders_kept=3)
    events = [order(f"o{n}", T0 + n * DAY, 10.0) for n in range(6)]
    state = CustomerState("c1")
    for event in events:
        state = apply(state, event, cfg)
    assert "o0" not in state.orders and "o0" in state.archived_ids
    assert is_duplicate(state, events[0])
    assert apply(state, events[0], cfg) is state


def test_states_deflated_with_zlibs_default_window_still_read_and_large_states_round_trip():
    # Stored states use a 4 KiB window (a small compressor: see _DEFLATE_WBITS); what earlier
    # versions wrote with zlib's 32 KiB window must still read, and a state larger than the
    # window must still round-trip.
    import zlib

    import orjson

    from streamer.core.state import _DEFLATE_LEVEL, DEFLATED_STATE, STATE_ZDICT

    state = fold([order(f"o{n}", T0 + n * DAY, 12.5 + n, 3.25) for n in range(3)] + [other("e1", "Email Opened", T0 + 2, {"email_id": "m"})])
    state.triggers = {"onboarding": [T0 + 60.0, T0 + 60.0]}
    old = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, STATE_ZDICT)
    earlier = DEFLATED_STATE + old.compress(orjson.dumps(state)) + old.flush()
    assert CustomerState.from_bytes(earlier) == state
    # A usual state and the dictionary fit in the small window: the same bytes as before.
    assert state.to_bytes("deflate") == earlier

    big = fold([order(f"order-{n:04d}", T0 + n * DAY, 10.0 + n, 1.0) for n in range(40)])
    big.seen = [f"event-{n:06d}-{'x' * 40}" for n in range(200)]
    assert len(orjson.dumps(big)) > 3 * 4096
    assert CustomerState.from_bytes(big.to_bytes("deflate")) == big
    assert CustomerState.from_bytes(big.to_bytes()) == big


def test_the_purchase_day_before_the_last_survives_folding():
    """Regression: the previous purchase day (it marks a reactivation after a lapse-length gap)
    was lost when it was folded into the archive while the last day was partly kept."""
    events = [order("o0", T0, 10.0, 1.0)] + [order(f"o{i}", T0 + DAY + i * 60, 10.0, 1.0) for i in range(1, 5)]
    cfg = ScoringConfig(max_orders_kept=3)
    folded, kept = compute(fold(events, cfg), T0 + 9 * DAY, cfg), compute(fold(events, BIG), T0 + 9 * DAY, BIG)
    assert folded.previous_order_at == kept.previous_order_at == T0
    assert folded.transactions == kept.transactions == 2


def test_a_state_stored_before_the_archive_kept_its_previous_day_still_reads():
    old = orjson.loads(CustomerState("c1").to_bytes("none"))
    old["archive"] = [4, 40.0, 4.0, 0.0, 2, T0, T0 + DAY, 10.0]  # 8 fields, as stored until now
    state = CustomerState.from_bytes(orjson.dumps(old))
    assert state.archive == [4, 40.0, 4.0, 0.0, 2, T0, T0 + DAY, 10.0, 0.0]
    f = compute(state, T0 + 2 * DAY, ScoringConfig())
    assert (f.orders, f.transactions, f.previous_order_at) == (4, 2, None)  # unknown, as before

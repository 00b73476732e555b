"""Segment rules: lifecycle from concrete histories, next_change_at, partition ranks and value tiers."""

from __future__ import annotations

import math

import pytest
from corekit import DAY, T0, order, scored
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.config import ScoringConfig
from streamer.core.segments import TIMER_SLACK_S, PartitionRanks, lifecycle, next_change_at, value_tier

CFG = ScoringConfig()
H = 3600.0
RISK_DAYS_ONE_ORDER = 90 * math.log(0.6 * 0.75 / (0.4 * 0.25))  # p = 0.25, mean interval 90 days


def life(events, now, config=CFG):
    f, scores = scored(events, now, config)
    return lifecycle(f, scores, config).segment


def due(events, now, config=CFG):
    f, scores = scored(events, now, config)
    return next_change_at(f, scores, config)


def days(*offsets: float) -> list:
    return [order(f"o{i}", T0 + d * DAY, 50.0, 15.0) for i, d in enumerate(offsets)]


# -- lifecycle ---------------------------------------------------------------------------------


def test_no_orders_no_segment():
    f, scores = scored([], T0)
    a = lifecycle(f, scores, CFG)
    assert (a.segment, a.reason) == (None, "no orders")


def test_new():
    f, scores = scored(days(0), T0 + DAY)
    a = lifecycle(f, scores, CFG)
    assert (a.segment, a.reason) == ("new", "first order")


def test_several_orders_on_one_day_are_still_new():
    events = [order(f"o{i}", T0 + i * H, 10.0, 1.0) for i in range(4)]
    assert life(events, T0 + DAY) == "new"


def test_repeat():
    f, scores = scored(days(0, 20), T0 + 21 * DAY)
    a = lifecycle(f, scores, CFG)
    assert (a.segment, a.reason) == ("repeat", "2 purchase days")


def test_loyal():
    f, scores = scored(days(0, 20, 40), T0 + 41 * DAY)
    a = lifecycle(f, scores, CFG)
    assert (a.segment, a.reason) == ("loyal", "3 purchase days within 180 days")


def test_loyal_needs_the_purchase_days_inside_the_window():
    assert life(days(0, 100, 200), T0 + 201 * DAY) == "repeat"  # day 0 is 201 days ago
    assert life(days(0, 100, 179), T0 + 179.5 * DAY) == "loyal"


def test_at_risk_after_the_silence_the_model_predicts():
    assert life(days(0), T0 + (RISK_DAYS_ONE_ORDER - 0.01) * DAY) == "new"
    f, scores = scored(days(0), T0 + (RISK_DAYS_ONE_ORDER + 0.01) * DAY)
    a = lifecycle(f, scores, CFG)
    assert a.segment == "at_risk"
    assert a.reason.startswith("churn risk 0.60 ≥ 0.60: 135 days since the last order, usual interval 90 days")


def test_at_risk_beats_loyal():
    # Days 0, 5, 10: p = 0.8 / 5.2, mean interval (10 + 90) / 3 -> at risk ~70.3 days after day 10.
    p, mean = 0.8 / 5.2, 100 / 3
    risk_days = mean * math.log(0.6 * (1 - p) / (0.4 * p))
    assert life(days(0, 5, 10), T0 + (10 + risk_days - 0.01) * DAY) == "loyal"
    assert life(days(0, 5, 10), T0 + (10 + risk_days + 0.01) * DAY) == "at_risk"


def test_lapsed():
    assert life(days(0), T0 + 365 * DAY - 1) == "at_risk"
    f, scores = scored(days(0), T0 + 365 * DAY)
    a = lifecycle(f, scores, CFG)
    assert (a.segment, a.reason) == ("lapsed", "no order for 365 days (last on 2025-01-01)")
    assert life(days(0, 30, 60, 90), T0 + 500 * DAY) == "lapsed"


def test_reactivated():
    f, scores = scored(days(0, 400), T0 + 401 * DAY)
    a = lifecycle(f, scores, CFG)
    assert (a.segment, a.reason) == ("reactivated", "ordered again after 400 days without an order")
    assert life(days(0, 365), T0 + 366 * DAY) == "reactivated"  # exactly a lapse
    assert life(days(0, 364.9), T0 + 366 * DAY) == "repeat"


def test_reactivated_is_measured_from_the_previous_order_not_its_midnight():
    """Regression: a customer who never lapsed (364.5 days of silence) is not 'reactivated'."""
    first = T0 + 23 * H
    events = [order("o1", first, 50.0, 15.0), order("o2", first + 364.5 * DAY, 50.0, 15.0)]
    assert life(events[:1], first + 364.5 * DAY - 1) == "at_risk"
    assert life(events, first + 364.5 * DAY) == "repeat"


def test_reactivated_then_loyal():
    assert life(days(0, 400, 410, 420), T0 + 421 * DAY) == "loyal"


def test_custom_thresholds():
    cfg = ScoringConfig(lapse_days=30, loyal_orders=2)
    assert life(days(0, 10), T0 + 11 * DAY, cfg) == "loyal"
    assert life(days(0, 10), T0 + 40 * DAY, cfg) == "lapsed"
    assert life(days(0), T0 + DAY, ScoringConfig(at_risk_threshold=0.2)) == "at_risk"  # p = 0.25 already


# -- next_change_at --------------------------------------------------------------------------


def test_next_change_new_to_at_risk():
    first = T0 + 10 * H
    events = [order("o1", first, 50.0, 15.0)]
    at = due(events, first)
    assert at == pytest.approx(first + RISK_DAYS_ONE_ORDER * DAY + TIMER_SLACK_S, abs=1e-3)
    assert life(events, at - 2 * TIMER_SLACK_S) == "new"
    assert life(events, at) == "at_risk"
    # Evaluated later (but before the change), the same due time.
    assert due(events, first + 50 * DAY) == at


def test_next_change_at_risk_to_lapsed():
    events = days(0)
    at = due(events, T0 + 200 * DAY)
    assert at == T0 + 365 * DAY + TIMER_SLACK_S
    assert life(events, at - 2 * TIMER_SLACK_S) == "at_risk"
    assert life(events, at) == "lapsed"


def test_next_change_loyal_to_repeat():
    cfg = ScoringConfig(loyal_window_days=30)
    events = [order(f"o{i}", T0 + d * DAY + 12 * H, 50.0, 15.0) for i, d in enumerate((0, 5, 10))]
    at = due(events, T0 + 11 * DAY, cfg)
    assert at == T0 + 12 * H + 30 * DAY + TIMER_SLACK_S
    assert life(events, at - 2 * TIMER_SLACK_S, cfg) == "loyal"
    assert life(events, at, cfg) == "repeat"


def test_no_next_change_once_lapsed_or_without_orders():
    assert due(days(0), T0 + 400 * DAY) is None
    assert due([], T0) is None


@st.composite
def order_histories(draw):
    n = draw(st.integers(1, 7))
    offsets = sorted(draw(st.lists(st.floats(0, 800), min_size=n, max_size=n)))
    events = [order(f"o{i}", T0 + d * DAY, 50.0, 15.0) for i, d in enumerate(offsets)]
    now = T0 + (offsets[-1] + draw(st.floats(0, 500))) * DAY
    return events, now


@settings(max_examples=200, deadline=None)
@given(history=order_histories(), fractions=st.lists(st.floats(0, 1), min_size=1, max_size=5),
       loyal_window=st.sampled_from([30.0, 90.0, 180.0]))
def test_lifecycle_is_constant_until_the_next_change(history, fractions, loyal_window):
    """No segment change is missed: before the due time, lifecycle stays what it is at now."""
    cfg = ScoringConfig(loyal_window_days=loyal_window)
    events, now = history
    here = life(events, now, cfg)
    at = due(events, now, cfg)
    if at is None:
        assert life(events, now + 20 * 365 * DAY, cfg) == here
        return
    assert at > now
    boundary = at - TIMER_SLACK_S
    for x in fractions:
        t = now + x * max(boundary - 0.5 - now, 0.0)
        assert life(events, t, cfg) == here


# -- partition ranks and value tiers -----------------------------------------------------------


def test_partition_ranks():
    ranks = PartitionRanks()
    assert (len(ranks), ranks.quantile(5.0)) == (0, 0.0)
    for value in (10.0, 20.0, 30.0, 40.0):
        ranks.replace(None, value)
    assert len(ranks) == 4
    assert [ranks.quantile(v) for v in (5.0, 10.0, 25.0, 30.0, 40.0, 45.0)] == [0.0, 0.0, 0.5, 0.5, 0.75, 1.0]
    ranks.replace(10.0, 50.0)  # a customer moves to the top: its old value is gone
    assert len(ranks) == 4
    assert ranks.quantile(50.0) == 0.75
    assert ranks.quantile(20.0) == 0.0
    ranks.replace(20.0, None)
    assert len(ranks) == 3
    assert ranks.quantile(30.0) == 0.0
    ranks.replace(None, None)  # a customer without a value, and none now: nothing happens
    ranks.replace(99.0, None)  # a value that is not ranked is not removed in its neighbour's place
    assert ranks.values().tolist() == [30.0, 40.0, 50.0]
    ranks.extend([35.0, 5.0])
    assert ranks.values().tolist() == [5.0, 30.0, 35.0, 40.0, 50.0]


def test_partition_ranks_with_equal_values():
    ranks = PartitionRanks()
    for _ in "abc":
        ranks.replace(None, 7.0)
    ranks.replace(7.0, 1.0)
    assert len(ranks) == 3
    assert ranks.quantile(7.0) == pytest.approx(1 / 3)
    assert ranks.quantile(1.0) == 0.0


def populated(n: int) -> PartitionRanks:
    ranks = PartitionRanks()
    for i in range(n):
        ranks.replace(None, float(i))
    return ranks


def test_value_tier_unranked_under_the_min_population():
    a = value_tier(1e6, populated(49), CFG)
    assert (a.segment, a.reason) == ("unranked", "fewer than 50 scored customers to rank against")
    assert value_tier(1e6, populated(50), CFG).segment == "top"
    assert value_tier(0.0, populated(4), ScoringConfig(value_tier_min_population=5)).segment == "unranked"


@pytest.mark.parametrize(
    ("clv", "tier"),
    [(99.0, "top"), (90.0, "top"), (89.0, "high"), (60.0, "high"), (59.5, "high"), (59.0, "medium"), (30.0, "medium"),
     (29.0, "low"), (0.0, "low"), (-5.0, "low")],
)
def test_value_tiers_by_quantile(clv, tier):
    assert value_tier(clv, populated(100), CFG).segment == tier


def test_value_tier_reason():
    assert value_tier(75.0, populated(100), CFG).reason == "CLV 75.00 ranks above 75% of customers"


def test_custom_value_tiers():
    cfg = ScoringConfig(value_tiers=(("vip", 0.5), ("rest", 0.0)), value_tier_min_population=1)
    assert value_tier(1.0, populated(2), cfg).segment == "vip"
    assert value_tier(0.5, populated(2), cfg).segment == "vip"  # above 1 of 2
    assert value_tier(0.0, populated(2), cfg).segment == "rest"


def test_value_tier_hysteresis_keeps_a_customer_near_a_boundary() -> None:
    from streamer.core.segments import PartitionRanks, value_tier

    cfg = ScoringConfig(value_tier_min_population=1, value_tier_hysteresis=0.05)
    ranks = PartitionRanks()
    for n in range(100):
        ranks.replace(None, float(n))
    # Quantile 0.58: "medium" by the cut at 0.6, but a "high" customer keeps "high" (band 0.55+).
    assert value_tier(58.0, ranks, cfg).segment == "medium"
    assert value_tier(58.0, ranks, cfg, current="high").segment == "high"
    # Beyond the widened band the tier does change.
    assert value_tier(54.0, ranks, cfg, current="high").segment == "medium"
    # Upward too: a "medium" customer at 0.62 stays "medium"; at 0.66 it becomes "high".
    assert value_tier(62.0, ranks, cfg, current="medium").segment == "medium"
    assert value_tier(66.0, ranks, cfg, current="medium").segment == "high"
    # The top tier has no ceiling.
    assert value_tier(99.0, ranks, cfg, current="top").segment == "top"

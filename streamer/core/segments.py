"""Segment rules: which segment of each family a customer is in, and why.

Rules are pure functions of features and scores at a moment, so the same history gives the
same segments whether it is replayed or lived through. :func:`next_change_at` tells when a
customer's lifecycle can change with *no* new event (at risk, lapse, end of loyalty), which
the engine keeps in a due-queue per partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from streamer.core.config import DAY, Bands, DayOf, ScoringConfig, utc_day
from streamer.core.features import Features
from streamer.core.scoring import days_until_risk
from streamer.core.value_ranks import PartitionRanks

LIFECYCLE = "lifecycle"
VALUE_TIER = "value_tier"
FAMILIES = (LIFECYCLE, VALUE_TIER)

#: Timers fire this long after the computed boundary, so the rule re-evaluated at the due
#: time is past the boundary despite float rounding.
TIMER_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class Assignment:
    segment: str | None
    reason: str


def format_date(t: float, day_of: DayOf = utc_day) -> str:
    """The date of epoch seconds ``t`` on the shop's calendar (``day_of``: UTC unless given),
    e.g. ``"2024-03-01"`` (reasons name dates often: one cached string per day instead of a
    datetime per call).

    >>> format_date(1709251200.0), format_date(1709337599.9)
    ('2024-03-01', '2024-03-01')
    >>> format_date(1709337599.9, ScoringConfig(purchase_day_timezone="Asia/Tokyo").day_of)
    '2024-03-02'
    """
    return _date_of_day(int(day_of(t)))


@lru_cache(maxsize=4096)
def _date_of_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).isoformat()


_EPOCH = date(1970, 1, 1)


def lifecycle(f: Features, scores: dict[str, float], config: ScoringConfig) -> Assignment:
    """new → repeat → loyal; at_risk and lapsed by silence; reactivated after a lapse."""
    if f.orders == 0 or f.last_order_at is None:
        return Assignment(None, "no orders")
    if f.recency_days >= config.lapse_days:
        return Assignment("lapsed", f"no order for {f.recency_days:.0f} days (last on {format_date(f.last_order_at, config.day_of)})")
    risk = scores["churn_risk"]
    if risk >= config.at_risk_threshold:
        return Assignment(
            "at_risk",
            f"churn risk {risk:.2f} ≥ {config.at_risk_threshold:.2f}: {f.recency_days:.0f} days since the last "
            f"order, usual interval {f.mean_interval_days:.0f} days",
        )
    if f.previous_order_at is not None and (f.last_order_at - f.previous_order_at) / DAY >= config.lapse_days:
        gap = (f.last_order_at - f.previous_order_at) / DAY
        return Assignment("reactivated", f"ordered again after {gap:.0f} days without an order")
    if f.purchase_days_in_loyal_window >= config.loyal_orders:
        return Assignment(
            "loyal", f"{f.purchase_days_in_loyal_window} purchase days within {config.loyal_window_days:.0f} days"
        )
    if f.transactions >= 2:
        return Assignment("repeat", f"{f.transactions} purchase days")
    return Assignment("new", "first order")


def next_change_at(f: Features, scores: dict[str, float], config: ScoringConfig) -> float | None:
    """Earliest event time after ``f.now`` at which :func:`lifecycle` may change on its own."""
    if f.orders == 0 or f.last_order_at is None:
        return None
    candidates = [f.last_order_at + config.lapse_days * DAY]
    risk_after = days_until_risk(config.at_risk_threshold, f.mean_interval_days, scores["dropout_probability"])
    candidates.append(f.last_order_at + risk_after * DAY)
    if f.loyal_until is not None:
        candidates.append(f.loyal_until)
    future = [c + TIMER_SLACK_S for c in candidates if c + TIMER_SLACK_S > f.now]
    return min(future) if future else None


def banded(value: float, bands: Bands, hysteresis: float, current: str | None) -> str:
    """The band of ``value`` (bands high to low, as (name, lowest value)), keeping ``current``
    while the value stays within that band widened by ``hysteresis`` on both sides — so a
    value hovering at a boundary does not flap between two bands.

    >>> bands = (("high", 0.6), ("medium", 0.3), ("low", 0.0))
    >>> banded(0.62, bands, 0.05, None), banded(0.62, bands, 0.05, "medium"), banded(0.66, bands, 0.05, "medium")
    ('high', 'medium', 'high')
    """
    ceiling = float("inf")
    for band, floor in bands:
        if band == current and floor - hysteresis <= value < ceiling + hysteresis:
            return band
        ceiling = floor
    for band, floor in bands:
        if value >= floor:
            return band
    return bands[-1][0]


def band_exit_above(bands: Bands, hysteresis: float, band: str) -> float | None:
    """The value at which a customer in ``band`` moves up a band (None in the top band)."""
    ceiling = None
    for name, floor in bands:
        if name == band:
            return None if ceiling is None else ceiling + hysteresis
        ceiling = floor
    return None


def value_tier(clv: float, ranks: PartitionRanks, config: ScoringConfig, current: str | None = None) -> Assignment:
    """Tier by CLV quantile in the partition, with hysteresis around the current tier.

    A customer keeps ``current`` while the quantile stays within that tier's band widened by
    ``value_tier_hysteresis`` on both sides, so a customer near a boundary does not flap
    between tiers as other customers' values move.
    """
    if len(ranks) < config.value_tier_min_population:
        return Assignment("unranked", f"fewer than {config.value_tier_min_population} scored customers to rank against")
    q = ranks.quantile(clv)
    tier = banded(q, config.value_tiers, config.value_tier_hysteresis, current)
    return Assignment(tier, f"CLV {clv:.2f} ranks above {q:.0%} of customers")

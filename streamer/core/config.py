"""Tunable numbers of the core, with defaults that suit a typical shop.

Kept separate from :mod:`streamer.settings` (which reads the environment) so tests and
benchmarks can build a config without touching ``os.environ``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY = 86_400.0
YEAR_DAYS = 365.25


@dataclass(frozen=True)
class Limits:
    """What counts as absurd or oversized input."""

    max_event_bytes: int = 64 * 1024
    #: Event times later than wall clock + this are rejected (clock skew allowance).
    max_future_skew_s: float = DAY
    #: Event times before this (epoch seconds) are rejected; 1990-01-01 keeps 1990s
    #: transaction logs such as CDNOW replayable.
    min_event_time: float = 631_152_000.0
    reporting_currency: str = "USD"
    #: Units of the reporting currency per unit of each accepted currency.
    fx_rates: dict[str, float] = field(default_factory=lambda: {"USD": 1.0})


@dataclass(frozen=True)
class ScoringConfig:
    """Parameters of the formula scores and lifecycle rules (see README, "Scores")."""

    #: Annual discount rate applied to future margin (formula CLV).
    annual_discount_rate: float = 0.10
    #: Expected relationship duration in years for the formula CLV.
    expected_lifetime_years: float = 3.0
    #: Horizon (days) of the buy-till-you-die predictions: purchases, P(no purchase), CLV.
    btyd_horizon_days: float = 365.0
    #: Horizon (days) of the online learners' labels: a prediction is labelled this long after
    #: it was made, in event time (short enough for labels to arrive while they still matter).
    learn_horizon_days: float = 90.0
    #: Prior mean days between purchases; shrinks the interval of customers with few orders.
    prior_interval_days: float = 90.0
    #: Weight of that prior, in purchase intervals.
    prior_interval_weight: float = 1.0
    #: Beta(a, b) prior of the probability to drop out after a purchase (BG/NBD's p);
    #: each repeat purchase is evidence the customer stays: p = a / (a + b + repeats).
    dropout_prior_a: float = 0.8
    dropout_prior_b: float = 2.4
    #: Churn risk at or above which a customer is "at risk".
    at_risk_threshold: float = 0.6
    lapse_days: float = 365.0
    loyal_orders: int = 3
    loyal_window_days: float = 180.0
    #: Value tiers by CLV quantile within the partition: (tier, lowest quantile), high to low.
    value_tiers: tuple[tuple[str, float], ...] = (("top", 0.9), ("high", 0.6), ("medium", 0.3), ("low", 0.0))
    #: A customer keeps its tier until its quantile leaves the tier's band by this much.
    value_tier_hysteresis: float = 0.05
    #: Below this many scored customers in a partition, value tier is "unranked".
    value_tier_min_population: int = 50
    #: Orders kept individually per customer (for refunds and windows); older ones are folded
    #: into aggregates so state stays bounded for very frequent buyers.
    max_orders_kept: int = 100
    #: Recent event ids remembered per customer for de-duplication of non-order events.
    dedup_ids_kept: int = 32

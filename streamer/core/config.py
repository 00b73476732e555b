"""Tunable numbers of the core, with defaults that suit a typical shop.

Kept separate from :mod:`streamer.settings` (which reads the environment) so tests and
benchmarks can build a config without touching ``os.environ``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamer.errors import ConfigError

DAY = 86_400.0
YEAR_DAYS = 365.25

#: A function of epoch seconds giving the calendar day (days since 1970-01-01) they fall on.
DayOf = Callable[[float], float]


def utc_day(t: float) -> float:
    """The UTC calendar day of epoch seconds ``t``: days since 1970-01-01.

    >>> utc_day(0.0), utc_day(86_399.9), utc_day(86_400.0)
    (0.0, 0.0, 1.0)
    """
    return t // DAY


#: Offsets are cached per quarter hour of UTC time; one whose offset differs at its two ends
#: (a transition inside it) is looked up for each time instead, so the day is always exact.
_BUCKET_S = 900.0


@lru_cache(maxsize=32)
def day_function(timezone: str) -> DayOf:
    """The calendar day of epoch seconds in ``timezone`` (an IANA name), as days since
    1970-01-01 on that zone's calendar: what "a purchase day" means for a shop there. Daylight
    saving time is followed. Raises ValueError for an unknown zone.

    >>> new_york = day_function("America/New_York")
    >>> t = 1_709_337_600.0  # 2024-03-02 00:00 UTC, 2024-03-01 19:00 in New York
    >>> utc_day(t) - utc_day(t - 1200), new_york(t) - new_york(t - 1200)  # orders at 18:40 and 19:00
    (1.0, 0.0)
    >>> day_function("UTC") is utc_day
    True
    """
    if timezone in ("UTC", "Etc/UTC"):
        return utc_day  # the default, and the fast path: no offset to look up
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {timezone!r} (an IANA name such as 'Europe/Berlin')") from None

    def offset_at(t: float) -> float:
        offset = datetime.fromtimestamp(t, zone).utcoffset()
        return offset.total_seconds() if offset is not None else 0.0

    @lru_cache(maxsize=65_536)
    def bucket_offset(bucket: int) -> float | None:
        """The offset throughout one quarter hour, or None if it changes within it."""
        start = bucket * _BUCKET_S
        first = offset_at(start)
        return first if offset_at(start + _BUCKET_S - 1e-3) == first else None

    def day_of(t: float) -> float:
        offset = bucket_offset(int(t // _BUCKET_S))
        if offset is None:
            offset = offset_at(t)
        return (t + offset) // DAY

    return day_of


@dataclass(frozen=True)
class Limits:
    """What counts as absurd or oversized input."""

    max_event_bytes: int = 64 * 1024
    #: Event times later than wall clock + this are rejected (clock skew allowance). An event
    #: from the future moves its partition's event-time clock there, and every timer of the
    #: partition's customers due before it fires early: an hour of skew, not a day (a producer
    #: stamping local time as UTC, hours ahead, is dead-lettered rather than obeyed).
    max_future_skew_s: float = 3600.0
    #: Event times before this (epoch seconds) are rejected; 1990-01-01 keeps 1990s
    #: transaction logs such as CDNOW replayable.
    min_event_time: float = 631_152_000.0
    reporting_currency: str = "USD"
    #: Units of the reporting currency per unit of each accepted currency.
    fx_rates: dict[str, float] = field(default_factory=lambda: {"USD": 1.0})


#: Bands of a score, high to low: (segment, lowest value); the last floor must be 0.
Bands = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ChurnBandRule:
    """churn band: low / medium / high by a churn score, with hysteresis."""

    #: The first of these scores the customer has decides the band (formula churn_risk first:
    #: its crossing times have a closed form, so the timer fires exactly at the boundary).
    scores: tuple[str, ...] = ("churn_risk",)
    bands: Bands = (("high", 0.6), ("medium", 0.3), ("low", 0.0))
    #: A customer keeps its band until the score is this far past the band's edges.
    hysteresis: float = 0.05
    #: For scores without a closed-form crossing time: re-score a silent customer this often.
    recheck_days: float = 7.0


@dataclass(frozen=True)
class EngagementRule:
    """email engagement: engaged / dormant / unsubscribed / bounced."""

    #: Engaged while the last open or click is at most this old.
    window_days: float = 60.0
    #: A new recipient who has not engaged yet is not called dormant before this.
    grace_days: float = 30.0


@dataclass(frozen=True)
class CommunityRule:
    """community: member / contributor / super_user."""

    #: Posts, replies, accepted answers and reviews that make a contributor.
    contributor_actions: int = 1
    #: ...and a super-user, who must also have been active within ``super_user_active_days``.
    super_user_actions: int = 10
    super_user_active_days: float = 90.0


_ASCII_WORD = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """NFKC, then case-folded: how goals and their keywords are compared."""
    return unicodedata.normalize("NFKC", text).casefold()


@lru_cache(maxsize=4096)
def goal_words(text: str) -> frozenset[str]:
    """The words of a goal's text, as keywords are compared with them: NFKC (an "é" typed as
    "e" and a combining accent is the same word), case-folded ("Straße" is "strasse"), split
    at anything but letters, combining marks and digits, so a word of any script stays whole
    (Devanagari's vowel signs are marks: "सीखना" is one word). Cached: a customer's goal is
    read at every score update.

    >>> sorted(goal_words("Ich möchte Gitarre ÜBEN!")), sorted(goal_words("मैं सीखना चाहता हूँ"))
    (['gitarre', 'ich', 'möchte', 'üben'], ['चाहता', 'मैं', 'सीखना', 'हूँ'])
    """
    folded = fold(text)
    if folded.isascii():
        return frozenset(_ASCII_WORD.findall(folded))
    words, word = [], []
    for char in folded:
        if unicodedata.category(char)[0] in "LMN":
            word.append(char)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    return frozenset(words)


@dataclass(frozen=True)
class GoalRule:
    """goal: from the survey's free-text goal, by keywords; ``other`` when none matches."""

    #: segment -> keywords (folded as :func:`goal_words` folds a goal's words, here or by the
    #: rules file); the first segment with a keyword in the goal wins.
    categories: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType(
            {
                "learn": ("learn", "teach", "course", "lesson", "skill"),
                "create": ("build", "record", "produce", "production", "podcast", "make", "create"),
                "perform": ("play", "gig", "band", "live", "perform", "dj"),
                "save": ("save", "cheap", "budget", "deal"),
            }
        )
    )

    def __post_init__(self) -> None:
        # Keywords given in code are folded as the goal's words are ("Straße" -> "strasse"),
        # so they match as the same keywords from the rules file do.
        folded = {name: tuple(fold(keyword) for keyword in words) for name, words in self.categories.items()}
        object.__setattr__(self, "categories", MappingProxyType(folded))


@dataclass(frozen=True)
class AdvocateRule:
    """advocate: referrer (made referrals) / reviewer (posted reviews)."""

    referrals: int = 1
    reviews: int = 1


@dataclass(frozen=True)
class TriggerRule:
    """One campaign trigger's switch, channel, cooldown and parameters."""

    enabled: bool = True
    #: "email" triggers respect consent: none for unsubscribed or hard-bounced customers.
    channel: str = "email"
    #: The same trigger does not fire again for a customer within this many days.
    cooldown_days: float = 30.0
    #: Days after the reference moment (onboarding: one per step, after the first order;
    #: upsell: after a basic purchase; survey request: after the first order).
    days: tuple[float, ...] = ()
    #: overdue: fires this many usual intervals after the last order.
    factor: float = 1.0
    #: advocate invitation: value tiers that count as high CLV.
    value_tiers: tuple[str, ...] = ()


TRIGGER_NAMES = (
    "onboarding",
    "upsell_advanced",
    "survey_request",
    "reactivation",
    "overdue",
    "win_back",
    "vip_welcome",
    "advocate_invitation",
    "referral_thanks",
)


def default_triggers() -> Mapping[str, TriggerRule]:
    return MappingProxyType(
        {
            "onboarding": TriggerRule(cooldown_days=0.0, days=(0.0, 3.0, 7.0, 14.0)),
            "upsell_advanced": TriggerRule(cooldown_days=90.0, days=(30.0,)),
            "survey_request": TriggerRule(cooldown_days=180.0, days=(14.0,)),
            "reactivation": TriggerRule(cooldown_days=60.0),
            "overdue": TriggerRule(cooldown_days=30.0, factor=1.5),
            "win_back": TriggerRule(cooldown_days=180.0),
            "vip_welcome": TriggerRule(cooldown_days=365.0),
            "advocate_invitation": TriggerRule(cooldown_days=365.0, value_tiers=("top", "high")),
            "referral_thanks": TriggerRule(cooldown_days=7.0),
        }
    )


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
    #: Per partition: up to this many customers the value ranking is exact; beyond, a
    #: fixed-size log-scale sketch (streamer.core.value_ranks), so memory and the cost of an
    #: update stay bounded with millions of customers.
    value_rank_exact_limit: int = 25_000
    #: Per partition: the population refit reads at most this many customers, a uniform
    #: sample by hash of the id (streamer.core.partition_columns).
    refit_sample_per_partition: int = 25_000
    #: Orders kept individually per customer (for refunds and windows); older ones are folded
    #: into aggregates so state stays bounded for very frequent buyers.
    max_orders_kept: int = 100
    #: Refunds kept individually per customer, over its kept orders and orders not seen yet
    #: (refunds leave with their order when it is folded): a refund past this goes to
    #: dead-letter, so a flood of refunds cannot grow a state past what Kafka takes.
    max_refunds_kept: int = 200
    #: The shop's time zone (IANA name): purchase days, which count same-day orders as one
    #: purchase, are calendar days there.
    purchase_day_timezone: str = "UTC"
    #: Recent event ids remembered per customer for de-duplication of non-order events.
    dedup_ids_kept: int = 32
    #: Segment families on, beyond lifecycle and value tier (see streamer.core.families).
    families: tuple[str, ...] = ("churn_band", "engagement", "community", "goal", "advocate")
    churn_band: ChurnBandRule = field(default_factory=ChurnBandRule)
    engagement: EngagementRule = field(default_factory=EngagementRule)
    community: CommunityRule = field(default_factory=CommunityRule)
    goal: GoalRule = field(default_factory=GoalRule)
    advocate: AdvocateRule = field(default_factory=AdvocateRule)
    triggers: Mapping[str, TriggerRule] = field(default_factory=default_triggers)

    @property
    def day_of(self) -> DayOf:
        """Epoch seconds -> the purchase day they fall on (``purchase_day_timezone``)."""
        return day_function(self.purchase_day_timezone)

"""Deterministic shop simulator: realistic CloudEvents streams with a known ground truth.

The simulator plays a music-gear web shop for months of event time. It exists for three jobs:

* the live demo (call :meth:`ShopSimulator.raw_events` repeatedly with a growing ``until``),
* tests (small, fast, deterministic streams, optionally salted with bad inputs),
* model evaluation: every customer's *hidden* parameters are kept in
  :attr:`ShopSimulator.truth`, so predicted churn risk / CLV can be compared with what the
  generating process really did.

Generative model (the shape of the CLV literature, so BG/NBD and Gamma-Gamma fits are meaningful):

* Acquisition: customer ``i`` places a first order at a time uniform over the first
  ``acquisition_days``.
* Purchases (BG/NBD): while alive, a customer buys as a Poisson process with rate
  ``lambda ~ Gamma(r, alpha)``. After every *repeat* purchase occasion the customer drops out
  for good with probability ``p ~ Beta(a, b)`` (BG/NBD convention: the acquisition order itself
  never kills, the dropout is a shifted geometric over repeat transactions).
* Spend (Gamma-Gamma): each order's paid total is ``Gamma(P_SPEND, nu)`` with a per-customer
  ``nu ~ Gamma(Q_SPEND, GAMMA_SPEND)``; ``mean_order_value = P_SPEND / nu`` is the expected
  paid total (after discount) of one order.
* Engagement: a per-customer flag; engaged customers open and click more email, answer the
  onboarding survey, join and post in the community, review and refer. It is mildly negatively
  correlated with the dropout probability (engaged fans churn less), while ``p`` keeps its exact
  Beta marginal.
* Death is latent: it stops orders at once, email opens fall to 5 %, community activity mostly
  stops, unsubscribes become more likely — the signals a streaming churn model can pick up.

Implementation: one heap of (event time, sequence, kind, customer, payload) for *pending* events.
Each customer has only a handful of pending entries at any time (next purchase, next campaign
mail, maybe an open/click/refund/review in flight), so memory is proportional to customers, not
to events. Each heap entry produces at most one event, and a single ``random.Random(seed)`` is
consumed strictly in pop order, so the stream is a pure function of the seed and resuming with a
larger ``until`` continues exactly where the previous call stopped.

Stdlib only, on purpose: it must run anywhere the demo or the tests run.
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import json
import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from streamer.contracts import INPUT_TYPES

__all__ = [
    "BAD_KINDS",
    "TOPIC_OF_TYPE",
    "CustomerTruth",
    "ShopSimulator",
]

# ---------------------------------------------------------------------------------------------
# Contracts (mirrors schemas/README.md; kept local so the simulator has no dependencies)
# ---------------------------------------------------------------------------------------------

#: Input event type -> the topic role it must be produced to (the contracts' mapping).
TOPIC_OF_TYPE: dict[str, str] = INPUT_TYPES

#: Kinds of bad input :meth:`ShopSimulator.raw_events` can inject, with their relative weights.
#: Oversized payloads are > 1 MiB each, so they are kept rare to keep the demo's traffic sane.
BAD_KINDS: dict[str, int] = {
    "non_json": 15,
    "not_an_object": 10,
    "missing_subject": 15,
    "unknown_type": 15,
    "schema_violation": 20,
    "absurd_time": 10,
    "wrong_topic": 12,
    "oversized": 3,
}

# ---------------------------------------------------------------------------------------------
# Model parameters. Module constants rather than arguments: the truth recorded per customer is
# what evaluation needs, and a fixed population shape keeps demo and tests comparable.
# ---------------------------------------------------------------------------------------------

# BG/NBD purchase rate: Gamma(shape r, scale) per year. r < 1 gives the heavy right tail seen
# in real shops (many occasional buyers, a few very frequent ones); mean r * scale = 4 / year.
RATE_SHAPE = 0.8
RATE_SCALE = 5.0
RATE_MIN, RATE_MAX = 0.05, 200.0  # guard against 0 (division) and absurd 1000-orders-a-year draws

# BG/NBD dropout: Beta(a, b) with mean a / (a + b) = 0.25.
DROPOUT_A, DROPOUT_B = 1.2, 3.6

# Gamma-Gamma spend: order total ~ Gamma(P, scale=1/nu), nu ~ Gamma(Q, scale=1/GAMMA).
# E[mean_order_value] = P * GAMMA / (Q - 1) = 90 USD; Q > 2 keeps its variance finite.
P_SPEND, Q_SPEND, GAMMA_SPEND = 6.0, 4.0, 45.0

ADDON_PROB = 0.03  # "forgot something": a second order on the same day as a purchase
REFUND_PROB = 0.03
DISCOUNT_PROB = 0.20
SUBSCRIBED_PROB = 0.85  # opted in to the newsletter at checkout
BAD_ADDRESS_PROB = 0.02  # typo'd address: the very first campaign mail hard-bounces
SOFT_BOUNCE_PROB = 0.008
HARD_BOUNCE_PROB = 0.0005  # a mailbox that later dies
ADVANCED_AFTER_DAYS = 30.0  # customers move up to "advanced" gear a month after a basic one

US_PER_S = 1_000_000
US_PER_H = 3600 * US_PER_S
US_PER_DAY = 24 * US_PER_H
US_PER_YEAR = 365.25 * US_PER_DAY

# Heap entry kinds. Small ints so heap tuples compare cheaply and dispatch is an int compare.
_ORDER, _ADDON, _CAMPAIGN, _OPEN, _CLICK, _UNSUB = 0, 1, 2, 3, 4, 5
_SURVEY, _JOIN, _ACT, _ACCEPT, _REVIEW, _REFERRAL, _REFUND = 6, 7, 8, 9, 10, 11, 12

# ---------------------------------------------------------------------------------------------
# Vocabularies: small and realistic, so dashboards and zero-party features look plausible.
# ---------------------------------------------------------------------------------------------

# (product_id, sku, name, category, tier, list price in USD)
_CATALOG: list[tuple[str, str, str, str, str, float]] = [
    ("picks-12", "SKU-1001", "Guitar picks, 12 pack", "accessories", "basic", 4.99),
    ("strings-010", "SKU-1002", "Electric guitar strings 10-46", "accessories", "basic", 8.99),
    ("drumsticks-5a", "SKU-1003", "Drumsticks 5A", "drums", "basic", 11.99),
    ("capo-std", "SKU-1004", "Trigger capo", "accessories", "basic", 12.99),
    ("cable-3m", "SKU-1005", "Instrument cable 3 m", "accessories", "basic", 14.99),
    ("pop-filter", "SKU-1006", "Pop filter", "recording", "basic", 15.99),
    ("tuner-clip", "SKU-1007", "Clip-on tuner", "accessories", "basic", 19.99),
    ("mic-stand", "SKU-1008", "Boom mic stand", "recording", "basic", 29.99),
    ("course-start", "SKU-1009", "Online course: first 30 days of guitar", "lessons", "basic", 49.00),
    ("headphones-std", "SKU-1010", "Closed-back headphones", "recording", "basic", 59.00),
    ("ukulele-soprano", "SKU-1011", "Soprano ukulele", "guitars", "basic", 59.00),
    ("mic-usb", "SKU-1012", "USB microphone", "recording", "basic", 89.00),
    ("amp-practice", "SKU-1013", "10 W practice amp", "amps", "basic", 99.00),
    ("interface-2ch", "SKU-1014", "2-channel audio interface", "recording", "basic", 119.00),
    ("acoustic-start", "SKU-1015", "Beginner acoustic guitar", "guitars", "basic", 149.00),
    ("keys-61", "SKU-1016", "61-key portable keyboard", "keyboards", "basic", 179.00),
    ("dj-start", "SKU-1017", "2-deck DJ controller", "dj", "basic", 199.00),
    ("electric-pack", "SKU-1018", "Electric guitar starter pack", "guitars", "basic", 229.00),
    ("strings-coated", "SKU-2001", "Coated acoustic strings, 3 sets", "accessories", "advanced", 39.00),
    ("pedal-boutique", "SKU-2002", "Boutique overdrive pedal", "effects", "advanced", 229.00),
    ("phones-studio", "SKU-2003", "Open-back studio headphones", "recording", "advanced", 179.00),
    ("masterclass", "SKU-2004", "Masterclass: mixing and mastering", "lessons", "advanced", 199.00),
    ("panels-acoustic", "SKU-2005", "Acoustic treatment panels, 6 pack", "recording", "advanced", 249.00),
    ("plugins-bundle", "SKU-2006", "Studio plugin bundle", "software", "advanced", 299.00),
    ("mic-condenser", "SKU-2007", "Large-diaphragm condenser mic", "recording", "advanced", 329.00),
    ("interface-8ch", "SKU-2008", "8-channel audio interface", "recording", "advanced", 449.00),
    ("monitors-pair", "SKU-2009", "Studio monitors, pair", "recording", "advanced", 499.00),
    ("synth-analog", "SKU-2010", "Analog polysynth", "keyboards", "advanced", 799.00),
    ("amp-tube", "SKU-2011", "30 W tube combo amp", "amps", "advanced", 899.00),
    ("dj-pro", "SKU-2012", "4-deck DJ controller", "dj", "advanced", 999.00),
    ("stage-piano", "SKU-2013", "88-key stage piano", "keyboards", "advanced", 1099.00),
    ("acoustic-pro", "SKU-2014", "Solid-wood acoustic guitar", "guitars", "advanced", 1199.00),
    ("electric-pro", "SKU-2015", "Pro electric guitar", "guitars", "advanced", 1499.00),
]
# Per tier: catalog rows sorted by price, and the price list for bisect.
_BY_TIER: dict[str, tuple[list[tuple[str, str, str, str, str, float]], list[float]]] = {}
for _tier in ("basic", "advanced"):
    _rows = sorted((row for row in _CATALOG if row[4] == _tier), key=lambda row: row[5])
    _BY_TIER[_tier] = (_rows, [row[5] for row in _rows])

_GOALS = [
    "build a home studio", "learn guitar", "record a podcast", "start a band",
    "learn music production", "play live gigs", "teach my kids piano", "upgrade my DJ setup",
]
_PROBLEMS = [
    "not sure which gear to buy", "too little time to practice", "my recordings sound muddy",
    "gear is too expensive", "hard to find good tutorials", "my room is too noisy",
]
_PREFERENCES = [
    "acoustic", "electric", "analog synths", "budget gear", "premium brands", "video lessons",
    "vinyl", "live streaming", "home recording", "beginner friendly",
]
_COMMUNITY_TOPICS = [
    "recording", "guitar", "gear advice", "mixing", "live sound", "practice tips", "show your setup",
]
_LINKS = [
    "https://shop.example.com/new-arrivals", "https://shop.example.com/guides/home-studio",
    "https://shop.example.com/sale", "https://shop.example.com/community",
    "https://shop.example.com/lessons",
]
_REFUND_REASONS = [
    "damaged in shipping", "changed my mind", "wrong item", "not as described", "arrived late",
]
_REFERRAL_CHANNELS = ["link", "email", "whatsapp", "facebook", "instagram"]
# Review star weights (1..5): engaged fans rate higher.
_STARS = [1, 2, 3, 4, 5]
_STARS_ENGAGED = [2, 3, 10, 35, 50]
_STARS_OTHER = [8, 10, 22, 35, 25]


# ---------------------------------------------------------------------------------------------
# Public types
# ---------------------------------------------------------------------------------------------


@dataclass
class CustomerTruth:
    """The hidden truth of one simulated customer, for evaluating models against reality.

    ``died_at`` and ``orders`` reflect the simulation as far as it has been run (the latest
    ``until`` passed to :meth:`ShopSimulator.events`). Datetimes are naive UTC if the
    simulator's ``start`` was naive, else timezone-aware UTC.
    """

    customer_id: str
    joined_at: datetime  # time of the first (acquisition) order
    purchase_rate_per_year: float  # Poisson purchase rate while alive, Gamma across customers
    dropout_prob: float  # P(drop out) after each repeat purchase occasion, Beta across customers
    mean_order_value: float  # expected paid total of one order (Gamma-Gamma), USD
    engaged: bool  # engagement propensity: email, community, surveys, reviews, referrals
    died_at: datetime | None  # time of the purchase after which the customer dropped out
    orders: int  # Order Completed events emitted so far (including same-day add-on orders)


class _Cust:
    """Mutable per-customer simulation state (not part of the truth)."""

    __slots__ = (
        "idx", "cid", "truth", "rate_per_us", "p", "mov", "engaged", "alive", "occasions",
        "subscribed", "hard_bounced", "bad_address", "first_basic_us", "died_us",
    )

    def __init__(self, idx: int, cid: str, truth: CustomerTruth) -> None:
        self.idx = idx
        self.cid = cid
        self.truth = truth
        self.rate_per_us = truth.purchase_rate_per_year / US_PER_YEAR
        self.p = truth.dropout_prob
        self.mov = truth.mean_order_value
        self.engaged = truth.engaged
        self.alive = True
        self.occasions = 0  # purchase occasions (an order plus its same-day add-on, if any)
        self.subscribed = False
        self.hard_bounced = False
        self.bad_address = False
        self.first_basic_us: int | None = None
        self.died_us: int | None = None


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------


class ShopSimulator:
    """Deterministic generator of shop events (orders, email, community) for ``n_customers``.

    Example::

        sim = ShopSimulator(1000, datetime(2025, 1, 1, tzinfo=timezone.utc), seed=7)
        for topic_role, customer_id, event in sim.events(until=datetime(2025, 4, 1, tzinfo=timezone.utc)):
            ...
        sim.truth["sim-000001"].died_at
    """

    def __init__(
        self,
        n_customers: int,
        start: datetime,
        seed: int = 0,
        acquisition_days: float = 90.0,
        source: str = "/sim/shop",
        invalid_fraction: float = 0.0,
    ) -> None:
        """Draw the population and schedule every customer's acquisition order.

        ``invalid_fraction`` (0 <= f < 1) only affects :meth:`raw_events`: that fraction of its
        outputs are bad inputs, inserted *in addition* to the valid stream.
        """
        if n_customers < 0:
            raise ValueError("n_customers must be >= 0")
        if acquisition_days < 0:
            raise ValueError("acquisition_days must be >= 0")
        if not 0.0 <= invalid_fraction < 1.0:
            raise ValueError("invalid_fraction must be in [0, 1)")
        self.seed = seed
        self.source = source
        self.invalid_fraction = invalid_fraction
        # Work internally in naive UTC + integer microseconds since start: exact, cheap to
        # compare in the heap, and rounding can never reorder two events.
        self._aware = start.tzinfo is not None
        self._start = start.astimezone(timezone.utc).replace(tzinfo=None) if self._aware else start
        self._rng = random.Random(seed)
        # Bad inputs get their own generator so the valid stream is identical with or without them.
        self._bad_rng = random.Random(f"clv-sim-bad-{seed}")
        self._event_no = 0
        self._order_no = 0
        self._post_no = 0
        self._reply_no = 0
        self._review_no = 0
        self._bad_no = 0
        self._heap: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        # Recent post ids other members can reply to. Bounded: memory must not grow with events.
        self._recent_posts: deque[str] = deque(maxlen=1000)
        self._campaign_cache: dict[int, tuple[str, str]] = {}
        # Campaigns go out every Tuesday 14:00 UTC, starting with the first one at/after start.
        first = self._start.replace(hour=14, minute=0, second=0, microsecond=0)
        first += timedelta(days=(1 - first.weekday()) % 7)
        if first < self._start:
            first += timedelta(days=7)
        self._campaign0_us = (first - self._start) // timedelta(microseconds=1)
        self._week_us = 7 * US_PER_DAY

        #: Hidden truth per customer id, for evaluation.
        self.truth: dict[str, CustomerTruth] = {}
        #: How many bad inputs of each kind :meth:`raw_events` has produced so far.
        self.bad_counts: dict[str, int] = {kind: 0 for kind in BAD_KINDS}
        self._custs: list[_Cust] = []

        rng = self._rng
        acq_us = acquisition_days * US_PER_DAY
        for i in range(n_customers):
            cid = f"sim-{i + 1:06d}"
            joined_us = int(rng.random() * acq_us)
            rate = min(RATE_MAX, max(RATE_MIN, rng.gammavariate(RATE_SHAPE, RATE_SCALE)))
            p = rng.betavariate(DROPOUT_A, DROPOUT_B)
            nu = rng.gammavariate(Q_SPEND, 1.0 / GAMMA_SPEND)
            mov = P_SPEND / nu
            # Engagement correlates with loyalty, but p keeps its exact Beta marginal.
            engaged = rng.random() < min(0.85, max(0.05, 0.55 - 0.9 * p))
            truth = CustomerTruth(
                customer_id=cid,
                joined_at=self._dt(joined_us),
                purchase_rate_per_year=rate,
                dropout_prob=p,
                mean_order_value=mov,
                engaged=engaged,
                died_at=None,
                orders=0,
            )
            self.truth[cid] = truth
            cust = _Cust(i, cid, truth)
            cust.subscribed = rng.random() < SUBSCRIBED_PROB
            cust.bad_address = rng.random() < BAD_ADDRESS_PROB
            self._custs.append(cust)
            self._heap.append((joined_us, self._seq, _ORDER, i, None))
            self._seq += 1
        heapq.heapify(self._heap)

    # -- public API ----------------------------------------------------------------------------

    def events(self, until: datetime) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield ``(topic_role, customer_id, cloudevent)`` for every event with time < ``until``.

        Times are non-decreasing. Calls continue where the previous one stopped, so
        ``events(t1)`` followed by ``events(t2)`` yields exactly what ``events(t2)`` alone would.
        Abandoning the iterator midway is safe too: the next call resumes after the last
        event that was yielded.
        """
        until_us = self._us(until)
        heap = self._heap
        pop = heapq.heappop
        handle = self._handle
        while heap and heap[0][0] < until_us:
            t, _, kind, idx, payload = pop(heap)
            out = handle(t, kind, self._custs[idx], payload)
            if out is not None:
                yield out

    def raw_events(self, until: datetime) -> Iterator[tuple[str, bytes, bytes]]:
        """The :meth:`events` stream encoded as Kafka records ``(topic_role, key, value)``.

        ``key`` is the customer id in UTF-8, ``value`` compact JSON. With ``invalid_fraction``
        f > 0, bad records are inserted before valid ones so that on average a fraction f of all
        outputs is bad (kinds: :data:`BAD_KINDS`, counted in :attr:`bad_counts`); every valid
        event is still produced, unchanged, so downstream truth comparisons stay exact.
        """
        f = self.invalid_fraction
        # Insert with probability q per valid event so that bad / (valid + bad) = f.
        q = f / (1.0 - f) if f > 0 else 0.0
        brng = self._bad_rng
        for role, cid, event in self.events(until):
            key = cid.encode()
            if q and brng.random() < q:
                yield self._bad_record(role, key, event)
            yield role, key, _dumps(event)

    # -- time helpers --------------------------------------------------------------------------

    def _us(self, when: datetime) -> int:
        if when.tzinfo is not None:
            when = when.astimezone(timezone.utc).replace(tzinfo=None)
        return (when - self._start) // timedelta(microseconds=1)

    def _dt(self, t_us: int) -> datetime:
        moment = self._start + timedelta(microseconds=t_us)
        return moment.replace(tzinfo=timezone.utc) if self._aware else moment

    def _push(self, t_us: int, kind: int, idx: int, payload: Any = None) -> None:
        heapq.heappush(self._heap, (t_us, self._seq, kind, idx, payload))
        self._seq += 1

    def _envelope(self, t_us: int, type_name: str, cid: str, data: dict[str, Any]) -> dict[str, Any]:
        self._event_no += 1
        moment = self._start + timedelta(microseconds=t_us)
        return {
            "specversion": "1.0",
            "id": f"sim-{self.seed}-{self._event_no}",
            "source": self.source,
            "type": type_name,
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "subject": cid,
            "datacontenttype": "application/json",
            "data": data,
        }

    # -- event handlers: each pops one heap entry, emits at most one event -------------------

    def _handle(self, t: int, kind: int, c: _Cust, payload: Any) -> tuple[str, str, dict[str, Any]] | None:
        # Ordered by frequency: weekly campaign mail dominates the stream.
        if kind == _CAMPAIGN:
            return self._on_campaign(t, c, payload)
        if kind == _OPEN:
            return self._on_open(t, c, payload)
        if kind == _CLICK:
            return self._email(t, c, "Email Link Clicked", payload[0], link_url=payload[1])
        if kind == _ORDER or kind == _ADDON:
            return self._on_order(t, c, kind == _ADDON)
        if kind == _ACT:
            return self._on_community_activity(t, c)
        if kind == _UNSUB:
            if not c.subscribed:
                return None
            c.subscribed = False
            campaign_id, _ = self._campaign(payload)
            data = {"email_id": f"{campaign_id}-{c.cid}", "list_id": "newsletter", "campaign_id": campaign_id}
            return "email-events", c.cid, self._envelope(t, "Unsubscribed", c.cid, data)
        if kind == _REFUND:
            order_id, amount, reason = payload
            data = {"order_id": order_id, "total": amount, "currency": "USD", "reason": reason}
            return "orders", c.cid, self._envelope(t, "Order Refunded", c.cid, data)
        if kind == _REVIEW:
            return self._on_review(t, c, payload)
        if kind == _REFERRAL:
            data = {
                "referral_code": f"ref-{self.seed}-{c.idx + 1:06d}",  # the referrer's code, never the friend's data
                "channel": self._rng.choice(_REFERRAL_CHANNELS),
            }
            return "community-events", c.cid, self._envelope(t, "Referral Made", c.cid, data)
        if kind == _ACCEPT:
            post_id, reply_id = payload
            data = {"post_id": post_id, "answer_id": reply_id}
            return "community-events", c.cid, self._envelope(t, "Answer Accepted", c.cid, data)
        if kind == _SURVEY:
            return self._on_survey(t, c)
        if kind == _JOIN:
            c_rate = self._community_rate_per_us(c)
            self._push(t + 1 + int(self._rng.expovariate(c_rate)), _ACT, c.idx)
            return "community-events", c.cid, self._envelope(t, "Community Joined", c.cid, {"community_id": "sim-community"})
        raise AssertionError(f"unknown heap entry kind {kind}")  # pragma: no cover

    def _on_order(self, t: int, c: _Cust, addon: bool) -> tuple[str, str, dict[str, Any]]:
        rng = self._rng
        first = c.truth.orders == 0
        c.truth.orders += 1
        data = self._order_data(t, c, first)
        cid, idx = c.cid, c.idx

        if rng.random() < REFUND_PROB:
            # Full refund usually; partial (one item returned, goodwill credit) otherwise.
            total = data["total"]
            amount = total if rng.random() < 0.6 else round(total * rng.uniform(0.1, 0.9), 2)
            if amount > 0:
                delay = int(rng.uniform(2, 30) * US_PER_DAY)
                self._push(t + delay, _REFUND, idx, (data["order_id"], amount, rng.choice(_REFUND_REASONS)))
        if rng.random() < (0.25 if c.engaged else 0.04):
            product_id = rng.choice(data["products"])["product_id"]
            self._push(t + int(rng.uniform(3, 21) * US_PER_DAY), _REVIEW, idx, product_id)
        if rng.random() < (0.12 if c.engaged else 0.015):
            self._push(t + int(rng.uniform(0, 14) * US_PER_DAY), _REFERRAL, idx)

        if first:
            # Acquisition: the customer enters the mailing, survey and community funnels.
            self._schedule_next_campaign(t, c)
            if rng.random() < (0.30 if c.engaged else 0.03):
                self._push(t + int(rng.uniform(14, 56) * US_PER_DAY), _SURVEY, idx)
            if rng.random() < (0.60 if c.engaged else 0.05):
                self._push(t + int(rng.expovariate(1 / 10) * US_PER_DAY) + 1, _JOIN, idx)

        if not addon and rng.random() < ADDON_PROB:
            # Same-day add-on order, part of the same purchase occasion: dropout is decided after it.
            moment = self._start + timedelta(microseconds=t)
            midnight = datetime.combine(moment.date(), datetime.min.time()) + timedelta(days=1)
            to_midnight = (midnight - moment) // timedelta(microseconds=1)
            self._push(t + int(rng.random() * min(6 * US_PER_H, to_midnight - 1)), _ADDON, idx)
        else:
            self._end_occasion(t, c)
        return "orders", cid, self._envelope(t, "Order Completed", cid, data)

    def _end_occasion(self, t: int, c: _Cust) -> None:
        """BG/NBD step: after a repeat occasion the customer may die; if alive, schedule the next buy."""
        c.occasions += 1
        if c.occasions > 1 and self._rng.random() < c.p:
            c.alive = False
            c.died_us = t
            c.truth.died_at = self._dt(t)
            return
        self._push(t + 1 + int(self._rng.expovariate(c.rate_per_us)), _ORDER, c.idx)

    def _order_data(self, t: int, c: _Cust, first: bool) -> dict[str, Any]:
        rng = self._rng
        self._order_no += 1
        # Gamma-Gamma: paid total around the customer's mean; gross is grossed up by the discount.
        target_total = rng.gammavariate(P_SPEND, c.mov / P_SPEND)
        pct = rng.choice((0.05, 0.10, 0.15, 0.20)) if rng.random() < DISCOUNT_PROB else 0.0
        gross_target = target_total / (1.0 - pct)

        r = rng.random()
        n_lines = 1 if r < 0.55 else 2 if r < 0.80 else 3 if r < 0.92 else 4
        weights = [rng.gammavariate(2.0, 1.0) for _ in range(n_lines)]
        wsum = sum(weights)
        # Tier: first orders are mostly basic; a month after a basic purchase, customers who
        # stayed move up to advanced gear with a decent probability.
        if first or c.first_basic_us is None or t - c.first_basic_us < ADVANCED_AFTER_DAYS * US_PER_DAY:
            p_adv = 0.08 if first else 0.05
        else:
            p_adv = 0.55 if c.engaged else 0.35
        products = []
        gross = 0.0
        for w in weights:
            qr = rng.random()
            qty = 1 if qr < 0.85 else 2 if qr < 0.95 else 3
            price = max(0.5, round(gross_target * w / wsum / qty, 2))
            tier = "advanced" if rng.random() < p_adv else "basic"
            # The price paid comes from the spend model (so the Gamma-Gamma truth is exact);
            # the product is the catalog item of that tier whose list price is closest.
            rows, prices = _BY_TIER[tier]
            k = bisect.bisect_left(prices, price)
            if k >= len(rows) or (k > 0 and rng.random() < 0.5):
                k -= 1
            pid, sku, name, category, _, _ = rows[k]
            products.append({
                "product_id": pid, "sku": sku, "name": name, "category": category,
                "price": price, "quantity": qty, "tier": tier,
            })
            gross += price * qty
            if tier == "basic" and c.first_basic_us is None:
                c.first_basic_us = t
        gross = round(gross, 2)
        discount = round(gross * pct, 2)
        total = round(gross - discount, 2)
        data: dict[str, Any] = {"order_id": f"ord-{self.seed}-{self._order_no:07d}", "total": total, "currency": "USD"}
        if discount > 0:
            data["discount"] = discount
        margin = round(total * rng.uniform(0.25, 0.45), 2)
        m = rng.random()
        # Most shops send margin; some send cost of goods instead, a few both (README allows it).
        if m < 0.80:
            data["margin"] = margin
        elif m < 0.95:
            data["cost"] = round(total - margin, 2)
        else:
            data["margin"] = margin
            data["cost"] = round(total - margin, 2)
        data["products"] = products
        return data

    # -- email ---------------------------------------------------------------------------------

    def _campaign(self, k: int) -> tuple[str, str]:
        """(campaign_id, campaign_name) of weekly campaign number ``k`` (cached: few weeks, many mails)."""
        hit = self._campaign_cache.get(k)
        if hit is None:
            day = (self._start + timedelta(microseconds=self._campaign0_us + k * self._week_us)).strftime("%Y-%m-%d")
            hit = (f"weekly-{day}", f"Weekly newsletter {day}")
            self._campaign_cache[k] = hit
        return hit

    def _schedule_next_campaign(self, t: int, c: _Cust, k: int | None = None) -> None:
        if k is None:  # first campaign whose send time is at/after t
            k = max(0, -(-(t - self._campaign0_us) // self._week_us))
        # A big send takes a while: each recipient's mail leaves within 30 minutes of the start.
        send = self._campaign0_us + k * self._week_us + int(self._rng.random() * 30 * 60 * US_PER_S)
        self._push(max(send, t), _CAMPAIGN, c.idx, k)

    def _email(self, t: int, c: _Cust, type_name: str, k: int, **extra: str) -> tuple[str, str, dict[str, Any]]:
        campaign_id, campaign_name = self._campaign(k)
        data = {"email_id": f"{campaign_id}-{c.cid}", "campaign_id": campaign_id, "campaign_name": campaign_name}
        data.update(extra)
        return "email-events", c.cid, self._envelope(t, type_name, c.cid, data)

    def _on_campaign(self, t: int, c: _Cust, k: int) -> tuple[str, str, dict[str, Any]] | None:
        # Unsubscribed or hard-bounced addresses leave the list for good (no reschedule).
        if not c.subscribed or c.hard_bounced:
            return None
        rng = self._rng
        self._schedule_next_campaign(t, c, k + 1)
        r = rng.random()
        if c.bad_address or r < HARD_BOUNCE_PROB:
            c.hard_bounced = True
            return self._email(t, c, "Email Bounced", k, bounce_type="hard")
        if r < HARD_BOUNCE_PROB + SOFT_BOUNCE_PROB:
            return self._email(t, c, "Email Bounced", k, bounce_type="soft")
        # Opens depend on whether the customer is still "alive" - the key latent churn signal.
        if c.alive:
            p_open = 0.50 if c.engaged else 0.20
            p_unsub = 0.001 if c.engaged else 0.003
        else:
            p_open = 0.05
            p_unsub = 0.02
        if rng.random() < p_open:
            # Most opens happen within hours; a long tail over the next days (capped at 3 days).
            self._push(t + min(int(rng.expovariate(1 / 6) * US_PER_H), 3 * US_PER_DAY) + US_PER_S, _OPEN, c.idx, k)
        if rng.random() < p_unsub:
            # Within 3 days, so it always lands before next week's mail.
            self._push(t + int(rng.uniform(0.05, 72) * US_PER_H), _UNSUB, c.idx, k)
        return self._email(t, c, "Email Delivered", k)

    def _on_open(self, t: int, c: _Cust, k: int) -> tuple[str, str, dict[str, Any]]:
        rng = self._rng
        if rng.random() < (0.30 if c.engaged and c.alive else 0.12):
            delay = 5 * US_PER_S + int(rng.expovariate(1 / 90) * US_PER_S)
            self._push(t + delay, _CLICK, c.idx, (k, rng.choice(_LINKS)))
        return self._email(t, c, "Email Opened", k)

    def _on_survey(self, t: int, c: _Cust) -> tuple[str, str, dict[str, Any]]:
        rng = self._rng
        data: dict[str, Any] = {"survey_id": "onboarding-v1"}
        # Zero-party data is patchy: people skip questions, but answer at least one.
        parts = [p for p in ("goal", "problem", "preferences") if rng.random() < 0.7] or ["goal"]
        if "goal" in parts:
            data["goal"] = rng.choice(_GOALS)
        if "problem" in parts:
            data["problem"] = rng.choice(_PROBLEMS)
        if "preferences" in parts:
            data["preferences"] = rng.sample(_PREFERENCES, rng.randint(1, 3))
        return "email-events", c.cid, self._envelope(t, "Survey Answered", c.cid, data)

    # -- community -----------------------------------------------------------------------------

    def _community_rate_per_us(self, c: _Cust) -> float:
        per_week = 0.6 if c.engaged else 0.2
        if not c.alive:
            per_week *= 0.1  # the dead barely show up any more
        return per_week / (7 * US_PER_DAY)

    def _on_community_activity(self, t: int, c: _Cust) -> tuple[str, str, dict[str, Any]] | None:
        rng = self._rng
        if not c.alive and rng.random() < 0.5:
            return None  # lost interest for good: no more community activity
        self._push(t + 1 + int(rng.expovariate(self._community_rate_per_us(c))), _ACT, c.idx)
        if rng.random() < 0.35 or not self._recent_posts:
            self._post_no += 1
            post_id = f"post-{self.seed}-{self._post_no}"
            self._recent_posts.append(post_id)
            data = {"post_id": post_id, "topic": rng.choice(_COMMUNITY_TOPICS)}
            return "community-events", c.cid, self._envelope(t, "Community Posted", c.cid, data)
        post_id = rng.choice(self._recent_posts)
        self._reply_no += 1
        reply_id = f"reply-{self.seed}-{self._reply_no}"
        if rng.random() < (0.25 if c.engaged else 0.10):
            # The asker accepts this reply as the answer some hours or days later.
            self._push(t + int(rng.uniform(1, 120) * US_PER_H), _ACCEPT, c.idx, (post_id, reply_id))
        data = {"post_id": post_id, "reply_id": reply_id}
        return "community-events", c.cid, self._envelope(t, "Community Replied", c.cid, data)

    def _on_review(self, t: int, c: _Cust, product_id: str) -> tuple[str, str, dict[str, Any]] | None:
        rng = self._rng
        if not c.alive and rng.random() < 0.7:
            return None  # churned customers rarely bother to review
        self._review_no += 1
        rating = rng.choices(_STARS, _STARS_ENGAGED if c.engaged else _STARS_OTHER)[0]
        data = {"product_id": product_id, "rating": rating, "review_id": f"rev-{self.seed}-{self._review_no}"}
        return "community-events", c.cid, self._envelope(t, "Review Posted", c.cid, data)

    # -- bad inputs ----------------------------------------------------------------------------

    def _bad_record(self, role: str, key: bytes, event: dict[str, Any]) -> tuple[str, bytes, bytes]:
        """One realistic bad record modelled on ``event`` (same key and topic unless the kind says otherwise)."""
        rng = self._bad_rng
        kind = rng.choices(list(BAD_KINDS), list(BAD_KINDS.values()))[0]
        self.bad_counts[kind] += 1
        self._bad_no += 1
        doc = json.loads(_dumps(event))  # deep copy
        # Distinct ids: a rejected bad copy must never de-duplicate away the valid original.
        doc["id"] = f"sim-{self.seed}-bad-{self._bad_no}"
        if kind == "non_json":
            good = _dumps(doc)
            choice = rng.randrange(3)
            if choice == 0:
                return role, key, good[: max(1, len(good) // 2)]  # truncated write
            if choice == 1:
                return role, key, gzip.compress(good, mtime=0)  # compressed by a misconfigured client
            return role, key, b"order completed for " + key  # a human typed it
        if kind == "not_an_object":
            value = rng.choice([[doc], "Order Completed", 42, None])
            return role, key, _dumps(value)
        if kind == "missing_subject":
            if rng.random() < 0.5:
                del doc["subject"]
            else:
                doc["subject"] = ""
            return role, key, _dumps(doc)
        if kind == "unknown_type":
            doc["type"] = rng.choice(["Order Shipped", "Cart Viewed", "order completed", "Email Sent", ""])
            return role, key, _dumps(doc)
        if kind == "schema_violation":
            return role, key, _dumps(self._violate(role, doc))
        if kind == "absurd_time":
            doc["time"] = rng.choice(["2999-01-01T00:00:00Z", "1900-01-01T00:00:00Z"])
            return role, key, _dumps(doc)
        if kind == "wrong_topic":
            other = rng.choice([r for r in ("orders", "email-events", "community-events") if r != role])
            return other, key, _dumps(doc)
        # oversized: a runaway producer attaching a huge blob (> 1 MiB) to an otherwise fine event
        doc["blob"] = "x" * (1024 * 1024 + 1024)
        return role, key, _dumps(doc)

    def _violate(self, role: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Break the data schema in a way a buggy producer would, keeping type and topic right."""
        data = doc["data"]
        if role == "orders":
            if doc["type"] == "Order Completed":
                data["total"] = -abs(data["total"]) - 1.0  # negative total
            else:
                data["total"] = 0  # refunds must be > 0
        elif role == "community-events":
            # A 1-10 scale slipped into the 1-5 rating field.
            doc["type"] = "Review Posted"
            doc["data"] = {"product_id": "strings-010", "rating": 9}
        else:
            if doc["type"] in ("Unsubscribed", "Survey Answered"):
                doc["type"] = "Email Opened"
                doc["data"] = {}  # required email_id missing
            else:
                data.pop("email_id", None)
        return doc


def _dumps(value: Any) -> bytes:
    """Compact JSON bytes, as a typical producer writes them."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

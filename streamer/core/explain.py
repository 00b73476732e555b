"""Why did the scores move? The top drivers of a score update, in words a marketer reads.

Each score update compares the customer's :class:`~streamer.core.features.Features` before
and after an event (or a timer: the same history at a later ``now``). The inputs are split
into *groups* that an event changes together:

================  ==============================================================================
``time``          ``now`` — time passing; recency and age follow from it (``recency_days``)
``purchases``     orders, purchase days, revenue, margin, discount, order times (refunds show
                  here as revenue/margin dropping with the order count unchanged)
``engagement``    emails opened / clicked, unsubscribed, hard bounced
``community``     community actions, referrals
``survey``        a survey answer
================  ==============================================================================

Attribution is Shapley over the changed groups, computed cheaply:

* one changed group (most events): it gets the whole change — exact, **no** re-scoring;
* two groups (an order arriving some time after the last score): ``before`` with one group
  taken from ``after``, for each group — 2 re-scores — which with the forward/reverse
  average is the exact two-player Shapley value;
* ``n ≥ 3`` groups: forward (``before`` + group) and reverse (``after`` − group) substitution,
  averaged, then the small remainder spread in proportion to ``|effect|`` so that the effects
  of each score still add up to its total change — ``2n`` re-scores.

So ``rescore`` is called at most ``2 ×`` the number of changed groups (plus once if
``scores_before`` is not given), never for a group that did not change. Mixed features keep
``recency_days`` / ``age_days`` consistent with their ``now`` and order times (the inputs are
expected to come from :func:`~streamer.core.features.compute`).

The *headline* scores explained are ``churn_risk`` and ``predicted_clv`` (``formula_clv``
when the buy-till-you-die scorer is off). Drivers are ranked by ``|effect|``, CLV effects
relative to the CLV level (so "CLV −20 %" and "churn risk +0.20" weigh the same); effects too
small to print (< 0.005 churn, or < 0.005 money or 0.1 % of the CLV level) are left out.

**Nothing moved** (an email open, with no score reading engagement): :func:`explain` returns
``[]`` — no explanation is published rather than a "no change" line.

**First event** (``before is None``): the level is explained instead of a change, e.g.
``"first order of 80.00 gives a predicted CLV of 41.20"`` and ``"new customer: churn risk
starts at the 25% base rate"``; the effects are then the score levels.

Texts name amounts, days and scores, never the customer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Callable

from streamer.core.config import DAY
from streamer.core.features import Features

Scores = dict[str, float]
Rescore = Callable[[Features], Scores]

CHURN = "churn_risk"
CLV_KEYS = ("predicted_clv", "formula_clv")
LABELS = {"churn_risk": "churn risk", "predicted_clv": "predicted CLV", "formula_clv": "CLV"}

#: Smallest effects worth a sentence.
MIN_CHURN_EFFECT = 0.005
MIN_MONEY_EFFECT = 0.005
MIN_RELATIVE_CLV_EFFECT = 0.001
#: CLV level below which CLV effects are not scaled up further (currency units).
CLV_LEVEL_FLOOR = 1.0

TIME, PURCHASES, ENGAGEMENT, COMMUNITY, SURVEY = "time", "purchases", "engagement", "community", "survey"

#: Fields whose change marks a group as changed.
_DETECT: dict[str, tuple[str, ...]] = {
    TIME: ("now",),
    PURCHASES: (
        "orders", "transactions", "revenue", "margin", "discount", "first_order_at", "last_order_at",
        "previous_order_at", "repeat_mean_value", "bought_basic", "bought_advanced",
    ),
    ENGAGEMENT: ("emails_opened", "emails_clicked", "unsubscribed", "hard_bounced"),
    COMMUNITY: ("community_actions", "referrals"),
    SURVEY: ("has_survey",),
}
#: Fields a substitution copies (detection fields plus what is derived from them alone).
#: ``recency_days`` and ``age_days`` depend on time *and* order times: recomputed on mixing.
_COPY: dict[str, tuple[str, ...]] = {
    **_DETECT,
    TIME: ("now", "purchase_days_in_loyal_window", "loyal_until"),
    PURCHASES: _DETECT[PURCHASES] + ("aov", "margin_rate", "mean_interval_days", "purchases_per_year", "repeat_transactions"),
}
_GROUPS = tuple(_DETECT)
#: group -> function returning the group's detected fields of a Features, as a tuple.
_DETECT_VALUES = {group: attrgetter(*names, names[0]) for group, names in _DETECT.items()}  # 2+ names: always a tuple


@dataclass(frozen=True)
class Driver:
    """One input group's share of one score's change."""

    input: str  # the feature that moved, e.g. "recency_days"
    score: str  # the score it moved, e.g. "churn_risk"
    effect: float  # signed change of that score attributed to this input
    text: str  # e.g. "42 days without an order (usually every 20 days) raised churn risk by 0.18"

    def to_dict(self) -> dict:
        return {"input": self.input, "score": self.score, "effect": round(self.effect, 6), "text": self.text}


def explain(
    before: Features | None,
    after: Features,
    scores_before: Scores | None,
    scores_after: Scores,
    rescore: Rescore,
    top: int = 3,
) -> list[Driver]:
    """The ``top`` drivers of the change from ``(before, scores_before)`` to ``(after, scores_after)``.

    ``rescore(features) -> scores`` must be the scoring that produced ``scores_after``.
    Returns ``[]`` when no headline score moved noticeably. With ``before`` None the levels
    of ``scores_after`` are explained (first score of a customer).
    """
    headline = _headline(scores_after)
    if not headline or top <= 0:
        return []
    if before is None:
        return _rank(_first_event(after, scores_after, headline), top)
    changed = [g for g in _GROUPS if _differs(before, after, _DETECT_VALUES[g])]
    if not changed:
        return []
    if scores_before is None:
        scores_before = rescore(before)
    effects = _attribute(before, after, scores_before, scores_after, changed, headline, rescore)
    candidates = []
    for group in changed:
        for key in headline:
            effect = effects[group][key]
            level = max(abs(scores_before.get(key, 0.0)), abs(scores_after.get(key, 0.0)))
            if _negligible(key, effect, level):
                continue
            name, text = _describe(group, key, effect, before, after, scores_after.get(CHURN, 0.0))
            candidates.append((_weight(key, effect, level), Driver(name, key, effect, text)))
    return _rank(candidates, top)


# -- attribution ------------------------------------------------------------------------------


def _attribute(
    before: Features, after: Features, s0: Scores, s1: Scores, changed: list[str], headline: tuple[str, ...], rescore: Rescore
) -> dict[str, dict[str, float]]:
    """group -> score -> effect; effects of a score sum to its total change."""
    total = {key: s1.get(key, 0.0) - s0.get(key, 0.0) for key in headline}
    if len(changed) == 1:
        return {changed[0]: total}
    every = frozenset(changed)
    values: dict[frozenset[str], Scores] = {frozenset(): s0, every: s1}

    def value(taken: frozenset[str]) -> Scores:  # scores of `before` with the `taken` groups from `after`
        if taken not in values:
            values[taken] = rescore(_mix(before, after, taken))
        return values[taken]

    effects: dict[str, dict[str, float]] = {}
    for group in changed:
        alone, without = value(frozenset((group,))), value(every - {group})
        effects[group] = {
            key: 0.5 * ((alone.get(key, 0.0) - s0.get(key, 0.0)) + (s1.get(key, 0.0) - without.get(key, 0.0))) for key in headline
        }
    if len(changed) > 2:  # two players: the average above is already exact Shapley
        for key in headline:
            residual = total[key] - sum(effects[g][key] for g in changed)
            mass = sum(abs(effects[g][key]) for g in changed)
            for g in changed:
                share = abs(effects[g][key]) / mass if mass > 0 else 1.0 / len(changed)
                effects[g][key] += residual * share
    return effects


def _mix(base: Features, donor: Features, groups: frozenset[str]) -> Features:
    """``base`` with ``groups`` taken from ``donor``, recency and age recomputed to match."""
    kw = {name: getattr(donor, name) for group in groups for name in _COPY[group]}
    now = kw.get("now", base.now)
    last = kw["last_order_at"] if "last_order_at" in kw else base.last_order_at
    first = kw["first_order_at"] if "first_order_at" in kw else base.first_order_at
    kw["recency_days"] = max(now - last, 0.0) / DAY if last is not None else 0.0
    kw["age_days"] = max(now - first, 0.0) / DAY if first is not None else 0.0
    return replace(base, **kw)


def _differs(a: Features, b: Features, values: Callable[[Features], tuple]) -> bool:
    xs, ys = values(a), values(b)
    if xs == ys:  # the common case, in one comparison
        return False
    for x, y in zip(xs, ys):
        if x == y:
            continue
        if isinstance(x, float) and isinstance(y, float) and abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y)):
            continue  # summation-order noise
        return True
    return False


# -- ranking ----------------------------------------------------------------------------------


def _headline(scores: Scores) -> tuple[str, ...]:
    keys = [CHURN] if CHURN in scores else []
    clv = next((k for k in CLV_KEYS if k in scores), None)
    if clv:
        keys.append(clv)
    return tuple(keys)


def _negligible(key: str, effect: float, level: float) -> bool:
    if key == CHURN:
        return abs(effect) < MIN_CHURN_EFFECT
    return abs(effect) < MIN_MONEY_EFFECT or abs(effect) < MIN_RELATIVE_CLV_EFFECT * level


def _weight(key: str, effect: float, level: float) -> float:
    """Comparable size: churn in probability, CLV as a fraction of its level."""
    return abs(effect) if key == CHURN else abs(effect) / max(level, CLV_LEVEL_FLOOR)


def _rank(candidates: list[tuple[float, Driver]], top: int) -> list[Driver]:
    candidates.sort(key=lambda c: -c[0])  # stable: ties keep group order
    return [driver for _, driver in candidates[:top]]


# -- words ------------------------------------------------------------------------------------


def money(x: float) -> str:
    """Money with 2 decimals and thousands separators.

    >>> money(1234.5)
    '1,234.50'
    """
    return f"{x:,.2f}"


def days(x: float) -> str:
    """Whole days for people.

    >>> days(41.6), days(1.2), days(0.3)
    ('42 days', '1 day', 'less than a day')
    """
    if x < 0.5:
        return "less than a day"
    n = round(x)
    return "1 day" if n == 1 else f"{n} days"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _moved(key: str, effect: float) -> str:
    verb = "raised" if effect > 0 else "lowered"
    amount = f"{abs(effect):.2f}" if key == CHURN else money(abs(effect))
    return f"{verb} {LABELS.get(key, key)} by {amount}"


def _usually(f: Features) -> str:
    return f"usually every {days(f.mean_interval_days)}"


def _describe(group: str, key: str, effect: float, before: Features, after: Features, churn_after: float) -> tuple[str, str]:
    """(input name, sentence) for ``group``'s effect on score ``key``."""
    if group == TIME:
        if before.last_order_at is None:
            return "recency_days", f"{days((after.now - before.now) / DAY)} passing {_moved(key, effect)}"
        gap = max(after.now - before.last_order_at, 0.0) / DAY
        return "recency_days", f"{days(gap)} without an order ({_usually(before)}) {_moved(key, effect)}"
    if group == PURCHASES:
        return _describe_purchases(key, effect, before, after, churn_after)
    if group == ENGAGEMENT:
        parts, name = [], None
        for field, phrase in (("emails_opened", "email"), ("emails_clicked", "email link")):
            n = getattr(after, field) - getattr(before, field)
            if n:
                name = name or field
                verb = "opened" if field == "emails_opened" else "clicked"
                parts.append(f"{verb} {_plural(n, phrase)}" if n > 0 else f"{_plural(-n, phrase)} fewer {verb}")
        for field, yes, no in (("unsubscribed", "unsubscribed from email", "resubscribed to email"),
                               ("hard_bounced", "email address bounced", "email address deliverable again")):
            if getattr(after, field) != getattr(before, field):
                name = name or field
                parts.append(yes if getattr(after, field) else no)
        return name or "emails_opened", f"{' and '.join(parts) or 'email engagement changing'} {_moved(key, effect)}"
    if group == COMMUNITY:
        parts, name = [], None
        for field, word in (("community_actions", "community action"), ("referrals", "referral")):
            n = getattr(after, field) - getattr(before, field)
            if n:
                name = name or field
                parts.append(f"{_plural(n, 'new ' + word)}" if n > 0 else f"{_plural(-n, word)} fewer")
        return name or "community_actions", f"{' and '.join(parts) or 'community activity changing'} {_moved(key, effect)}"
    what = "answering the survey" if after.has_survey else "the survey answer being withdrawn"
    return "has_survey", f"{what} {_moved(key, effect)}"


def _describe_purchases(key: str, effect: float, before: Features, after: Features, churn_after: float) -> tuple[str, str]:
    new_orders = after.orders - before.orders
    amount = after.revenue - before.revenue
    if new_orders > 0:
        if before.orders == 0:
            if key == CHURN:
                return "orders", f"first order: churn risk starts at the {churn_after:.0%} base rate"
            what = f"first order of {money(amount)}" if new_orders == 1 else f"first {new_orders} orders"
            what += "" if new_orders == 1 else f" totalling {money(amount)}"
            return "orders", f"{what} {_moved(key, effect)}"
        what = f"a new order of {money(amount)}" if new_orders == 1 else f"{new_orders} new orders totalling {money(amount)}"
        if key == CHURN:
            if after.transactions == before.transactions:
                what += " (same day as the last one)"
            elif before.last_order_at is not None and (after.last_order_at or 0.0) > before.last_order_at:
                gap = (after.last_order_at - before.last_order_at) / DAY  # type: ignore[operator]
                what += f" after {days(gap)} without one ({_usually(before)})"
        return "orders", f"{what} {_moved(key, effect)}"
    if new_orders == 0 and amount < 0:
        return "revenue", f"a refund of {money(-amount)} (net revenue now {money(after.revenue)}) {_moved(key, effect)}"
    if new_orders == 0 and amount > 0:
        return "revenue", f"net revenue rising from {money(before.revenue)} to {money(after.revenue)} {_moved(key, effect)}"
    if new_orders == 0 and after.margin != before.margin:
        return "margin", f"margin changing from {money(before.margin)} to {money(after.margin)} {_moved(key, effect)}"
    return "orders", f"changes to the order history {_moved(key, effect)}"


def _first_event(after: Features, scores: Scores, headline: tuple[str, ...]) -> list[tuple[float, Driver]]:
    """Explain the levels of a customer's first scores."""
    if after.orders == 0:
        return []
    out = []
    for key in headline:
        level = scores.get(key, 0.0)
        if _negligible(key, level, abs(level)):
            continue
        if key == CHURN:
            if after.recency_days < 0.5:
                if after.repeat_transactions == 0:
                    text, name = f"new customer: churn risk starts at the {level:.0%} base rate", "orders"
                else:
                    repeats = _plural(after.repeat_transactions, "repeat purchase day")
                    text = f"{repeats} put churn risk at {level:.0%} right after an order"
                    name = "repeat_transactions"
            else:
                text = f"{days(after.recency_days)} without an order ({_usually(after)}) put churn risk at {level:.2f}"
                name = "recency_days"
        else:
            what = (f"first order of {money(after.revenue)}" if after.orders == 1
                    else f"{after.orders} orders totalling {money(after.revenue)}")
            text, name = f"{what} gives a {LABELS.get(key, key)} of {money(level)}", "orders"
        out.append((_weight(key, level, abs(level)), Driver(name, key, level, text)))
    return out

"""Segment families beyond lifecycle and value tier: churn band, email engagement, community,
goal and advocate.

Each rule is a pure function of the customer's state, features and scores at a moment, and
returns the segment with a reason a marketer can read, plus the next moment the segment could
change with *no* new event (engagement fades, a super-user goes quiet, churn risk rises with
silence). The engine keeps that moment in its due-queue, so time drives these families too.
Thresholds live in :class:`~streamer.core.config.ScoringConfig` (the rules file); the
:data:`FAMILIES` registry is the one list of which families exist and in which order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from streamer.core.config import DAY, ScoringConfig, goal_words
from streamer.core.features import Features
from streamer.core.scoring import days_until_risk
from streamer.core.segments import TIMER_SLACK_S, Assignment, band_exit_above, banded, format_date
from streamer.core.state import CustomerState

CHURN_BAND, ENGAGEMENT, COMMUNITY, GOAL, ADVOCATE = "churn_band", "engagement", "community", "goal", "advocate"
CONTRIBUTIONS = ("posts", "replies", "answers_accepted", "reviews")


@dataclass(frozen=True, slots=True)
class Decision:
    """A family's segment for a customer now, and when it could next change on its own."""

    assignment: Assignment
    next_change_at: float | None = None


Rule = Callable[[CustomerState, Features, dict[str, float], ScoringConfig, "str | None"], Decision]


#: The scores a churn band can be drawn from: probabilities where higher means more likely
#: gone (``p_alive`` is the other way round and is not one of them).
CHURN_SCORES = ("churn_risk", "dropout_probability", "p_no_purchase", "churn_risk_learned")


def churn_band(state: CustomerState, f: Features, scores: dict[str, float], config: ScoringConfig, current: str | None) -> Decision:
    """low / medium / high by the first configured churn score the customer has.

    Silence only raises churn risk, so the next change without an event is the moment the
    score crosses the upper edge of the current band (plus hysteresis): exact for the formula
    ``churn_risk``, whose crossing time has a closed form; other scores are re-checked every
    ``recheck_days``.
    """
    rule = config.churn_band
    if f.orders == 0 or f.last_order_at is None:
        return Decision(Assignment(None, "no orders"))
    name = next((s for s in rule.scores if s in scores), None)
    if name is None:
        return Decision(Assignment(None, "no churn score yet"))
    risk = scores[name]
    band = banded(risk, rule.bands, rule.hysteresis, current)
    reason = f"{name.replace('_', ' ')} {risk:.2f}, {f.recency_days:.0f} days since the last order"
    exit_at = band_exit_above(rule.bands, rule.hysteresis, band)
    if exit_at is None:
        return Decision(Assignment(band, reason))
    if name == "churn_risk" and "dropout_probability" in scores:
        if exit_at >= 1.0:
            return Decision(Assignment(band, reason))
        silence = days_until_risk(exit_at, f.mean_interval_days, scores["dropout_probability"])
        at = f.last_order_at + silence * DAY + TIMER_SLACK_S
        return Decision(Assignment(band, reason), at if at > f.now else None)
    return Decision(Assignment(band, reason), f.now + rule.recheck_days * DAY)


def engagement(state: CustomerState, f: Features, scores: dict[str, float], config: ScoringConfig, current: str | None) -> Decision:
    """bounced (hard bounce) / unsubscribed / engaged (opened or clicked within the window) /
    dormant (no open or click within the window, after a grace period for new recipients)."""
    rule = config.engagement
    email = state.email
    if not email:
        return Decision(Assignment(None, "no email activity"))
    if email.get("hard_bounced"):
        return Decision(Assignment("bounced", "the address hard-bounced"))
    if email.get("unsubscribed"):
        return Decision(Assignment("unsubscribed", "unsubscribed from email"))
    window = rule.window_days * DAY
    last = email.get("last_engaged_at")
    if last is not None and f.now - last < window:
        return Decision(
            Assignment("engaged", f"opened or clicked an email on {format_date(last, config.day_of)}, within {rule.window_days:.0f} days"),
            last + window + TIMER_SLACK_S,
        )
    if last is None:
        started = email.get("first_at", f.now)
        if f.now - started < rule.grace_days * DAY:
            return Decision(Assignment(current, "new recipient, not engaged yet"), started + rule.grace_days * DAY + TIMER_SLACK_S)
        return Decision(Assignment("dormant", f"no open or click since emails began on {format_date(started, config.day_of)}"))
    return Decision(Assignment("dormant", f"no open or click for {(f.now - last) / DAY:.0f} days"))


def community(state: CustomerState, f: Features, scores: dict[str, float], config: ScoringConfig, current: str | None) -> Decision:
    """member (joined) / contributor (posts, replies, accepted answers, reviews) / super_user
    (many contributions and active recently; falls back to contributor when quiet)."""
    rule = config.community
    c = state.community
    actions = int(sum(c.get(key, 0) for key in CONTRIBUTIONS))
    if actions == 0 and "joined_at" not in c:
        return Decision(Assignment(None, "not in the community"))
    last = c.get("last_active_at")
    active_for = rule.super_user_active_days * DAY
    if actions >= rule.super_user_actions and last is not None and f.now - last < active_for:
        return Decision(
            Assignment("super_user", f"{actions} contributions, the latest on {format_date(last, config.day_of)}"), last + active_for + TIMER_SLACK_S
        )
    if actions >= rule.contributor_actions:
        quiet = f" (no contribution for {rule.super_user_active_days:.0f} days)" if actions >= rule.super_user_actions else ""
        return Decision(Assignment("contributor", f"{actions} contributions{quiet}"))
    return Decision(Assignment("member", "joined the community"))


def goal(state: CustomerState, f: Features, scores: dict[str, float], config: ScoringConfig, current: str | None) -> Decision:
    """The survey's goal, mapped to a configured category by keyword (``other`` if none).

    Free text never becomes a segment name: segments are metric labels and campaign keys, so
    they come from the configured, bounded list.
    """
    text = state.survey.get("goal")
    if not text:
        return Decision(Assignment(None, "no goal stated"))
    words = goal_words(str(text))
    for category, keywords in config.goal.categories.items():
        if words.intersection(keywords):
            return Decision(Assignment(category, "stated goal matches the category's keywords"))
    return Decision(Assignment("other", "stated goal matches no category"))


def advocate(state: CustomerState, f: Features, scores: dict[str, float], config: ScoringConfig, current: str | None) -> Decision:
    """referrer (made referrals) / reviewer (posted reviews)."""
    rule = config.advocate
    referrals, reviews = int(state.community.get("referrals", 0)), int(state.community.get("reviews", 0))
    if referrals >= rule.referrals:
        return Decision(Assignment("referrer", f"{referrals} referral{'s' if referrals != 1 else ''}"))
    if reviews >= rule.reviews:
        return Decision(Assignment("reviewer", f"{reviews} review{'s' if reviews != 1 else ''}"))
    return Decision(Assignment(None, "no referrals or reviews"))


#: Every family beyond lifecycle and value tier, in the order their changes are published.
FAMILIES: dict[str, Rule] = {
    CHURN_BAND: churn_band,
    ENGAGEMENT: engagement,
    COMMUNITY: community,
    GOAL: goal,
    ADVOCATE: advocate,
}


def earliest(*moments: float | None) -> float | None:
    """The earliest of the given moments, ignoring None (and NaN)."""
    present = [m for m in moments if m is not None and not math.isnan(m)]
    return min(present) if present else None

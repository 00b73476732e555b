"""Campaign triggers: the retention playbook, driven by events and by the clock.

Two kinds:

* **Due** triggers fire when event time reaches a moment computed from the customer's state
  (onboarding steps after the first order, the upsell 30 days into a basic product, the
  survey request, "overdue" past the expected next order). The moment goes into the engine's
  due-queue; ``state.triggers[name][1]`` remembers the latest due moment handled, so each
  moment fires once — across restarts too, since it lives in the changelogged state.
* **Transition** triggers fire when a segment changes (reactivation on entering high churn
  risk, win-back on lapse, VIP welcome on entering the top tier, the advocate invitation),
  or on an event (thanks for a referral).

Every trigger respects its per-customer cooldown and, for email, consent (no email to
unsubscribed or hard-bounced customers). A suppressed trigger is reported with its reason
(for metrics) and is not retried: its moment is handled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from streamer.core.config import DAY, ScoringConfig, TriggerRule
from streamer.core.families import ADVOCATE, CHURN_BAND, COMMUNITY
from streamer.core.features import Features
from streamer.core.segments import LIFECYCLE, VALUE_TIER, format_date
from streamer.core.state import FLAG_ADVANCED, FLAG_BASIC, O_FLAGS, O_TIME, CustomerState, is_void

# Indexes of the per-trigger marks kept in state.triggers[name]; onboarding also keeps the
# last step handled (absent in states stored before it was kept).
LAST_FIRED, HANDLED_DUE, HANDLED_STEP = 0, 1, 2
FIRED, COOLDOWN, CONSENT = "fired", "cooldown", "consent"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A trigger that came due: fired, or suppressed by cooldown or consent."""

    trigger: str
    at: float  # the due moment (event time); part of the trigger's deterministic id
    reason: str
    channel: str
    status: str  # FIRED, COOLDOWN or CONSENT
    step: int | None = None  # onboarding step, 1-based


class Due(NamedTuple):
    """A due trigger's next moment and what it would say then. (A named tuple: several are
    made for every score update, and a frozen dataclass costs ~1 µs each to build.)"""

    at: float
    #: Builds the reason: most due moments never fire, so their words are not written.
    describe: Callable[[], str]
    step: int | None = None

    @property
    def reason(self) -> str:
        return self.describe()


def first_basic_since_advanced(state: CustomerState) -> float | None:
    """When the customer started on basic products: the first basic purchase after their
    last advanced one (None when they own an advanced product bought later, or no basic)."""
    last_advanced = None
    basics: list[float] = []  # times of orders with a basic product and no advanced one
    refunds = state.refunds
    for order_id, order in state.orders.items():
        if refunds and is_void(order, refunds.get(order_id)):
            continue  # returned: a basic product sent back is no start on basic
        flags = int(order[O_FLAGS])
        if flags & FLAG_ADVANCED:
            if last_advanced is None or order[O_TIME] > last_advanced:
                last_advanced = order[O_TIME]
        elif flags & FLAG_BASIC:
            basics.append(order[O_TIME])
    if last_advanced is not None:
        basics = [t for t in basics if t > last_advanced]
    return min(basics) if basics else None


def _onboarding_reason(step: int, steps: int, days: float, first_order_at: float, config: ScoringConfig) -> Callable[[], str]:
    def reason() -> str:
        return f"onboarding step {step} of {steps}: {days:g} days after the first order on {format_date(first_order_at, config.day_of)}"

    return reason


def due_moments(name: str, rule: TriggerRule, state: CustomerState, f: Features, segments: dict[str, str | None], config: ScoringConfig) -> list[Due]:
    """Every due moment of trigger ``name`` for this customer as things stand (any order)."""
    if not f.orders or f.first_order_at is None or f.last_order_at is None:
        return []
    if name == "onboarding":
        return [
            Due(f.first_order_at + days * DAY, _onboarding_reason(i, len(rule.days), days, f.first_order_at, config), i)
            for i, days in enumerate(rule.days, start=1)
        ]
    if name == "upsell_advanced":
        started = first_basic_since_advanced(state)
        if started is None or not rule.days:
            return []
        return [Due(started + rule.days[0] * DAY, lambda: f"{rule.days[0]:g} days on a basic product (since {format_date(started, config.day_of)}) and no advanced one")]
    if name == "survey_request":
        if f.has_survey or not rule.days:
            return []
        return [Due(f.first_order_at + rule.days[0] * DAY, lambda: f"no survey answer {rule.days[0]:g} days after the first order")]
    if name == "overdue":
        if segments.get(LIFECYCLE) == "lapsed":
            return []
        wait = rule.factor * f.mean_interval_days
        if wait >= config.lapse_days:
            return []  # past that it is a lapse: win-back's job
        return [Due(f.last_order_at + wait * DAY, lambda: f"no order {wait:.0f} days after the last one ({rule.factor:g} × the usual {f.mean_interval_days:.0f}-day interval)")]
    return []


DUE_TRIGGERS = ("onboarding", "upsell_advanced", "survey_request", "overdue")


def transition_reasons(
    old: dict[str, str | None], new: dict[str, str | None], cause_type: str | None, config: ScoringConfig
) -> dict[str, str]:
    """Transition triggers that this evaluation sets off: name -> reason."""
    out: dict[str, str] = {}
    # The riskiest band and the top tier are the first configured ones, whatever their names.
    high, top = config.churn_band.bands[0][0], config.value_tiers[0][0]
    if new.get(CHURN_BAND) == high and old.get(CHURN_BAND) not in (None, high) and new.get(LIFECYCLE) != "lapsed":
        out["reactivation"] = f"churn risk rose from {old.get(CHURN_BAND)} to {high}"
    if new.get(LIFECYCLE) == "lapsed" and old.get(LIFECYCLE) not in (None, "lapsed"):
        out["win_back"] = f"lapsed: no order for {config.lapse_days:.0f} days"
    if new.get(VALUE_TIER) == top and old.get(VALUE_TIER) != top:
        out["vip_welcome"] = f"entered the {top} value tier"
    tiers = config.triggers["advocate_invitation"].value_tiers if "advocate_invitation" in config.triggers else ()

    def advocate_ready(segs: dict[str, str | None]) -> bool:
        return segs.get(COMMUNITY) == "super_user" and segs.get(VALUE_TIER) in tiers

    if advocate_ready(new) and not advocate_ready(old):
        out["advocate_invitation"] = f"community super-user with {new.get(VALUE_TIER)} value"
    if cause_type == "Referral Made":
        out["referral_thanks"] = "made a referral" + (" (advocate)" if new.get(ADVOCATE) == "referrer" else "")
    return out


def _settle(state: CustomerState, name: str, rule: TriggerRule, f: Features, at: float, reason: str, step: int | None) -> Outcome:
    """Decide whether a trigger that came due fires, and record it."""
    marks = state.triggers.setdefault(name, [0.0, 0.0])
    if rule.channel == "email" and (f.unsubscribed or f.hard_bounced):
        status = CONSENT
    elif marks[LAST_FIRED] and at - marks[LAST_FIRED] < rule.cooldown_days * DAY:
        status = COOLDOWN
    else:
        status = FIRED
        marks[LAST_FIRED] = at
    return Outcome(name, at, reason, rule.channel, status, step)


def evaluate(
    state: CustomerState,
    f: Features,
    old_segments: dict[str, str | None],
    cause_type: str | None,
    config: ScoringConfig,
) -> tuple[list[Outcome], float | None]:
    """The triggers that come due for ``state`` at ``f.now`` (recorded in ``state.triggers``),
    and the next moment a due trigger will come due with no new event."""
    outcomes: list[Outcome] = []
    next_at: float | None = None
    new_segments = state.segments
    now = f.now
    for name in DUE_TRIGGERS:
        rule = config.triggers.get(name)
        if rule is None or not rule.enabled:
            continue
        marks = state.triggers.get(name)
        handled = marks[HANDLED_DUE] if marks is not None else 0.0
        # Onboarding steps are counted from the first order, which moves when that order is
        # refunded in full: steps already handled must not come due again from the new one.
        handled_step = marks[HANDLED_STEP] if marks is not None and len(marks) > HANDLED_STEP else 0
        if handled_step and not f.orders and marks is not None:
            # Every order returned: no customer any more (the lifecycle is left too). A new
            # first order starts the onboarding afresh, as for someone never seen.
            del marks[HANDLED_STEP:]
            handled_step = 0
        # The latest moment already reached (of equal ones the last listed, as a stable sort
        # by time would give) and the earliest moment still ahead.
        latest: Due | None = None
        ahead: float | None = None
        for due in due_moments(name, rule, state, f, new_segments, config):
            at = due.at
            if at <= handled or (due.step is not None and due.step <= handled_step):
                continue
            if at <= now:
                if latest is None or at >= latest.at:
                    latest = due
            elif ahead is None or at < ahead:
                ahead = at
        if latest is not None:
            # Only the latest moment fires: a customer first seen late (or a replay that
            # starts mid-sequence) gets one onboarding mail, not four at once.
            outcomes.append(_settle(state, name, rule, f, latest.at, latest.reason, latest.step))
            marks = state.triggers[name]
            marks[HANDLED_DUE] = latest.at
            if latest.step is not None:
                del marks[HANDLED_STEP:]
                marks.append(float(latest.step))
        if ahead is not None and (next_at is None or ahead < next_at):
            next_at = ahead
    for name, reason in transition_reasons(old_segments, new_segments, cause_type, config).items():
        rule = config.triggers.get(name)
        if rule is not None and rule.enabled:
            outcomes.append(_settle(state, name, rule, f, f.now, reason, None))
    return outcomes, next_at

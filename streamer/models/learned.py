"""The online learners as a scorer: predictions from the current River models, and the
delayed-label bookkeeping the engine calls when a customer is evaluated.

Each customer has at most one prediction in flight: a :class:`Snapshot` of its features (and
the BG/NBD expectation over the learning horizon) taken when it is scored and none is pending.
It lives in the customer's state — so it survives restarts and rebalances with the changelog
— and the engine's due-queue wakes the customer when the horizon has passed in event time.
The label is then read off the customer's own orders in the window, exactly once, and the
models learn from it after scoring it (progressive validation).
"""

from __future__ import annotations

from streamer.core.config import DAY, DayOf, utc_day
from streamer.core.features import Features
from streamer.core.state import CustomerState
from streamer.models.online import DelayedLabelLearner, Snapshot, feature_vector, label_from_orders, order_times_and_values
from streamer.models.scorer import BTYDScorer, btyd_inputs, horizon_scores


def p_alive_learned(churn_risk: float, p_alive: float, p_no_purchase: float) -> float:
    """P(still alive) implied by the learned churn risk, with BG/NBD's P(no purchase | alive).

    BG/NBD splits P(no purchase in the horizon) = (1 − P(alive)) + P(alive) · q, where q is the
    chance that a live customer is merely quiet for that long. The learned churn risk moves
    the left side; reading q from BG/NBD (as of the same history) attributes the move to being
    alive or not. On the simulator it ranks the truly dead better than BG/NBD's own P(alive)
    (ROC AUC 0.883 vs 0.855, seed 7), because the dead also stop opening mail.

    >>> round(p_alive_learned(churn_risk=0.5, p_alive=0.8, p_no_purchase=0.5), 4)  # as BG/NBD: q = 0.375
    0.8
    >>> round(p_alive_learned(churn_risk=0.8, p_alive=0.8, p_no_purchase=0.5), 4)  # more churn: less alive
    0.32
    >>> p_alive_learned(churn_risk=0.1, p_alive=0.8, p_no_purchase=0.5)  # beyond BG/NBD's range: capped
    1.0
    """
    if p_alive <= 0.0:
        return 0.0
    quiet_if_alive = min(max((p_no_purchase - (1.0 - p_alive)) / p_alive, 0.0), 1.0)
    if quiet_if_alive >= 1.0:
        return p_alive
    return min(max((1.0 - churn_risk) / (1.0 - quiet_if_alive), 0.0), 1.0)


class LearnedScorer:
    """``churn_risk_learned`` and ``expected_purchases_learned`` over the learning horizon, and
    the ``p_alive_learned`` they imply: BG/NBD corrected by what it ignores (engagement and when
    it last happened, community, surveys, discounts, tiers)."""

    name = "online"

    def __init__(
        self, btyd: BTYDScorer, horizon_days: float = 90.0, learner: DelayedLabelLearner | None = None, day_of: DayOf = utc_day
    ) -> None:
        self.btyd = btyd
        self.day_of = day_of  # the shop's purchase days (ScoringConfig.day_of), for the labels
        btyd.extra_horizon = horizon_days  # computed with every BTYD score: inputs() reuses it
        self.horizon_days = horizon_days
        self.learner = learner or DelayedLabelLearner(horizon_s=horizon_days * DAY)

    @property
    def version(self) -> str:
        return str(self.learner.version)

    def inputs(self, features: Features) -> tuple[dict[str, float], float]:
        """The learners' feature vector and the BG/NBD expectation over their horizon."""
        btyd_h = self.btyd.quantities(features, self.horizon_days)[1] if features.orders else {}
        return feature_vector(features, btyd_h), btyd_h.get("expected_purchases", 0.0)

    def predict_one(self, features: Features, scores: dict[str, float]) -> dict[str, float]:
        if features.orders == 0:
            return {}
        x, expected = self.inputs(features)
        out = self.learner.predict(x, expected)
        out["p_alive_learned"] = p_alive_learned(out["churn_risk_learned"], x["p_alive"], x["p_no_purchase"])
        return out

    def label_due(self, state: CustomerState) -> float | None:
        """Event time at which the customer's pending prediction can be labelled."""
        return state.pending[1] + self.horizon_days * DAY if state.pending else None

    def learn_if_due(self, state: CustomerState, now: float) -> bool | None:
        """Learn from the pending prediction if its horizon has passed; returns the drift
        flag, or None when nothing was learned. Clears the pending prediction either way
        once due (a snapshot of an older feature format is dropped, not learned)."""
        due = self.label_due(state)
        if due is None or due > now:
            return None
        raw, state.pending = state.pending, None
        if raw is None:
            return None
        try:
            snapshot = Snapshot.from_list(raw)
        except ValueError:
            return None
        # The correction is learned against the BG/NBD in force now, which is the one it will
        # be applied to (see Snapshot).
        snapshot = snapshot.reoffset(horizon_scores(self.btyd.model, *snapshot.history, self.horizon_days))
        days, _spend = label_from_orders(order_times_and_values(state), snapshot.at, self.horizon_days * DAY, self.day_of)
        return self.learner.learn(snapshot, days == 0, float(days), due)

    def remember(self, state: CustomerState, features: Features, now: float) -> None:
        """Take a snapshot to be labelled later, if none is pending."""
        if state.pending is None and features.orders > 0:
            x, expected = self.inputs(features)
            state.pending = Snapshot(now, x, expected, btyd_inputs(features)).to_list()

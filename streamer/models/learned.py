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

from streamer.core.config import DAY
from streamer.core.features import Features
from streamer.core.state import CustomerState
from streamer.models.online import DelayedLabelLearner, Snapshot, feature_vector, label_from_orders, order_times_and_values
from streamer.models.scorer import BTYDScorer, btyd_inputs, horizon_scores


class LearnedScorer:
    """``churn_risk_learned`` and ``expected_purchases_learned`` over the learning horizon:
    BG/NBD corrected by what it ignores (engagement, community, surveys, discounts, tiers)."""

    name = "online"

    def __init__(self, btyd: BTYDScorer, horizon_days: float = 90.0, learner: DelayedLabelLearner | None = None) -> None:
        self.btyd = btyd
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
        return self.learner.predict(x, expected)

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
        try:
            snapshot = Snapshot.from_list(raw)
        except ValueError:
            return None
        # The correction is learned against the BG/NBD in force now, which is the one it will
        # be applied to (see Snapshot).
        snapshot = snapshot.reoffset(horizon_scores(self.btyd.model, *snapshot.history, self.horizon_days))
        days, _spend = label_from_orders(order_times_and_values(state), snapshot.at, self.horizon_days * DAY)
        return self.learner.learn(snapshot, days == 0, float(days), due)

    def remember(self, state: CustomerState, features: Features, now: float) -> None:
        """Take a snapshot to be labelled later, if none is pending."""
        if state.pending is None and features.orders > 0:
            x, expected = self.inputs(features)
            state.pending = Snapshot(now, x, expected, btyd_inputs(features)).to_list()

"""Scores computed from :class:`~streamer.core.features.Features`.

Each scorer is a tiny class in the River style — ``predict_one(features) -> dict`` — with a
``name`` and ``version``; :func:`model_version` joins them so every published score names
exactly which models produced it. Later models (BG/NBD, River learners) plug in as more
scorers whose keys are merged in order, each able to read what the earlier ones produced.
"""

from __future__ import annotations

import math
from typing import Protocol

from streamer.core.config import ScoringConfig
from streamer.core.features import Features, annuity_years


class Scorer(Protocol):
    name: str

    @property
    def version(self) -> str: ...

    def predict_one(self, features: Features, scores: dict[str, float]) -> dict[str, float]:
        """Return new score keys, given the features and the scores computed so far."""


def dropout_probability(repeat_transactions: int, config: ScoringConfig) -> float:
    """Posterior mean of BG/NBD's per-purchase dropout probability p under a Beta(a, b) prior.

    >>> round(dropout_probability(0, ScoringConfig()), 3)
    0.25
    >>> round(dropout_probability(6, ScoringConfig()), 3)
    0.087
    """
    a, b = config.dropout_prior_a, config.dropout_prior_b
    return a / (a + b + repeat_transactions)


def churn_risk(recency_days: float, mean_interval_days: float, dropout: float) -> float:
    """P(the customer has dropped out | no purchase for ``recency_days``).

    Model: after each purchase the customer drops out with probability ``dropout``; a customer
    who stays buys again after an exponential wait with mean ``mean_interval_days``. Bayes:
    P(alive | silence t) = (1-p)·e^(-t/μ) / ((1-p)·e^(-t/μ) + p). Risk rises from p right after
    a purchase toward 1 as silence grows relative to the customer's *own* rhythm.

    >>> churn_risk(0, 30, 0.25)
    0.25
    >>> round(churn_risk(90, 30, 0.25), 3)  # three usual intervals of silence
    0.87
    """
    stay = (1.0 - dropout) * math.exp(-recency_days / mean_interval_days)
    return 1.0 - stay / (stay + dropout)


def days_until_risk(threshold: float, mean_interval_days: float, dropout: float) -> float:
    """Silence (days) after which :func:`churn_risk` reaches ``threshold`` (0 if already)."""
    if dropout >= threshold:
        return 0.0
    return mean_interval_days * math.log(threshold * (1.0 - dropout) / ((1.0 - threshold) * dropout))


class FormulaScorer:
    """Historic CLV, churn risk from recency vs own rhythm, and the classic formula CLV.

    formula CLV = value per purchase day (AOV, with same-day orders as one purchase) ×
    purchases/year × margin rate × annuity(lifetime, discount rate) × (1 − churn risk): the textbook "average order value × purchase frequency × relationship
    duration" with margin, discounting, and weighted by the chance the customer is still there.
    """

    name = "formula"
    version = "1"

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        self._annuity = annuity_years(config.expected_lifetime_years, config.annual_discount_rate)

    def predict_one(self, features: Features, scores: dict[str, float]) -> dict[str, float]:
        if features.orders == 0:
            return {"historic_clv": 0.0, "formula_clv": 0.0, "churn_risk": 0.0, "dropout_probability": 0.0}
        dropout = dropout_probability(features.repeat_transactions, self.config)
        risk = churn_risk(features.recency_days, features.mean_interval_days, dropout)
        # Frequency counts purchase days, so the value multiplied by it is per purchase day
        # (= AOV when each day has one order); otherwise same-day orders would be undercounted.
        value_per_purchase = features.revenue / features.transactions if features.transactions else 0.0
        annual_margin = value_per_purchase * features.purchases_per_year * features.margin_rate
        return {
            "historic_clv": features.margin,
            "formula_clv": max(annual_margin * self._annuity * (1.0 - risk), 0.0),
            "churn_risk": risk,
            "dropout_probability": dropout,
        }


def model_version(scorers: list[Scorer]) -> str:
    """e.g. ``"formula-1"``; ``"formula-1+bgnbd-3"`` once more models are on."""
    return "+".join(f"{s.name}-{s.version}" for s in scorers)


def score(features: Features, scorers: list[Scorer]) -> dict[str, float]:
    """Run every scorer in order, merging their outputs."""
    scores: dict[str, float] = {}
    for scorer in scorers:
        scores.update(scorer.predict_one(features, scores))
    return scores

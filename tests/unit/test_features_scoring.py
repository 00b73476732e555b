"""features.compute and the formula scores, against numbers worked out independently here."""

from __future__ import annotations

import math

import pytest
from corekit import DAY, T0, features_at, order, refund, scored
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.config import ScoringConfig
from streamer.core.features import Features, annuity_years, compute
from streamer.core.scoring import FormulaScorer, churn_risk, days_until_risk, dropout_probability, model_version, score
from streamer.core.state import CustomerState

CFG = ScoringConfig()
H = 3600.0

# -- features ---------------------------------------------------------------------------------


def test_features_without_orders():
    f = compute(CustomerState("c1"), T0, CFG)
    assert (f.orders, f.transactions, f.revenue, f.margin, f.aov, f.margin_rate) == (0, 0, 0.0, 0.0, 0.0, 0.0)
    assert (f.first_order_at, f.last_order_at, f.previous_order_at, f.loyal_until) == (None, None, None, None)
    assert (f.recency_days, f.age_days, f.repeat_transactions) == (0.0, 0.0, 0)
    assert f.mean_interval_days == 90.0  # the prior alone
    assert f.purchases_per_year == pytest.approx(365.25 / 90.0)


def test_features_of_a_concrete_history():
    events = [
        order("o1", T0 + 10 * H, 100.0, 30.0, discount=10.0),
        order("o2", T0 + 30 * DAY + 10 * H, 200.0, 50.0, advanced=True, basic=False),
        refund("r1", "o2", T0 + 35 * DAY, 50.0),
        order("o3", T0 + 60 * DAY + 10 * H, 60.0, 16.0),
        order("o4", T0 + 60 * DAY + 15 * H, 40.0, 12.0),
    ]
    now = T0 + 75 * DAY + 10 * H
    f = features_at(events, now)
    assert (f.orders, f.transactions, f.repeat_transactions) == (4, 3, 2)
    assert f.revenue == pytest.approx(350.0)
    assert f.margin == pytest.approx(95.5)
    assert f.discount == pytest.approx(10.0)
    assert f.aov == pytest.approx(87.5)
    assert f.margin_rate == pytest.approx(95.5 / 350.0)
    assert (f.first_order_at, f.last_order_at) == (T0 + 10 * H, T0 + 60 * DAY + 15 * H)
    assert f.previous_order_at == T0 + 30 * DAY + 10 * H
    assert f.recency_days == pytest.approx(15 - 5 / 24)
    assert f.age_days == pytest.approx(75.0)
    span = 60 + 5 / 24
    assert f.mean_interval_days == pytest.approx((span + 90.0) / 3)
    assert f.purchases_per_year == pytest.approx(365.25 * 3 / (span + 90.0))
    assert f.purchase_days_in_loyal_window == 3
    assert f.loyal_until == T0 + 10 * H + 180 * DAY  # the third-latest purchase day leaves the window
    assert (f.bought_basic, f.bought_advanced) == (True, True)
    summary = f.summary()
    assert summary["margin_rate"] == round(95.5 / 350.0, 4)
    assert summary["orders"] == 4 and summary["first_order_at"] == T0 + 10 * H


def test_loyal_window_counts_purchase_days_and_uses_each_days_latest_order():
    events = [order("a", T0 + 1 * H, 1.0, 0.0), order("b", T0 + 20 * H, 1.0, 0.0),
              order("c", T0 + 10 * DAY, 1.0, 0.0), order("d", T0 + 20 * DAY, 1.0, 0.0)]
    f = features_at(events, T0 + 21 * DAY)
    assert f.purchase_days_in_loyal_window == 3
    assert f.loyal_until == T0 + 20 * H + 180 * DAY
    # Outside the window (strictly older than now - 180 days) a day no longer counts.
    f = features_at(events, T0 + 20 * H + 180 * DAY)
    assert (f.purchase_days_in_loyal_window, f.loyal_until) == (2, None)


def test_orders_later_than_now_are_outside_the_loyal_window():
    events = [order(f"o{i}", T0 + i * DAY, 1.0, 0.0) for i in range(3)]
    assert features_at(events, T0 + 1.5 * DAY).purchase_days_in_loyal_window == 2


def test_annuity_years():
    assert annuity_years(3.0, 0.10) == pytest.approx((1 - 1.1**-3) / math.log(1.1))
    assert annuity_years(3.0, 0.10) == pytest.approx(2.6092197035928555, rel=1e-12)
    assert annuity_years(5.0, 0.0) == 5.0
    assert annuity_years(2.0, 1e-12) == pytest.approx(2.0, rel=1e-9)  # no cancellation for tiny rates
    assert annuity_years(1.0, 1e-6) == pytest.approx((1 - (1 + 1e-6) ** -1) / math.log1p(1e-6), rel=1e-6)
    assert annuity_years(1000.0, 0.10) == pytest.approx(1 / math.log(1.1), rel=1e-12)  # perpetuity
    assert annuity_years(0.0, 0.10) == 0.0


@given(st.just(0.0) | st.floats(1e-6, 50.0), st.just(0.0) | st.floats(1e-12, 1.0))  # no subnormals
def test_annuity_is_at_most_the_undiscounted_years(years, rate):
    assert 0.0 <= annuity_years(years, rate) <= years * (1 + 1e-12)


# -- dropout and churn risk --------------------------------------------------------------------


def test_dropout_probability():
    assert dropout_probability(0, CFG) == pytest.approx(0.25)
    assert dropout_probability(6, CFG) == pytest.approx(0.8 / 9.2)
    assert dropout_probability(2, ScoringConfig(dropout_prior_a=1.0, dropout_prior_b=1.0)) == pytest.approx(0.25)


@given(st.integers(0, 10_000))
def test_dropout_probability_falls_with_repeats(repeats):
    p = dropout_probability(repeats, CFG)
    assert 0.0 < dropout_probability(repeats + 1, CFG) < p <= 0.25


def test_churn_risk_values():
    assert churn_risk(0.0, 30.0, 0.25) == pytest.approx(0.25)
    stay = 0.75 * math.exp(-3.0)
    assert churn_risk(90.0, 30.0, 0.25) == pytest.approx(0.25 / (stay + 0.25))
    assert churn_risk(90.0, 30.0, 0.25) == pytest.approx(0.870049, abs=1e-6)
    assert churn_risk(10_000.0, 30.0, 0.25) == pytest.approx(1.0)


def test_days_until_risk_values():
    # one order: p = 0.25, mean interval 90 days -> 90 ln(0.6 * 0.75 / (0.4 * 0.25)) = 90 ln 4.5
    assert days_until_risk(0.6, 90.0, 0.25) == pytest.approx(90 * math.log(4.5))
    assert days_until_risk(0.6, 90.0, 0.25) == pytest.approx(135.3669657, abs=1e-6)
    assert days_until_risk(0.6, 90.0, 0.6) == 0.0
    assert days_until_risk(0.6, 90.0, 0.9) == 0.0


probabilities = st.floats(0.001, 0.999)
intervals = st.floats(0.5, 2000.0)


@settings(max_examples=300)
@given(threshold=probabilities, mean=intervals, dropout=probabilities)
def test_days_until_risk_is_where_churn_risk_reaches_the_threshold(threshold, mean, dropout):
    days = days_until_risk(threshold, mean, dropout)
    if dropout >= threshold:
        assert days == 0.0
        assert churn_risk(0.0, mean, dropout) >= threshold - 1e-12  # at risk from the purchase on
        return
    assert days > 0.0
    assert abs(churn_risk(days, mean, dropout) - threshold) <= 1e-9
    if threshold - dropout > 1e-6:  # else the crossing is within float noise of zero days
        assert churn_risk(days * 0.99, mean, dropout) < threshold
        assert churn_risk(days * 1.01, mean, dropout) > threshold


@settings(max_examples=300)
@given(a=st.floats(0.0, 5000.0), b=st.floats(0.0, 5000.0), mean=intervals, dropout=probabilities)
def test_churn_risk_is_monotone_in_recency(a, b, mean, dropout):
    lo, hi = min(a, b), max(a, b)
    r_lo, r_hi = churn_risk(lo, mean, dropout), churn_risk(hi, mean, dropout)
    assert dropout - 1e-12 <= r_lo <= r_hi <= 1.0


@given(recency=st.floats(0.1, 500.0), dropout=probabilities)
def test_churn_risk_falls_with_a_longer_own_rhythm(recency, dropout):
    assert churn_risk(recency, 30.0, dropout) >= churn_risk(recency, 60.0, dropout)


# -- formula scorer ------------------------------------------------------------------------------


def test_formula_clv_hand_computed():
    events = [
        order("o1", T0 + 10 * H, 100.0, 30.0),
        order("o2", T0 + 30 * DAY + 10 * H, 200.0, 50.0),
        refund("r1", "o2", T0 + 35 * DAY, 50.0),
        order("o3", T0 + 60 * DAY + 10 * H, 60.0, 16.0),
        order("o4", T0 + 60 * DAY + 15 * H, 40.0, 12.0),
    ]
    f, scores = scored(events, T0 + 75 * DAY + 10 * H)
    # Written out from the FormulaScorer docstring:
    # CLV = AOV x purchases/year x margin rate x annuity(3 y, 10 %) x (1 - churn risk)
    aov = 350.0 / 3  # revenue net of the refund / purchase days (o3 and o4 share a day)
    margin_rate = (30.0 + 50.0 * 150 / 200 + 16.0 + 12.0) / 350.0
    mean_interval = ((60 + 5 / 24) + 90.0 * 1) / (2 + 1)  # (span + prior) / (repeat days + prior weight)
    per_year = 365.25 / mean_interval
    p = 0.8 / (0.8 + 2.4 + 2)
    recency = 15 - 5 / 24
    stay = (1 - p) * math.exp(-recency / mean_interval)
    risk = 1 - stay / (stay + p)
    annuity = (1 - 1.1**-3) / math.log(1.1)
    expected = aov * per_year * margin_rate * annuity * (1 - risk)
    assert scores["formula_clv"] == pytest.approx(expected, rel=1e-12)
    assert scores["formula_clv"] == pytest.approx(365.2107452757757 * 4 / 3, rel=1e-9)
    assert scores["churn_risk"] == pytest.approx(risk, rel=1e-12)
    assert scores["dropout_probability"] == pytest.approx(p, rel=1e-12)
    assert scores["historic_clv"] == pytest.approx(95.5)
    assert set(scores) == {"historic_clv", "formula_clv", "churn_risk", "dropout_probability"}


def test_formula_scores_without_orders_are_zero():
    f = compute(CustomerState("c1"), T0, CFG)
    assert FormulaScorer(CFG).predict_one(f, {}) == {
        "historic_clv": 0.0, "formula_clv": 0.0, "churn_risk": 0.0, "dropout_probability": 0.0,
    }


def test_formula_clv_is_never_negative():
    _, scores = scored([order("o1", T0, 100.0, -40.0)], T0 + DAY)
    assert scores["historic_clv"] == -40.0
    assert scores["formula_clv"] == 0.0


def test_single_order_right_after_purchase():
    _, scores = scored([order("o1", T0, 120.0, 30.0)], T0)
    assert scores["churn_risk"] == pytest.approx(0.25)
    annuity = (1 - 1.1**-3) / math.log(1.1)
    assert scores["formula_clv"] == pytest.approx(30.0 * 365.25 / 90.0 * annuity * 0.75)


def test_config_changes_the_formula():
    cfg = ScoringConfig(annual_discount_rate=0.0, expected_lifetime_years=2.0, prior_interval_days=365.25)
    _, scores = scored([order("o1", T0, 100.0, 50.0)], T0, cfg)
    assert scores["formula_clv"] == pytest.approx(50.0 * 1.0 * 2.0 * 0.75)


class _Doubler:
    name, version = "double", "2"

    def predict_one(self, features: Features, scores: dict[str, float]) -> dict[str, float]:
        return {"double_clv": 2 * scores["formula_clv"], "churn_risk": 0.5}


def test_model_version_and_merge_order():
    scorers = [FormulaScorer(CFG), _Doubler()]
    assert model_version(scorers) == "formula-1+double-2"
    assert model_version([FormulaScorer(CFG)]) == "formula-1"
    f = features_at([order("o1", T0, 120.0, 30.0)], T0 + 10 * DAY)
    scores = score(f, scorers)
    alone = score(f, scorers[:1])
    assert scores["double_clv"] == pytest.approx(2 * alone["formula_clv"])
    assert scores["churn_risk"] == 0.5  # later scorers override earlier keys
    assert alone["churn_risk"] != 0.5


def test_repeat_mean_value_leaves_out_the_first_purchase_day_and_joins_same_day_orders() -> None:
    events = [
        order("o1", T0 + 3600, 100.0),
        order("o2", T0 + 10 * DAY, 40.0),
        order("o3", T0 + 10 * DAY + 3600, 20.0),  # same day as o2: one purchase worth 60
        order("o4", T0 + 20 * DAY, 30.0),
        refund("r1", "o4", T0 + 21 * DAY, 10.0),
    ]
    f = features_at(events, T0 + 30 * DAY, ScoringConfig())
    assert f.repeat_mean_value == pytest.approx((60.0 + 20.0) / 2)
    # The same with the first orders folded into the archive.
    folded = features_at(events, T0 + 30 * DAY, ScoringConfig(max_orders_kept=1))
    assert folded.repeat_mean_value == pytest.approx((60.0 + 20.0) / 2)
    assert features_at(events[:1], T0 + 30 * DAY, ScoringConfig()).repeat_mean_value == 0.0

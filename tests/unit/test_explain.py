"""explain: top drivers of a score update, by one-at-a-time substitution (Shapley over input groups)."""

from __future__ import annotations

import pytest
from corekit import DAY, T0, features_at, fold, order, other, refund

from streamer.core.config import ScoringConfig
from streamer.core.explain import Driver, explain
from streamer.core.features import compute
from streamer.core.scoring import FormulaScorer, score
from streamer.models.scorer import BTYDScorer

CFG = ScoringConfig()
SCORERS = [FormulaScorer(CFG), BTYDScorer()]


class Rescore:
    """score(f, [FormulaScorer, BTYDScorer]) that counts its calls."""

    def __init__(self, scorers=SCORERS) -> None:
        self.scorers = scorers
        self.calls = 0

    def __call__(self, f):
        self.calls += 1
        return score(f, self.scorers)


HISTORY = [order("o1", T0, 80.0, 24.0), order("o2", T0 + 20 * DAY, 100.0, 30.0), order("o3", T0 + 40 * DAY, 90.0, 27.0)]
LATE_ORDER = order("o4", T0 + 130 * DAY, 120.0, 36.0)


def run(before, after, rescore=None, top=3):
    rescore = rescore or Rescore()
    sb = score(before, SCORERS) if before is not None else None
    sa = score(after, SCORERS)
    return explain(before, after, sb, sa, rescore, top=top), sb, sa, rescore


def of(drivers, score_key, input_name=None):
    return [d for d in drivers if d.score == score_key and (input_name is None or d.input == input_name)]


# -- the scenarios -----------------------------------------------------------------------------


def test_new_order_after_long_gap_lowers_churn_and_says_so():
    now = T0 + 130 * DAY
    before, after = features_at(HISTORY, now), features_at([*HISTORY, LATE_ORDER], now)  # same moment, one event
    drivers, sb, sa, rescore = run(before, after)
    assert sa["churn_risk"] < sb["churn_risk"]
    assert drivers[0].input == "orders"  # the order is the top driver
    (churn,) = of(drivers, "churn_risk")
    assert churn.input == "orders" and churn.effect < 0
    assert churn.effect == pytest.approx(sa["churn_risk"] - sb["churn_risk"])
    assert "a new order of 120.00 after 90 days without one" in churn.text
    assert "lowered churn risk by" in churn.text
    (clv,) = of(drivers, "predicted_clv")
    assert clv.effect > 0 and "raised predicted CLV by" in clv.text
    assert rescore.calls == 0  # one group changed: exact without re-scoring


def test_new_order_since_the_last_score_splits_time_and_order():
    """Before = the last score (at the previous order); the order comes 90 days later."""
    before, after = features_at(HISTORY, T0 + 40 * DAY), features_at([*HISTORY, LATE_ORDER], T0 + 130 * DAY)
    drivers, sb, sa, rescore = run(before, after, top=10)
    assert rescore.calls == 2  # two groups (budget 2 × 2): two substitutions suffice
    order_churn = of(drivers, "churn_risk", "orders")[0]
    time_churn = of(drivers, "churn_risk", "recency_days")[0]
    assert order_churn.effect < 0 and "lowered churn risk" in order_churn.text
    assert time_churn.effect > 0 and "90 days without an order" in time_churn.text
    # two groups: the forward/reverse average is the exact Shapley value, so effects add up
    for key in ("churn_risk", "predicted_clv"):
        assert sum(d.effect for d in of(drivers, key)) == pytest.approx(sa[key] - sb[key], abs=1e-9)


def test_time_passing_raises_churn_risk():
    state_events = HISTORY
    before, after = features_at(state_events, T0 + 50 * DAY), features_at(state_events, T0 + 82 * DAY)  # timer re-score
    drivers, sb, sa, rescore = run(before, after)
    (churn,) = of(drivers, "churn_risk")
    assert churn.input == "recency_days" and churn.effect > 0
    assert "42 days without an order" in churn.text and "raised churn risk by 0.14" in churn.text
    assert churn.effect == pytest.approx(sa["churn_risk"] - sb["churn_risk"])
    (clv,) = of(drivers, "predicted_clv")
    assert clv.effect < 0 and "days without an order" in clv.text and "lowered predicted CLV" in clv.text
    assert rescore.calls == 0


def test_refund_lowers_clv_and_is_named():
    now = T0 + 45 * DAY
    before = features_at(HISTORY, now)
    after = features_at([*HISTORY, refund("r1", "o3", now, 40.0)], now)
    drivers, sb, sa, _ = run(before, after)
    assert sa["predicted_clv"] < sb["predicted_clv"]
    (clv,) = of(drivers, "predicted_clv")
    assert clv.input == "revenue" and clv.effect < 0
    assert clv.text.startswith("a refund of 40.00 (net revenue now 230.00) lowered predicted CLV by ")
    assert clv.text.endswith(f"{sb['predicted_clv'] - sa['predicted_clv']:.2f}")
    assert not of(drivers, "churn_risk")  # a refund does not move churn risk: no sentence for it


def test_first_event_explains_the_level():
    after = features_at([order("o1", T0, 80.0, 24.0)], T0)
    drivers, _, sa, rescore = run(None, after)
    texts = [d.text for d in drivers]
    assert f"first order of 80.00 gives a predicted CLV of {sa['predicted_clv']:.2f}" in texts
    assert "new customer: churn risk starts at the 25% base rate" in texts
    assert {d.score: d.effect for d in drivers} == pytest.approx({"churn_risk": 0.25, "predicted_clv": sa["predicted_clv"]})
    assert rescore.calls == 0


def test_first_event_without_orders_and_first_order_after_emails():
    opened = other("e1", "Email Opened", T0)
    assert run(None, features_at([opened], T0))[0] == []
    before, after = features_at([opened], T0 + DAY), features_at([opened, order("o1", T0 + DAY, 80.0, 24.0)], T0 + DAY)
    drivers = run(before, after)[0]
    assert [d.text for d in of(drivers, "churn_risk")] == ["first order: churn risk starts at the 25% base rate"]
    assert of(drivers, "predicted_clv")[0].text.startswith("first order of 80.00 raised predicted CLV by ")


def test_email_event_that_moves_no_score_gives_no_drivers():
    now = T0 + 45 * DAY
    before = features_at(HISTORY, now)
    after = features_at([*HISTORY, other("e1", "Email Opened", now)], now)
    assert after.emails_opened == before.emails_opened + 1
    drivers, sb, sa, rescore = run(before, after)
    assert sb == sa
    assert drivers == []  # documented: nothing moved -> no explanation
    assert rescore.calls <= 2


def test_nothing_changed_skips_rescoring():
    f = features_at(HISTORY, T0 + 45 * DAY)
    drivers, _, _, rescore = run(f, f)
    assert drivers == [] and rescore.calls == 0


# -- exactness, budget, ranking ---------------------------------------------------------------


@pytest.mark.parametrize(
    "before_events,after_events,before_now,after_now",
    [
        (HISTORY, HISTORY, T0 + 41 * DAY, T0 + 100 * DAY),  # time only
        (HISTORY, [*HISTORY, LATE_ORDER], T0 + 130 * DAY, T0 + 130 * DAY),  # order only
        (HISTORY, [*HISTORY, refund("r1", "o2", T0 + 50 * DAY, 60.0)], T0 + 50 * DAY, T0 + 50 * DAY),  # refund only
    ],
)
def test_effects_of_one_group_sum_to_the_total_change(before_events, after_events, before_now, after_now):
    before, after = features_at(before_events, before_now), features_at(after_events, after_now)
    drivers, sb, sa, _ = run(before, after, top=10)
    assert drivers
    for key in ("churn_risk", "predicted_clv"):
        total = sa[key] - sb[key]
        explained = sum(d.effect for d in of(drivers, key))
        assert explained == pytest.approx(total, abs=0.005 if key == "churn_risk" else 0.005 + 1e-3 * abs(sb[key]))


def test_many_groups_stay_within_budget_and_add_up():
    extra = [other("e1", "Email Opened", T0 + 60 * DAY), other("s1", "Survey Answered", T0 + 60 * DAY, {"goal": "grow"}),
             other("c1", "Community Posted", T0 + 61 * DAY)]
    before = features_at(HISTORY, T0 + 40 * DAY)
    after = features_at([*HISTORY, *extra, LATE_ORDER], T0 + 130 * DAY)
    drivers, sb, sa, rescore = run(before, after, top=20)
    changed_groups = 5  # time, purchases, engagement, community, survey
    assert 0 < rescore.calls <= 2 * changed_groups
    for key in ("churn_risk", "predicted_clv"):  # residual spread: effects add up even with n > 2
        assert sum(d.effect for d in of(drivers, key)) == pytest.approx(sa[key] - sb[key], abs=1e-6)
    assert {d.input for d in drivers} == {"orders", "recency_days"}  # no score reads email/community/survey


def test_ranking_compares_churn_and_relative_clv_and_keeps_top():
    before, after = features_at(HISTORY, T0 + 40 * DAY), features_at([*HISTORY, LATE_ORDER], T0 + 130 * DAY)
    sb, sa = score(before, SCORERS), score(after, SCORERS)
    every = explain(before, after, sb, sa, Rescore(), top=10)
    level = max(abs(sb["predicted_clv"]), abs(sa["predicted_clv"]))
    weights = [abs(d.effect) if d.score == "churn_risk" else abs(d.effect) / level for d in every]
    assert weights == sorted(weights, reverse=True)
    assert explain(before, after, sb, sa, Rescore(), top=2) == every[:2]
    assert explain(before, after, sb, sa, Rescore(), top=0) == []


def test_formula_clv_is_the_headline_without_btyd():
    scorers = [FormulaScorer(CFG)]
    before, after = features_at(HISTORY, T0 + 50 * DAY), features_at(HISTORY, T0 + 80 * DAY)
    drivers = explain(before, after, score(before, scorers), score(after, scorers), Rescore(scorers))
    assert {d.score for d in drivers} == {"churn_risk", "formula_clv"}
    assert any("lowered CLV by" in d.text for d in drivers)


def test_scores_before_missing_costs_one_rescore():
    before, after = features_at(HISTORY, T0 + 50 * DAY), features_at(HISTORY, T0 + 80 * DAY)
    rescore = Rescore()
    drivers = explain(before, after, None, score(after, SCORERS), rescore)
    assert rescore.calls == 1 and of(drivers, "churn_risk")[0].effect > 0


def test_texts_never_name_the_customer():
    customer = "cust-7f3a9-secret"
    events = [order("o1", T0, 80.0, 24.0, customer=customer), order("o2", T0 + 20 * DAY, 100.0, 30.0, customer=customer)]
    later = [*events, refund("r1", "o2", T0 + 30 * DAY, 25.0, customer=customer),
             order("o3", T0 + 120 * DAY, 50.0, 15.0, customer=customer)]
    s0, s1 = fold(events, CFG, customer), fold(later, CFG, customer)
    pairs = [(None, compute(s0, T0, CFG)), (compute(s0, T0 + 30 * DAY, CFG), compute(s1, T0 + 120 * DAY, CFG)),
             (compute(s1, T0 + 120 * DAY, CFG), compute(s1, T0 + 200 * DAY, CFG))]
    seen = 0
    for before, after in pairs:
        for d in run(before, after, top=10)[0]:
            seen += 1
            assert customer not in d.text and customer not in str(d.to_dict())
    assert seen >= 4


def test_driver_to_dict():
    d = Driver("recency_days", "churn_risk", 0.123456789, "42 days without an order raised churn risk by 0.12")
    assert d.to_dict() == {"input": "recency_days", "score": "churn_risk", "effect": 0.123457, "text": d.text}

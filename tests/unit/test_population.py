"""Population fitting as the worker does it: guards, and the fitted models in use."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.models.scorer import PopulationModel, fit_population


def test_too_few_repeat_buyers_keep_the_prior() -> None:
    x = np.array([0.0] * 500 + [1.0] * 10)
    model = fit_population(x, x * 10, np.full(x.size, 100.0), x * 30, fitted_at=1.0)
    assert model == PopulationModel()


def test_a_fit_without_evidence_of_dropout_keeps_the_parameters_in_force() -> None:
    # Everybody bought again very recently: no silence anywhere, the likelihood prefers
    # "nobody ever drops out" (a -> 0), which would make P(alive) = 1 for everyone.
    rng = np.random.default_rng(3)
    T = rng.integers(20, 60, 400).astype(float)
    x = rng.integers(1, 4, 400).astype(float)
    model = fit_population(x, T.copy(), T, np.full(400, 25.0), fitted_at=2.0)
    assert model == PopulationModel()


def test_a_real_fit_replaces_the_prior_and_is_versioned() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    lam = rng.gamma(0.25, 1 / 4.0, n) / 7  # purchases per day
    p = rng.beta(0.8, 2.4, n)
    T = rng.integers(30, 273, n).astype(float)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):  # BG/NBD: Poisson purchases, dropout after each with probability p
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i]) if lam[i] > 0 else np.inf
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    model = fit_population(x, t_x, T, np.where(x > 0, 30.0, 0.0), fitted_at=3.0)
    assert model != PopulationModel()
    assert model.fitted_at == 3.0 and model.version and "prior" not in model.version
    assert 0.1 < model.bgnbd.r < 0.5 and 0.3 < model.bgnbd.a < 2.0


def test_the_scorer_computes_exactly_what_the_reference_formulas_give() -> None:
    """BTYDScorer evaluates everything with one vectorised call; btyd.py's functions are the
    reference, one quantity at a time."""
    import random

    from corekit import DAY, T0, features_at, order

    from streamer.core.config import ScoringConfig
    from streamer.models import btyd
    from streamer.models.online import btyd_scores_for
    from streamer.models.scorer import DISCOUNT_STEPS, BTYDScorer, btyd_inputs

    rng = random.Random(1)
    scorer = BTYDScorer()
    for trial in range(200):
        events = [order(f"o{i}", T0 + rng.uniform(0, 400) * DAY, rng.uniform(5, 300), rng.uniform(1, 50)) for i in range(rng.randint(1, 12))]
        f = features_at(events, T0 + 420 * DAY, ScoringConfig())
        scores, extra = scorer.quantities(f, 90.0)
        bg, gg = scorer.model.bgnbd, scorer.model.gamma_gamma
        x, t_x, T = btyd_inputs(f)
        h = scorer.horizon_days
        reference = {
            "p_alive": btyd.p_alive(bg, x, t_x, T),
            "expected_purchases": btyd.expected_purchases(bg, h, x, t_x, T),
            "p_no_purchase": btyd.p_no_purchase(bg, h, x, t_x, T),
            "expected_order_value": btyd.expected_value(gg, x, f.repeat_mean_value),
            "predicted_clv": btyd.discounted_clv(bg, gg, x, t_x, T, f.repeat_mean_value, h, max(f.margin_rate, 0.0), 0.10, 1.0, steps=DISCOUNT_STEPS),
            "next_order_in_days": btyd.expected_next_purchase_time(bg, x, T),
        }
        for key, value in reference.items():
            assert abs(scores[key] - value) <= 1e-12 * max(1.0, abs(value)), (trial, key)
        for key, value in btyd_scores_for(scorer.model, f, 90.0).items():
            assert abs(extra[key] - value) <= 1e-12 * max(1.0, abs(value)), (trial, key)


def test_scalar_p_alive_equals_the_vectorised_formula():
    import itertools

    from streamer.models import btyd
    from streamer.models.scorer import _p_alive

    params = btyd.BGNBDParams(0.243, 4.414, 0.793, 2.426)
    for x, t_x, T in itertools.product([0, 1, 2, 7, 40, 300], [0.0, 3.5, 20.0, 38.0], [38.5, 60.0, 400.0]):
        if t_x > T or (x == 0 and t_x):
            continue
        assert _p_alive(params, x, t_x, T) == pytest.approx(float(btyd.p_alive(params, x, t_x, T)), rel=1e-12, abs=1e-300)

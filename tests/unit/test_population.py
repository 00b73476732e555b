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


def _bgnbd_population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in days of ``n`` customers drawn from a BG/NBD population: Poisson purchases,
    dropout after each with probability p."""
    lam = rng.gamma(0.25, 1 / 4.0, n) / 7  # purchases per day
    p = rng.beta(0.8, 2.4, n)
    T = rng.integers(30, 273, n).astype(float)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i]) if lam[i] > 0 else np.inf
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    return x, t_x, T


def test_a_real_fit_replaces_the_prior_and_is_versioned() -> None:
    x, t_x, T = _bgnbd_population(np.random.default_rng(5), 3000)
    model = fit_population(x, t_x, T, np.where(x > 0, 30.0, 0.0), fitted_at=3.0)
    assert model != PopulationModel()
    assert model.fitted_at == 3.0 and model.version and "prior" not in model.version
    assert 0.1 < model.bgnbd.r < 0.5 and 0.3 < model.bgnbd.a < 2.0


def test_a_spend_fit_with_no_population_mean_keeps_the_spend_model_in_force() -> None:
    """Spend so heavy-tailed that Gamma-Gamma's q comes out below 1: p·v/(q−1), the value of
    an order of a customer with no repeat purchase, would be negative, and so their CLV."""
    from streamer.models import btyd

    rng = np.random.default_rng(5)
    x, t_x, T = _bgnbd_population(rng, 3000)
    nu = rng.gamma(0.7, 1 / 20.0, x.size)  # spend heterogeneity with q = 0.7
    m = np.where(x > 0, rng.gamma(4.0 * np.maximum(x, 1), 1 / (np.maximum(x, 1) * nu)), 0.0)
    usable = (x > 0) & (m > 0)
    assert btyd.fit_gamma_gamma(x[usable], m[usable]).q < 1.0  # the premise: the raw fit is unusable
    model = fit_population(x, t_x, T, m, fitted_at=4.0)
    assert model.bgnbd != PopulationModel().bgnbd  # purchases were refitted ...
    assert model.gamma_gamma == PopulationModel().gamma_gamma  # ... spend kept as it was
    assert btyd.expected_value(model.gamma_gamma, 0, 0.0) > 0


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


def test_the_refit_snapshot_is_what_the_states_say() -> None:
    """Engine.population_summaries (packed per-partition rows, kept up to date on every
    evaluation, erasure and restore) equals the summaries computed from the states themselves."""
    import zlib
    from datetime import datetime, timedelta, timezone

    import orjson

    from streamer.core import features
    from streamer.core.config import DAY
    from streamer.core.engine import DictStore, Engine, Record
    from streamer.simulator import ShopSimulator

    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    engine, store = Engine(), DictStore()
    sim = ShopSimulator(400, start, seed=4, acquisition_days=80)
    offset = 0

    def feed(events: list) -> None:
        nonlocal offset
        for role, key, value in events:
            engine.process(Record(role, role, zlib.crc32(key) % 4, offset, key, value), store)
            offset += 1

    feed(list(sim.raw_events(until=start + timedelta(days=40))))
    erased = sorted(c for c, s in store.data.items() if s.orders)[:25]
    for customer in erased:
        request = {
            "specversion": "1.0", "id": f"erase-{customer}", "source": "/test", "type": "Erasure Requested",
            "time": "2025-02-10T00:00:00Z", "subject": customer, "data": {"request_id": f"dsr-{customer}"},
        }
        feed([("erasure-requests", customer.encode(), orjson.dumps(request))])
    assert not any(customer in store.data for customer in erased)
    # Customers acquired after the erasures take the freed slots.
    feed(list(sim.raw_events(until=start + timedelta(days=90))))

    def expected() -> list[tuple[float, ...]]:
        out = []
        for state in store.data.values():
            clock = engine.partitions[state.partition]
            f = features.compute(state, clock.now, engine.config)
            if f.orders and f.first_order_at is not None:
                t_x = (f.last_order_at - f.first_order_at) / DAY
                out.append((f.repeat_transactions, t_x, max((clock.now - f.first_order_at) / DAY, t_x), f.repeat_mean_value))
        return sorted(tuple(round(v, 9) for v in row) for row in out)

    def actual(engine: Engine) -> list[tuple[float, ...]]:
        x, t_x, T, m, _now = engine.population_summaries()
        return sorted(tuple(round(v, 9) for v in row) for row in zip(x.tolist(), t_x.tolist(), T.tolist(), m.tolist()))

    want = expected()
    assert len(want) > 200
    assert actual(engine) == want
    # A restarted worker rebuilds the same rows from the recovered states.
    restored = Engine()
    for partition in engine.partitions:
        restored.restore_partition(partition, [s for s in store.data.values() if s.partition == partition])
    assert actual(restored) == want

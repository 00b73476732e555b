"""BG/NBD and Gamma-Gamma against the published CDNOW numbers and against checks derived here.

Independent checks (not the code under test in another guise):
* the likelihood at the published parameters (not only where our optimiser lands);
* the conditional expectation, P(alive) and P(no purchase) as 2-D integrals over (λ, p) of
  the individual-level model, and by Monte Carlo simulation of future purchases;
* the unconditional E[X(t)] by simulating new customers from the generative story.

Published numbers: Fader, Hardie & Lee (2005), Marketing Science 24(2) (BG/NBD on CDNOW:
r = 0.243, α = 4.414, a = 0.793, b = 2.426, LL = −9582.4; the customer with x = 2,
t_x = 30.43, T = 38.86 expects 1.226 purchases in the next 39 weeks), and Fader & Hardie's
Gamma-Gamma note (p = 6.25, q = 3.74, γ = 15.44).
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from streamer.models import btyd
from streamer.models.btyd import (
    BGNBDParams,
    GammaGammaParams,
    Summaries,
    bgnbd_log_likelihood,
    bgnbd_log_likelihood_gradient,
    compress,
    discounted_clv,
    expected_next_purchase_time,
    expected_purchases,
    expected_purchases_new,
    expected_value,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    p_alive,
    p_no_purchase,
)
from streamer.models.cdnow import (
    CALIBRATION_END,
    HOLDOUT_END,
    calibration_summaries,
    holdout_counts,
    load_cdnow,
    roc_auc,
)

CDNOW = Path(__file__).resolve().parents[1] / "data" / "CDNOW_sample.txt"
PUBLISHED = BGNBDParams(0.243, 4.414, 0.793, 2.426)
PUBLISHED_LL = -9582.4
PUBLISHED_GG = GammaGammaParams(6.25, 3.74, 15.44)


@pytest.fixture(scope="module")
def rows():
    return load_cdnow(CDNOW)


@pytest.fixture(scope="module")
def cal(rows):
    return calibration_summaries(rows, CALIBRATION_END, time_unit_days=7)


@pytest.fixture(scope="module")
def holdout(rows, cal):
    counts = holdout_counts(rows, CALIBRATION_END, HOLDOUT_END)
    return np.array([counts[c] for c in cal.ids], dtype=float)


@pytest.fixture(scope="module")
def fitted(cal):
    s = cal.summaries()
    start = time.perf_counter()
    bg = fit_bgnbd(s)
    print(f"\nCDNOW BG/NBD fit: {time.perf_counter() - start:.3f} s on {len(s)} distinct rows of {s.n_customers} customers")
    return bg


def simulate_bgnbd(n: int, params: BGNBDParams, T: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(x, t_x) for customers observed for T after their first purchase, straight from the story.

    While alive, purchases arrive as Poisson(λ); after each repeat purchase the customer drops out
    with probability p, so the repeat purchases she would ever make are G ~ Geometric(p) (≥ 1).
    With K ~ Poisson(λT) arrivals in (0, T], x = min(K, G); given K the arrival times are K
    sorted uniforms on (0, T], so the x-th is T · Beta(x, K − x + 1).
    """
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    K = rng.poisson(lam * T)
    G = rng.geometric(p)
    x = np.minimum(K, G)
    t_x = np.zeros(n)
    rep = x > 0
    t_x[rep] = T[rep] * rng.beta(x[rep], K[rep] - x[rep] + 1)
    return x.astype(float), t_x


# -- CDNOW data and the published BG/NBD ---------------------------------------------------------


def test_cdnow_calibration_summaries(rows, cal):
    assert len(rows) == 6919
    assert len(cal.ids) == 2357
    assert cal.x.sum() == 2457  # repeat transactions in the calibration period (FHL05)
    assert (cal.x > 0).sum() == 946  # repeaters, the Gamma-Gamma sample
    assert cal.T.max() == pytest.approx(272 / 7)  # first purchase 1997-01-01 -> T = 38.86 weeks
    assert np.all(cal.t_x <= cal.T) and np.all(cal.t_x[cal.x == 0] == 0)
    # Customer 0001 bought 1997-01-01, -01-18, -08-02 (and 12-12, in the holdout).
    i = cal.ids.index("0001")
    assert (cal.x[i], cal.t_x[i], cal.T[i]) == (2, pytest.approx(213 / 7), pytest.approx(272 / 7))
    assert cal.mean_value[i] == pytest.approx((29.73 + 14.96) / 2)


def test_same_day_purchases_are_one_transaction():
    rows = [
        ("c", date(2020, 1, 1), 10.0),
        ("c", date(2020, 1, 1), 5.0),  # same day as the first: not a repeat
        ("c", date(2020, 1, 8), 20.0),
        ("c", date(2020, 1, 8), 4.0),
        ("c", date(2020, 1, 15), 30.0),
        ("c", date(2020, 1, 30), 1.0),  # holdout
        ("c", date(2020, 1, 30), 1.0),
        ("d", date(2020, 1, 20), 7.0),
        ("e", date(2020, 1, 25), 7.0),  # acquired after calibration: not in either
    ]
    cal = calibration_summaries(rows, date(2020, 1, 21), time_unit_days=7)
    assert cal.ids == ["c", "d"]
    assert cal.x.tolist() == [2, 0]
    assert cal.t_x.tolist() == [2.0, 0.0]
    assert cal.T.tolist() == [20 / 7, 1 / 7]
    assert cal.mean_value.tolist() == [27.0, 0.0]
    assert holdout_counts(rows, date(2020, 1, 21), date(2020, 2, 28)) == {"c": 1, "d": 0}


def test_log_likelihood_at_published_parameters(cal):
    # Independent of the optimiser: the published point must give the published LL.
    assert bgnbd_log_likelihood(PUBLISHED.as_tuple(), cal.summaries()) == pytest.approx(PUBLISHED_LL, abs=0.1)


def test_fit_reproduces_published_estimates(fitted):
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(PUBLISHED, name), rel=0.02), name
    assert fitted.log_likelihood == pytest.approx(PUBLISHED_LL, abs=0.5)
    assert fitted.n_customers == 2357


def test_fit_is_a_maximum(cal, fitted):
    s = cal.summaries()
    grad = bgnbd_log_likelihood_gradient(fitted.as_tuple(), s)
    assert np.all(np.abs(grad * np.array(fitted.as_tuple())) < 1e-3)
    # from a deliberately poor start as well
    again = fit_bgnbd(s, initial=[5.0, 50.0, 5.0, 0.5])
    assert again.log_likelihood == pytest.approx(fitted.log_likelihood, abs=1e-4)


def test_paper_example_customer():
    # FHL05: x = 2, t_x = 30.43, T = 38.86 -> 1.226 expected purchases in the next 39 weeks.
    assert expected_purchases(PUBLISHED, 39.0, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


# -- the likelihood and its gradient ------------------------------------------------------------


def _random_customers(n: int, seed: int) -> Summaries:
    rng = np.random.default_rng(seed)
    T = rng.integers(1, 40, n).astype(float)
    x, t_x = simulate_bgnbd(n, PUBLISHED, T, rng)
    return Summaries(x, np.round(t_x), T)


def test_compress_gives_the_same_likelihood():
    raw = _random_customers(5000, seed=7)
    s = compress(raw.x, raw.t_x, raw.T)
    assert len(s) < len(raw) / 2
    assert s.n_customers == len(raw)
    for params in (PUBLISHED.as_tuple(), (1.3, 12.0, 2.0, 0.7)):
        assert bgnbd_log_likelihood(params, s) == pytest.approx(bgnbd_log_likelihood(params, raw), rel=1e-12)
        np.testing.assert_allclose(
            bgnbd_log_likelihood_gradient(params, s), bgnbd_log_likelihood_gradient(params, raw), rtol=1e-10
        )


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 5), st.integers(0, 5), st.integers(1, 3)),
        min_size=1,
        max_size=40,
    )
)
def test_compress_property(data):
    x = np.array([d[0] for d in data], dtype=float)
    t_x = np.array([d[1] for d in data], dtype=float) * (x > 0)
    T = t_x + np.array([d[2] for d in data], dtype=float)
    w = np.array([d[3] for d in data], dtype=float)
    s = compress(x, t_x, T, w)
    assert s.weights.sum() == w.sum()
    assert len({(a, b, c) for a, b, c in zip(s.x, s.t_x, s.T)}) == len(s)
    params = (0.7, 3.0, 1.5, 2.5)
    assert bgnbd_log_likelihood(params, s) == pytest.approx(bgnbd_log_likelihood(params, Summaries(x, t_x, T, w)), rel=1e-12)


def test_gradient_matches_finite_differences():
    s = compress(*(lambda r: (r.x, r.t_x, r.T))(_random_customers(500, seed=3)))
    point = np.array([0.4, 6.0, 1.3, 2.2])
    grad = bgnbd_log_likelihood_gradient(point, s)
    for i in range(4):
        h = 1e-6 * point[i]
        up, down = point.copy(), point.copy()
        up[i] += h
        down[i] -= h
        numeric = (bgnbd_log_likelihood(up, s) - bgnbd_log_likelihood(down, s)) / (2 * h)
        assert grad[i] == pytest.approx(numeric, rel=1e-5)


def test_summaries_validation():
    with pytest.raises(ValueError):
        Summaries([1.0], [5.0], [4.0])  # t_x > T
    with pytest.raises(ValueError):
        Summaries([1.5], [1.0], [4.0])  # fractional x
    with pytest.raises(ValueError):
        BGNBDParams(0.0, 1.0, 1.0, 1.0)


# -- predictions against integrals and simulation ------------------------------------------------


def _posterior_integrals(params: BGNBDParams, t: float, x: int, t_x: float, T: float) -> dict[str, float]:
    """P(alive), E[purchases in t] and P(no purchase) as 2-D integrals over the prior of (λ, p).

    Individual level (FHL05 §3): the data has probability (1−p)^x λ^x e^(−λT) through the
    'alive at T' branch plus p(1−p)^(x−1) λ^x e^(−λ t_x) through 'dropped out at t_x'; alive with
    (λ, p) a customer buys (1 − e^(−λpt))/p times in t in expectation and nothing with
    probability e^(−λt). Substitutions λ = u^(1/r), p = v^(1/a) remove the prior's end-point
    singularities (λ^(r−1), p^(a−1)) so plain adaptive quadrature is accurate.
    """
    r, alpha, a, b = params.as_tuple()
    log_norm = r * math.log(alpha) - special.gammaln(r) - math.log(r) - special.betaln(a, b) - math.log(a)

    def integrate2(fn) -> float:
        def inner(u: float, v: float) -> float:
            lam, p = u ** (1 / r), v ** (1 / a)
            return fn(lam, p) * math.exp(log_norm - alpha * lam + (b - 1) * math.log1p(-p))

        # λ | data is roughly Gamma(r+x, α+T): 60·(1+x)/(α+T) is far out in its tail; v in (0, 1)
        lam_max = 60.0 / (alpha + T) * (1 + x)
        value, _ = integrate.dblquad(inner, 0.0, 1.0, 0.0, lam_max**r, epsabs=0, epsrel=1e-10)
        return value

    def alive(lam: float, p: float) -> float:
        return (1 - p) ** x * lam**x * math.exp(-lam * T)

    def dead(lam: float, p: float) -> float:
        return p * (1 - p) ** (x - 1) * lam**x * math.exp(-lam * t_x) if x > 0 else 0.0

    likelihood = integrate2(lambda lam, p: alive(lam, p) + dead(lam, p))
    return {
        "likelihood": likelihood,
        "p_alive": integrate2(alive) / likelihood,
        "expected": integrate2(lambda lam, p: alive(lam, p) * -math.expm1(-lam * p * t) / p) / likelihood,
        "p_none": integrate2(lambda lam, p: dead(lam, p) + alive(lam, p) * math.exp(-lam * t)) / likelihood,
    }


@pytest.mark.parametrize(
    "params, t, x, t_x, T",
    [
        (PUBLISHED, 39.0, 2, 30.43, 38.86),
        (PUBLISHED, 39.0, 7, 20.0, 38.86),
        (PUBLISHED, 10.0, 1, 1.0, 30.0),
        (BGNBDParams(1.7, 12.0, 2.5, 4.0), 52.0, 4, 25.0, 30.0),
    ],
)
def test_predictions_match_double_integrals(params, t, x, t_x, T):
    ref = _posterior_integrals(params, t, x, t_x, T)
    ll = bgnbd_log_likelihood(params.as_tuple(), Summaries([x], [t_x], [T]))
    assert math.log(ref["likelihood"]) == pytest.approx(ll, abs=1e-7)
    assert p_alive(params, x, t_x, T) == pytest.approx(ref["p_alive"], rel=1e-7)
    assert expected_purchases(params, t, x, t_x, T) == pytest.approx(ref["expected"], rel=1e-7)
    assert p_no_purchase(params, t, x, t_x, T) == pytest.approx(ref["p_none"], rel=1e-7)


def test_conditional_predictions_match_simulation():
    """Monte Carlo with a fixed seed: draw (λ, p) from the prior, weight by the data's likelihood
    split into its alive/dropped branches, and *simulate* the alive customers' next 39 weeks."""
    rng = np.random.default_rng(20050401)
    params, t, x, t_x, T = PUBLISHED, 39.0, 2, 30.43, 38.86
    n = 2_000_000
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    w_alive = (1 - p) ** x * lam**x * np.exp(-lam * T)
    w_dead = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x)
    total = w_alive.sum() + w_dead.sum()
    future = np.minimum(rng.poisson(lam * t), rng.geometric(p))  # purchases until dropout or t
    mc_expected = float((w_alive * future).sum() / total)
    mc_alive = float(w_alive.sum() / total)
    mc_none = float((w_dead.sum() + (w_alive * (future == 0)).sum()) / total)
    ess = total**2 / ((w_alive + w_dead) ** 2).sum()
    assert ess > 50_000
    assert expected_purchases(params, t, x, t_x, T) == pytest.approx(mc_expected, rel=0.02)
    assert p_alive(params, x, t_x, T) == pytest.approx(mc_alive, rel=0.01)
    assert p_no_purchase(params, t, x, t_x, T) == pytest.approx(mc_none, rel=0.01)


def test_expected_purchases_new_matches_simulation():
    rng = np.random.default_rng(11)
    n = 400_000
    for params in (PUBLISHED, BGNBDParams(2.0, 10.0, 3.0, 5.0)):
        for t in (10.0, 78.0):
            x, _ = simulate_bgnbd(n, params, np.full(n, t), rng)
            se = x.std() / math.sqrt(n)
            assert expected_purchases_new(params, t) == pytest.approx(x.mean(), abs=4 * se)


def test_population_predictions_are_consistent():
    # A brand-new customer (x = t_x = T = 0) is eq. (7); as t -> 0 nothing happens.
    for t in (1.0, 39.0, 500.0):
        assert expected_purchases(PUBLISHED, t, 0, 0.0, 0.0) == pytest.approx(expected_purchases_new(PUBLISHED, t), rel=1e-12)
    assert expected_purchases(PUBLISHED, 0.0, 3, 10.0, 20.0) == 0.0
    assert p_no_purchase(PUBLISHED, 0.0, 3, 10.0, 20.0) == pytest.approx(1.0)
    # x = 0: alive for sure, and silent in t with probability ((α+T)/(α+T+t))^r
    assert p_alive(PUBLISHED, 0, 0.0, 20.0) == 1.0
    assert p_no_purchase(PUBLISHED, 39.0, 0, 0.0, 20.0) == pytest.approx((24.414 / 63.414) ** 0.243)
    # long silence after a burst of purchases: probably gone
    assert p_alive(PUBLISHED, 10, 2.0, 38.0) < 0.01 < 0.9 < p_alive(PUBLISHED, 10, 37.0, 38.0)


def test_scalars_in_scalars_out_arrays_broadcast():
    assert isinstance(expected_purchases(PUBLISHED, 39, 2, 30.43, 38.86), float)
    assert isinstance(p_alive(PUBLISHED, 2, 30.43, 38.86), float)
    x = np.array([0, 1, 2, 5])
    out = expected_purchases(PUBLISHED, 39.0, x, np.array([0, 10, 20, 30.0]), 38.86)
    assert out.shape == (4,)
    grid = expected_purchases(PUBLISHED, np.array([[10.0], [39.0]]), x, np.array([0, 10, 20, 30.0]), 38.86)
    assert grid.shape == (2, 4) and np.all(grid[1] > grid[0])
    np.testing.assert_allclose(out, [expected_purchases(PUBLISHED, 39.0, *v, 38.86) for v in zip(x, [0, 10, 20, 30.0])])


@pytest.mark.parametrize(
    "params",
    [PUBLISHED, BGNBDParams(2.0, 10.0, 3.0, 5.0), BGNBDParams(0.05, 0.1, 8.0, 0.3), BGNBDParams(5.0, 1.0, 0.1, 50.0)],
)
def test_large_arguments_are_stable(params):
    # big x, T and t (e.g. days over decades, very frequent buyers): finite, within the bounds
    # 0 <= E <= E[λ | alive]·t, and equal to the independent quadrature.
    t = np.array([1e3, 1e5, 1e6, 1e4, 3e5, 1e-3])
    x = np.array([500.0, 5000.0, 0.0, 50.0, 10000.0, 3.0])
    T = np.array([1e4, 1e5, 0.0, 100.0, 1e5, 10.0])
    t_x = T * 0.9 * (x > 0)
    alive_e = btyd._alive_expectation(params, t, x, T)
    assert np.all(np.isfinite(alive_e))
    assert np.all((alive_e >= 0) & (alive_e <= (params.r + x) * t / (params.alpha + T) * (1 + 1e-9)))
    r, alpha, a, b = params.as_tuple()
    quad = [btyd._alive_expectation_quad(r, alpha, a, b, *v) for v in zip(t, x, T)]
    np.testing.assert_allclose(alive_e, quad, rtol=1e-6)
    for fn in (expected_purchases, p_no_purchase):
        assert np.all(np.isfinite(fn(params, t, x, t_x, T)))
    assert np.all((p_alive(params, x, t_x, T) >= 0) & (p_alive(params, x, t_x, T) <= 1))


def test_a_equal_to_one_is_continuous():
    # The closed form is 0/0 at a = 1; the value must be continuous through it.
    t, x, T = np.array([39.0, 1e4]), np.array([2.0, 300.0]), np.array([38.0, 5e3])
    at_one = btyd._alive_expectation(BGNBDParams(0.5, 10.0, 1.0, 2.0), t, x, T)
    quad = [btyd._alive_expectation_quad(0.5, 10.0, 1.0, 2.0, *v) for v in zip(t, x, T)]
    np.testing.assert_allclose(at_one, quad, rtol=1e-7)
    for a in (1 - 1e-3, 1 + 1e-3):
        near = btyd._alive_expectation(BGNBDParams(0.5, 10.0, a, 2.0), t, x, T)
        np.testing.assert_allclose(near, at_one, rtol=1e-3)


def test_next_purchase_time_is_the_posterior_median():
    # Given alive, λ ~ Gamma(r+x, α+T): the median wait is where P(no purchase | alive) = ½ —
    # p_no_purchase with x = 0 (alive for sure) — and matches simulated waits.
    median = expected_next_purchase_time(PUBLISHED, 0, 20.0)
    assert p_no_purchase(PUBLISHED, median, 0, 0.0, 20.0) == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    x, T = 6, 38.0
    waits = rng.exponential(1.0 / rng.gamma(PUBLISHED.r + x, 1.0 / (PUBLISHED.alpha + T), 400_000))
    for q in (0.25, 0.5, 0.9):
        assert expected_next_purchase_time(PUBLISHED, x, T, quantile=q) == pytest.approx(np.quantile(waits, q), rel=0.02)


# -- parameters as records --------------------------------------------------------------------


def test_params_json_round_trip():
    bg = BGNBDParams(0.2426, 4.4136, 0.7929, 2.4259, log_likelihood=-9582.43, n_customers=2357)
    text = json.dumps(bg.to_dict())
    assert len(text) < 300
    assert BGNBDParams.from_dict(json.loads(text)) == bg
    assert bg.version == BGNBDParams(0.2426, 4.4136, 0.7929, 2.4259).version  # content hash of the params
    assert bg.version != BGNBDParams(0.2426, 4.4136, 0.7929, 2.5).version
    gg = GammaGammaParams(6.25, 3.74, 15.44, log_likelihood=-4055.9, n_customers=946)
    assert GammaGammaParams.from_dict(json.loads(json.dumps(gg.to_dict()))) == gg
    with pytest.raises(ValueError):
        GammaGammaParams.from_dict(bg.to_dict())


# -- fits at scale --------------------------------------------------------------------------------


def simulate_population(n: int, params: BGNBDParams, seed: int, max_days: int = 365) -> Summaries:
    """n customers acquired uniformly over a year, observed to its end, times in weeks rounded to days."""
    rng = np.random.default_rng(seed)
    T = rng.integers(1, max_days + 1, n) / 7.0
    x, t_x = simulate_bgnbd(n, params, T, rng)
    return Summaries(x, np.round(t_x * 7.0) / 7.0, T)


def test_fit_on_synthetic_population_recovers_parameters():
    n = 200_000  # a manual run with 1,000,000 takes ~1.2 s (compress 0.2 s + fit 1.0 s)
    raw = simulate_population(n, PUBLISHED, seed=42)
    start = time.perf_counter()
    s = compress(raw.x, raw.t_x, raw.T)
    bg = fit_bgnbd(s)
    elapsed = time.perf_counter() - start
    print(f"\nsynthetic BG/NBD fit: {elapsed:.2f} s for {n} customers ({len(s)} distinct rows): {bg}")
    assert elapsed < 20
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(getattr(PUBLISHED, name), rel=0.1), name


# -- Gamma-Gamma ----------------------------------------------------------------------------------


def test_gamma_gamma_on_cdnow(cal):
    gg = fit_gamma_gamma(cal.x, cal.mean_value)
    assert gg.n_customers == 946
    for name in ("p", "q", "v"):
        assert getattr(gg, name) == pytest.approx(getattr(PUBLISHED_GG, name), rel=0.01), name
    at_published = gamma_gamma_log_likelihood(PUBLISHED_GG.as_tuple(), cal.x, cal.mean_value)
    assert gg.log_likelihood == pytest.approx(at_published, abs=0.05)
    # conditional mean: between the population mean and the customer's own mean, nearer the
    # latter the more purchases
    population = gg.p * gg.v / (gg.q - 1)
    assert expected_value(gg, 0, 123.0) == pytest.approx(population)
    few, many = expected_value(gg, np.array([1, 20]), np.array([100.0, 100.0]))
    assert population < few < many < 100.0


def test_gamma_gamma_recovers_synthetic_parameters():
    rng = np.random.default_rng(8)
    true = GammaGammaParams(4.0, 3.0, 20.0)
    n = 20_000
    x = rng.integers(1, 10, n)
    nu = rng.gamma(true.q, 1 / true.v, n)
    # the mean of x Gamma(p, ν) values is Gamma(p·x, x·ν)
    mean_value = rng.gamma(true.p * x, 1 / (x * nu))
    gg = fit_gamma_gamma(x, mean_value)
    for name in ("p", "q", "v"):
        assert getattr(gg, name) == pytest.approx(getattr(true, name), rel=0.1), name


# -- CLV -----------------------------------------------------------------------------------------


def test_discounted_clv():
    x, t_x, T, m = np.array([0, 2, 10]), np.array([0, 30.43, 37.0]), np.array([38.86] * 3), np.array([0, 40.0, 30.0])
    value = expected_value(PUBLISHED_GG, x, m)
    undiscounted = discounted_clv(PUBLISHED, PUBLISHED_GG, x, t_x, T, m, 52.0, 0.3, 0.0, 7.0, steps=4)
    np.testing.assert_allclose(undiscounted, expected_purchases(PUBLISHED, 52.0, x, t_x, T) * value * 0.3)
    one_step = discounted_clv(PUBLISHED, PUBLISHED_GG, x, t_x, T, m, 52.0, 0.3, 0.1, 7.0, steps=1)
    np.testing.assert_allclose(one_step, undiscounted / 1.1 ** (52 * 7 / 365.25))
    fine = discounted_clv(PUBLISHED, PUBLISHED_GG, x, t_x, T, m, 52.0, 0.3, 0.1, 7.0, steps=520)
    coarse = discounted_clv(PUBLISHED, PUBLISHED_GG, x, t_x, T, m, 52.0, 0.3, 0.1, 7.0, steps=12)
    assert np.all(one_step < coarse) and np.all(coarse < fine) and np.all(fine < undiscounted)
    assert isinstance(discounted_clv(PUBLISHED, PUBLISHED_GG, 2, 30.43, 38.86, 40.0, 52.0, 0.3, 0.1, 7.0), float)


# -- holdout baseline ------------------------------------------------------------------------------


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = rng.integers(0, 20, 300).astype(float)  # many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_cdnow_holdout_baseline(cal, holdout, fitted):
    """Batch BG/NBD on the 39-week holdout — the baseline the streaming models are compared with."""
    predicted = expected_purchases(fitted, 39.0, cal.x, cal.t_x, cal.T)
    none = p_no_purchase(fitted, 39.0, cal.x, cal.t_x, cal.T)
    mae = float(np.abs(predicted - holdout).mean())
    rmse = float(np.sqrt(((predicted - holdout) ** 2).mean()))
    bias = float(predicted.sum() / holdout.sum() - 1)
    auc = roc_auc(holdout == 0, none)
    print(
        f"\nCDNOW holdout: MAE {mae:.4f}  RMSE {rmse:.4f}  predicted {predicted.sum():.1f} vs actual "
        f"{holdout.sum():.0f} ({bias:+.1%})  AUC(no purchase) {auc:.4f}"
    )
    assert holdout.sum() == 1882
    assert mae == pytest.approx(0.786, abs=0.01)
    assert rmse == pytest.approx(1.608, abs=0.01)
    assert bias == pytest.approx(-0.12, abs=0.01)
    assert auc == pytest.approx(0.757, abs=0.005)
    # ranking "≥ 1 purchase" by 1 − P(none) is the same AUC
    assert roc_auc(holdout > 0, 1 - none) == pytest.approx(auc)


@pytest.mark.parametrize(
    "params",
    [PUBLISHED, BGNBDParams(2.0, 10.0, 3.0, 5.0), BGNBDParams(0.05, 0.1, 8.0, 0.3), BGNBDParams(5.0, 1.0, 0.1, 50.0), BGNBDParams(0.5, 10.0, 1.0, 2.0)],
)
def test_scalar_expectation_equals_the_array_version(params):
    # The scorer's per-customer path (plain floats) against the vectorised one, over random
    # and extreme inputs, including the quadrature fallback and a = 1.
    rng = np.random.default_rng(11)
    t = np.concatenate([rng.uniform(0.0, 400.0, 300), [0.0, 1e-3, 1e3, 1e5, 1e6, 3e5]])
    x = np.concatenate([rng.integers(0, 40, 300).astype(float), [3.0, 3.0, 500.0, 5000.0, 0.0, 10000.0]])
    T = np.concatenate([rng.uniform(0.0, 700.0, 300), [10.0, 10.0, 1e4, 1e5, 0.0, 1e5]])
    vectorised = btyd._alive_expectation(params, t, x, T)
    scalar = [btyd.alive_expectation_scalar(params, *map(float, v)) for v in zip(t, x, T)]
    assert all(isinstance(v, float) for v in scalar)
    np.testing.assert_allclose(scalar, vectorised, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(
    "params",
    [PUBLISHED, BGNBDParams(2.0, 10.0, 3.0, 5.0), BGNBDParams(0.05, 0.1, 8.0, 0.3), BGNBDParams(5.0, 1.0, 0.1, 50.0), BGNBDParams(0.5, 10.0, 1.0, 2.0)],
)
def test_several_horizons_at_once_give_the_one_horizon_values_exactly(params):
    # The scorer asks for all its horizons in one call (shared terms worked out once); the
    # values must be the same floats, bit for bit, as one call per horizon — scores are
    # published, and a replay must reproduce them exactly.
    rng = np.random.default_rng(5)
    horizons = (91.25, 182.5, 273.75, 365.0, 90.0, 0.0, -1.0, 1e6)
    for x, T in [*zip(rng.integers(0, 40, 200).astype(float), rng.uniform(0.0, 700.0, 200)), (0.0, 0.0), (5000.0, 1e5)]:
        together = btyd.alive_expectations_scalar(params, horizons, float(x), float(T))
        one_by_one = [btyd.alive_expectation_scalar(params, t, float(x), float(T)) for t in horizons]
        assert together == one_by_one


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda bg: btyd.p_alive(bg, float("nan"), 0.0, 10.0), "x must be finite"),
        (lambda bg: btyd.p_alive(bg, [1, 2], [5.0, 12.0], [10.0, 10.0]), "t_x (time of the last purchase) must not be after T"),
        (lambda bg: btyd.expected_purchases(bg, float("nan"), 1, 5.0, 10.0), "t must be finite"),
        (lambda bg: btyd.p_no_purchase(bg, -1.0, 1, 5.0, 10.0), "t must be >= 0"),
        (lambda bg: btyd.expected_purchases(bg, 10.0, 1, 5.0, float("inf")), "T must be finite"),
        (lambda bg: btyd.expected_purchases_new(bg, -3.0), "t must be >= 0"),
        (lambda bg: btyd.expected_next_purchase_time(bg, -1, 10.0), "x must be >= 0"),
        (lambda bg: btyd.compress([1, 0], [3.0, 0.0], [2.0, 4.0]), "must not be after T"),
    ],
)
def test_what_is_no_customer_history_is_refused_not_scored(call, message) -> None:
    """Before, a NaN x gave P(alive) = 1, a negative horizon a probability above 1 and an
    infinite T a ZeroDivisionError: wrong answers for a data scientist's missing values."""
    bg = btyd.BGNBDParams(0.243, 4.414, 0.793, 2.426)
    with pytest.raises(ValueError, match=re.escape(message)):
        call(bg)

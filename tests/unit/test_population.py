"""Population fitting as the worker does it: guards, and the fitted models in use."""

from __future__ import annotations

import numpy as np

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

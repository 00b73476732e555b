"""Population refit time: ``streamer.models.scorer.fit_population`` (what the worker's
background refit calls) on synthetic BG/NBD + Gamma-Gamma summaries of many customers."""

from __future__ import annotations

import time

import numpy as np

from streamer.models.scorer import PopulationModel, fit_population


def synthetic_population(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T, mean repeat value) in days, drawn as tests/unit/test_population.py does
    (Poisson purchases at a Gamma rate, dropout with a Beta probability after each), vectorised;
    spend per the Gamma-Gamma model."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.25, 1 / 4.0, n) / 7  # purchases per day
    p = rng.beta(0.8, 2.4, n)
    T = rng.integers(30, 273, n).astype(float)
    x, t_x = np.zeros(n), np.zeros(n)
    t = np.zeros(n)
    active = np.flatnonzero(lam > 0)
    while active.size:
        t[active] += rng.exponential(1 / lam[active])
        active = active[t[active] <= T[active]]
        x[active] += 1
        t_x[active] = t[active]
        active = active[rng.random(active.size) >= p[active]]
    nu = rng.gamma(3.7, 1 / 15.0, n)
    buyers = x > 0
    m = np.zeros(n)
    m[buyers] = rng.gamma(6.25 * x[buyers], 1 / (nu[buyers] * x[buyers]))
    return x, t_x, T, m


def measure_refit(customers: int) -> dict[str, float | int | str]:
    x, t_x, T, m = synthetic_population(customers)
    started = time.perf_counter()
    model = fit_population(x, t_x, T, m, fitted_at=time.time())
    seconds = time.perf_counter() - started
    return {
        "customers": customers,
        "repeat_buyers": int((x > 0).sum()),
        "seconds": round(seconds, 3),
        "fitted": model != PopulationModel(),
        "version": model.version,
    }

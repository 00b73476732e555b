"""Buy-till-you-die scoring on the stream: BG/NBD + Gamma-Gamma as a River-style scorer.

Population parameters are fitted on the worker's own customers (see :func:`fit_population`)
and swapped in whole, so a score always names the exact parameter version it used. Until the
first fit the published CDNOW estimates (converted to days) serve as the prior, which makes
scores sensible from a customer's first order: BG/NBD needs no minimum history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.core.features import Features
from streamer.models import btyd

#: Fader, Hardie & Lee (2005) CDNOW estimates; α is per week there, per day here.
PRIOR_BGNBD = btyd.BGNBDParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426, version="prior-cdnow")
PRIOR_GAMMA_GAMMA = btyd.GammaGammaParams(p=6.25, q=3.74, v=15.44, version="prior-cdnow")

#: Discounting steps over the horizon: quarterly for a year is within 1 % of continuous
#: discounting at 10 %/year and costs a third of monthly steps per event.
DISCOUNT_STEPS = 4

#: A BG/NBD fit with a below / b above these has found no evidence of dropout (see fit_population).
DEGENERATE_A, DEGENERATE_B = 1e-3, 1e4

#: A fit needs this many customers with repeat purchases, else the prior (or the last fit) stays.
MIN_REPEAT_CUSTOMERS = 50


@dataclass(frozen=True)
class PopulationModel:
    """The population parameters in force: time unit is the day."""

    bgnbd: btyd.BGNBDParams = PRIOR_BGNBD
    gamma_gamma: btyd.GammaGammaParams = PRIOR_GAMMA_GAMMA
    fitted_at: float | None = None  # event time of the fit (epoch s)

    @property
    def version(self) -> str:
        return f"{self.bgnbd.version}.{self.gamma_gamma.version}"

    def to_dict(self) -> dict:
        return {"bgnbd": self.bgnbd.to_dict(), "gamma_gamma": self.gamma_gamma.to_dict(), "fitted_at": self.fitted_at}

    @classmethod
    def from_dict(cls, doc: dict) -> "PopulationModel":
        return cls(btyd.BGNBDParams.from_dict(doc["bgnbd"]), btyd.GammaGammaParams.from_dict(doc["gamma_gamma"]), doc.get("fitted_at"))


def fit_population(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, mean_value: np.ndarray, fitted_at: float, previous: PopulationModel | None = None
) -> PopulationModel:
    """Maximum-likelihood BG/NBD and Gamma-Gamma on per-customer summaries (days).

    Times are rounded to whole days so identical customers compress into one weighted row
    (a refit over a million customers runs on a few hundred thousand rows).
    """
    previous = previous or PopulationModel()
    x = np.asarray(x, dtype=float)
    repeaters = x > 0
    if int(repeaters.sum()) < MIN_REPEAT_CUSTOMERS:
        return previous
    summaries = btyd.compress(x, np.round(t_x), np.round(T))
    bgnbd = btyd.fit_bgnbd(summaries, initial=previous.bgnbd)
    if bgnbd.a < DEGENERATE_A or bgnbd.b > DEGENERATE_B:
        # Early in a shop's life nobody has been silent long enough to show dropout, and the
        # likelihood is maximised by "nobody ever drops out" (a -> 0, b -> inf): P(alive) = 1
        # for everyone. Keep the parameters in force until the data can tell.
        return previous
    m = np.asarray(mean_value, dtype=float)
    usable = repeaters & (m > 0)
    gamma_gamma = previous.gamma_gamma
    if int(usable.sum()) >= MIN_REPEAT_CUSTOMERS:
        gamma_gamma = btyd.fit_gamma_gamma(x[usable], m[usable], initial=previous.gamma_gamma)
    return PopulationModel(bgnbd, gamma_gamma, fitted_at)


def btyd_inputs(f: Features) -> tuple[float, float, float]:
    """(x, t_x, T) in days: repeat purchase days, time of the last since the first, age."""
    return float(f.repeat_transactions), f.age_days - f.recency_days, f.age_days


class BTYDScorer:
    """P(alive), expected purchases and P(no purchase) over a horizon, predicted CLV over it
    (margin, discounted), expected order value and the median days to the next order."""

    name = "btyd"

    def __init__(self, horizon_days: float = 365.0, annual_discount_rate: float = 0.10, model: PopulationModel | None = None) -> None:
        self.horizon_days = horizon_days
        self.annual_discount_rate = annual_discount_rate
        self.model = model or PopulationModel()

    @property
    def version(self) -> str:
        return self.model.version

    def predict_one(self, features: Features, scores: dict[str, float]) -> dict[str, float]:
        if features.orders == 0:
            return {}
        bg, gg = self.model.bgnbd, self.model.gamma_gamma
        x, t_x, T = btyd_inputs(features)
        h = self.horizon_days
        next_days = float(btyd.expected_next_purchase_time(bg, x, T))
        return {
            "p_alive": float(btyd.p_alive(bg, x, t_x, T)),
            "expected_purchases": float(btyd.expected_purchases(bg, h, x, t_x, T)),
            "p_no_purchase": float(btyd.p_no_purchase(bg, h, x, t_x, T)),
            "expected_order_value": float(btyd.expected_value(gg, x, features.repeat_mean_value)),
            "predicted_clv": float(
                btyd.discounted_clv(bg, gg, x, t_x, T, features.repeat_mean_value, h, max(features.margin_rate, 0.0), self.annual_discount_rate, 1.0, steps=DISCOUNT_STEPS)
            ),
            "next_order_in_days": next_days if math.isfinite(next_days) else 1e6,
        }

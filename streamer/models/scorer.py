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
        fitted = btyd.fit_gamma_gamma(x[usable], m[usable], initial=previous.gamma_gamma)
        # q <= 1 (very heavy-tailed spend): the population's mean order value p·v/(q−1) does
        # not exist, and the formula gives a customer with no repeat purchase a negative value
        # (so a negative CLV). Keep the spend model in force until the data give a usable one.
        if fitted.q > 1.0:
            gamma_gamma = fitted
    return PopulationModel(bgnbd, gamma_gamma, fitted_at)


def btyd_inputs(f: Features) -> tuple[float, float, float]:
    """(x, t_x, T) in days: repeat purchase days, time of the last since the first, age."""
    return float(f.repeat_transactions), f.age_days - f.recency_days, f.age_days


def _p_alive(bg: btyd.BGNBDParams, x: float, t_x: float, T: float) -> float:
    """:func:`btyd.p_alive` for one customer in plain floats (no numpy per-call overhead):
    the logistic of minus the log-odds of having dropped out (FHL05 eq. 13)."""
    if x <= 0:
        return 1.0
    r, alpha, a, b = bg.as_tuple()
    log_odds = math.log(a) - math.log(b + x - 1.0) + (r + x) * (math.log(alpha + T) - math.log(alpha + t_x))
    if log_odds > 0:
        e = math.exp(-log_odds)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(log_odds))


def horizon_scores(model: PopulationModel, x: float, t_x: float, T: float, horizon_days: float) -> dict[str, float]:
    """``p_alive``, ``expected_purchases`` and ``p_no_purchase`` over ``horizon_days`` for one
    history (x, t_x, T in days): the formulas of :meth:`BTYDScorer.quantities`.

    The online learners use it to re-read a remembered history with the parameters in force
    when its label arrives (see ``LearnedScorer.learn_if_due``).

    >>> s = horizon_scores(PopulationModel(), 2.0, 30.0, 60.0, 90.0)
    >>> round(s["p_alive"], 4), round(s["expected_purchases"], 4), round(s["p_no_purchase"], 4)
    (0.6376, 1.1649, 0.4986)
    """
    bg = model.bgnbd
    r, alpha, _a, _b = bg.as_tuple()
    alive = _p_alive(bg, x, t_x, T)
    silent = math.exp((r + x) * (math.log(alpha + T) - math.log(alpha + T + horizon_days)))
    return {
        "p_alive": alive,
        "expected_purchases": alive * btyd.alive_expectation_scalar(bg, horizon_days, x, T),
        "p_no_purchase": (1.0 - alive) + alive * silent,
    }


class BTYDScorer:
    """P(alive), expected purchases and P(no purchase) over a horizon, predicted CLV over it
    (margin, discounted), expected order value and the median days to the next order."""

    name = "btyd"

    def __init__(self, horizon_days: float = 365.0, annual_discount_rate: float = 0.10, model: PopulationModel | None = None) -> None:
        self.horizon_days = horizon_days
        self.annual_discount_rate = annual_discount_rate
        self.model = model or PopulationModel()
        #: (formula inputs, scores, extra-horizon scores, model) of the last call.
        self._last: tuple[tuple, dict[str, float], dict[str, float], PopulationModel] | None = None
        #: A second horizon computed with every score (the online learners' label horizon, set
        #: by ``LearnedScorer``), so their inputs come from the same call.
        self.extra_horizon: float | None = None

    @property
    def version(self) -> str:
        return self.model.version

    def predict_one(self, features: Features, scores: dict[str, float]) -> dict[str, float]:
        if features.orders == 0:
            return {}
        return self.quantities(features, self.extra_horizon)[0]

    def quantities(self, features: Features, extra_horizon: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """The scores, and (p_alive, expected_purchases, p_no_purchase) over ``extra_horizon``.

        The same formulas as :mod:`streamer.models.btyd` (FHL05 eqs. 10 and 13, Gamma-Gamma,
        the stepwise discounted CLV of ``btyd.discounted_clv``), in plain floats with one
        scalar ₂F₁ per horizon a score update needs (``btyd.alive_expectation_scalar``): for one
        customer, numpy's per-call overhead costs more than the arithmetic. The last result is kept for the online learners,
        which ask for the same customer right after (see ``LearnedScorer.inputs``).
        """
        x, t_x, T = btyd_inputs(features)
        # Keyed by what the formulas read, not by the features object: an explanation re-scores
        # the features before the event, and after an email or community event (most events)
        # those inputs are the same numbers.
        key = (x, t_x, T, features.repeat_mean_value, features.margin_rate, extra_horizon)
        last = self._last
        if last is not None and last[0] == key and last[3] is self.model:
            return last[1], last[2]
        bg, gg = self.model.bgnbd, self.model.gamma_gamma
        r, alpha, _a, _b = bg.as_tuple()
        h = self.horizon_days
        steps = [h * k / DISCOUNT_STEPS for k in range(1, DISCOUNT_STEPS + 1)]
        horizons = steps + ([extra_horizon] if extra_horizon is not None else [])
        expectations = btyd.alive_expectations_scalar(bg, horizons, x, T)
        alive = _p_alive(bg, x, t_x, T)

        def silent(t: float) -> float:
            return math.exp((r + x) * (math.log(alpha + T) - math.log(alpha + T + t)))

        p_, q_, v_ = gg.as_tuple()
        m = features.repeat_mean_value if x > 0 else 0.0
        value = p_ * (v_ + x * m) / (p_ * x + q_ - 1.0)
        total, previous = 0.0, 0.0
        for t_k, e_k in zip(steps, expectations[:DISCOUNT_STEPS]):
            cumulative = alive * float(e_k)
            total += (cumulative - previous) / (1.0 + self.annual_discount_rate) ** (t_k / btyd.YEAR_DAYS)
            previous = cumulative
        next_days = (alpha + T) * math.expm1(-math.log1p(-0.5) / (r + x))
        scores = {
            "p_alive": alive,
            "expected_purchases": alive * float(expectations[DISCOUNT_STEPS - 1]),
            "p_no_purchase": (1.0 - alive) + alive * silent(h),
            "expected_order_value": value,
            "predicted_clv": total * value * max(features.margin_rate, 0.0),
            "next_order_in_days": next_days if math.isfinite(next_days) else 1e6,
        }
        extra: dict[str, float] = {}
        if extra_horizon is not None:
            extra = {
                "p_alive": alive,
                "expected_purchases": alive * float(expectations[-1]),
                "p_no_purchase": (1.0 - alive) + alive * silent(extra_horizon),
            }
        self._last = (key, scores, extra, self.model)
        return scores, extra

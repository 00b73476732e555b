"""The CDNOW sample and the calibration / holdout protocol of Fader, Hardie & Lee (2005).

2,357 customers who first bought at CDNOW in 1997 Q1, with every purchase through June 1998.
The papers calibrate on the first 39 weeks (1997-01-01 .. 1997-09-30) and forecast the next 39
(1997-10-01 .. 1998-06-30). Frequency counts *repeat purchase days*: several orders on one
day are one transaction (their values add up), and the first purchase is not a repeat.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from streamer.models.btyd import Summaries, compress

Array = NDArray[np.float64]

CALIBRATION_START = date(1997, 1, 1)
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)

Row = tuple[str, date, float]


def load_cdnow(path: str | Path) -> list[Row]:
    """One (customer id, purchase date, dollar value) per line of the fixed-width file.

    The customer id is the sample id (column 2, "0001".."2357", kept zero-padded so ids sort
    in numeric order). Lines are returned as they are — same-day purchases are merged by
    :func:`calibration_summaries` and :func:`holdout_counts`, not here.
    """
    rows: list[Row] = []
    with open(path, encoding="ascii") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise ValueError(f"{path}:{lineno}: expected 5 columns, got {len(parts)}")
            _full_id, sample_id, ymd, _cds, value = parts
            day = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8]))
            rows.append((sample_id, day, float(value)))
    return rows


@dataclass
class CalibrationData:
    """Per-customer BTYD summary of a calibration period, aligned arrays in ``ids`` order."""

    ids: list[str]
    x: Array  # repeat purchase days
    t_x: Array  # last purchase − first purchase, in time units
    T: Array  # calibration end − first purchase, in time units
    mean_value: Array  # mean value of the repeat transactions (0.0 when x = 0)

    def summaries(self) -> Summaries:
        """The (x, t_x, T) rows, compressed for fitting."""
        return compress(self.x, self.t_x, self.T)


def _purchase_days(rows: list[Row], until: date) -> dict[str, dict[date, float]]:
    days: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for customer, day, value in rows:
        if day <= until:
            days[customer][day] += value  # same-day orders: one transaction, values add up
    return days


def calibration_summaries(rows: list[Row], calibration_end: date, time_unit_days: float = 7.0) -> CalibrationData:
    """x, t_x, T and mean repeat-transaction value per customer, from purchases up to ``calibration_end``.

    T runs from the first purchase to the end of ``calibration_end`` taken as a date difference
    (a first purchase on 1997-01-01 has T = 272 days = 38.86 weeks, as in the paper's data).
    Customers whose first purchase is after ``calibration_end`` are not included.
    """
    per_customer = _purchase_days(rows, calibration_end)
    ids = sorted(per_customer)
    n = len(ids)
    x, t_x, T, mean_value = (np.zeros(n) for _ in range(4))
    for i, customer in enumerate(ids):
        days = sorted(per_customer[customer])
        first, last = days[0], days[-1]
        x[i] = len(days) - 1
        t_x[i] = (last - first).days / time_unit_days
        T[i] = (calibration_end - first).days / time_unit_days
        if len(days) > 1:
            mean_value[i] = float(np.mean([per_customer[customer][d] for d in days[1:]]))
    return CalibrationData(ids, x, t_x, T, mean_value)


def holdout_counts(rows: list[Row], calibration_end: date, holdout_end: date) -> dict[str, int]:
    """Purchase days in (calibration_end, holdout_end] per customer acquired by ``calibration_end``.

    Every customer of the calibration period has an entry (0 if silent in the holdout).
    """
    first: dict[str, date] = {}
    for customer, day, _ in rows:
        if customer not in first or day < first[customer]:
            first[customer] = day
    holdout_days: dict[str, set[date]] = {c: set() for c, d in first.items() if d <= calibration_end}
    for customer, day, _ in rows:
        if calibration_end < day <= holdout_end and customer in holdout_days:
            holdout_days[customer].add(day)
    return {c: len(days) for c, days in sorted(holdout_days.items())}


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: P(score of a positive > a negative).

    Ranks are averaged over ties, so a tie counts one half.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1], [0.5, 0.5])
    0.5
    """
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both positive and negative labels")
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))

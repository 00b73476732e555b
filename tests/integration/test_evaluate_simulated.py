"""`streamer evaluate --simulated`: the CDNOW protocol on the shop simulator, where the truth
is known — BTYD alone and BTYD corrected by the online learners, side by side.

A small run (a few hundred customers) so it stays fast; it checks the report is complete and
consistent. Which side wins is *not* asserted here: at this size the churn AUCs of the two
sides are within noise of each other (see the docstring of evaluate_simulated for the
protocol; run the default size to compare them).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

CUSTOMERS = 400
SEED = 3


def test_evaluate_simulated_reports_both_sides_consistently(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "evaluate", "--simulated", "--customers", str(CUSTOMERS), "--seed", str(SEED),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "replaying [" in done.stderr  # the progress bar
    assert "BTYD alone" in done.stdout and "with learners" in done.stdout
    m = json.loads((out / "metrics.json").read_text())

    # Counts: every simulated customer places an acquisition order within the first 90 days,
    # so all of them are scored at the end of the 270-day calibration — but those who sent
    # back everything they bought (an order refunded in full is no purchase): one, at seed 3.
    assert m["customers"] == CUSTOMERS and m["scored"] == CUSTOMERS - 1 and m["seed"] == SEED
    assert (m["calibration_days"], m["holdout_days"], m["learn_horizon_days"]) == (270.0, 180.0, 75.0)
    assert m["calibration_end"] == "2024-09-27" and m["holdout_end"] == "2025-03-26"
    assert m["events_calibration"] > 20 * CUSTOMERS and m["events_holdout"] > 5 * CUSTOMERS
    assert 0 < m["churned"] < m["scored"] and 0 < m["dead"] < m["scored"]
    # The dead cannot buy: every dead customer is a churned one.
    assert m["dead"] <= m["churned"]
    assert m["total_actual_purchases"] > 0 and m["total_actual_spend"] > 0
    # Labels of the learners (75-day horizon) matured inside calibration and were learned.
    assert m["labels_learned"] >= CUSTOMERS and m["online_quality"]["labels"] == m["labels_learned"]

    # Metrics in range, for both sides.
    for side in ("btyd", "learned"):
        assert 0.0 <= m[f"auc_churn_{side}"] <= 1.0
        assert 0.0 <= m[f"auc_dead_{side}"] <= 1.0
        assert m[f"mae_purchases_{side}"] >= 0 and m[f"mae_clv_{side}"] >= 0
        assert m[f"total_predicted_purchases_{side}"] > 0 and m[f"total_predicted_spend_{side}"] > 0
        expected_pct = 100 * (m[f"total_predicted_purchases_{side}"] - m["total_actual_purchases"]) / m["total_actual_purchases"]
        assert math.isclose(m[f"total_error_pct_{side}"], expected_pct, rel_tol=1e-9, abs_tol=1e-9)
    assert m["bgnbd"]["n_customers"] > 0

    # The per-customer file agrees with the summary.
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["scored"] and len({r["customer"] for r in rows}) == m["scored"]
    actual = [int(r["actual_purchases"]) for r in rows]
    assert sum(actual) == m["total_actual_purchases"]
    assert sum(a == 0 for a in actual) == m["churned"]
    assert sum(int(r["dead_at_cut"]) for r in rows) == m["dead"]
    assert all(int(r["actual_purchases"]) == 0 for r in rows if r["dead_at_cut"] == "1")
    assert math.isclose(sum(float(r["actual_spend"]) for r in rows), m["total_actual_spend"], abs_tol=0.01 * CUSTOMERS)
    btyd = [float(r["expected_purchases"]) for r in rows]
    learned = [float(r["expected_purchases_learned_holdout"]) for r in rows]
    assert math.isclose(sum(btyd), m["total_predicted_purchases_btyd"], rel_tol=1e-4)
    assert math.isclose(sum(learned), m["total_predicted_purchases_learned"], rel_tol=1e-4)
    mae = sum(abs(p - a) for p, a in zip(btyd, actual)) / m["scored"]
    assert math.isclose(mae, m["mae_purchases_btyd"], rel_tol=1e-4)
    for r in rows:
        assert 0.0 <= float(r["p_no_purchase"]) <= 1.0 and 0.0 <= float(r["p_alive"]) <= 1.0
        assert 0.0 <= float(r["churn_risk_learned"]) <= 1.0 and 0.0 <= float(r["p_alive_learned"]) <= 1.0
        assert float(r["expected_order_value"]) > 0


def test_engagement_makes_the_learners_better_than_btyd_alone_at_full_size(tmp_path: Path) -> None:
    """The models issue's simulator check, at the README's size (1,500 customers, seed 7): with
    the engagement features the learners rank who will not buy again better than BTYD alone,
    and who is really dead, and their holdout spend error is lower. Measured at this seed: churn
    AUC 0.7251 vs 0.6833, dead AUC 0.8832 vs 0.8552, CLV MAE 76.50 vs 77.26 USD, purchases
    total −6.7 % vs −11.0 % (seeds 1, 3, 11 in the README). The margins asserted are below every seed measured, not at the measurement."""
    out = tmp_path / "sim"
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "evaluate", "--simulated", "--customers", "1500", "--seed", "7", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["auc_churn_learned"] >= m["auc_churn_btyd"] + 0.025
    assert m["auc_dead_learned"] > m["auc_dead_btyd"]  # 0.8832 vs 0.8552: the dead stop opening mail
    assert m["mae_clv_learned"] < m["mae_clv_btyd"]
    assert m["mae_purchases_learned"] < m["mae_purchases_btyd"]
    assert abs(m["total_error_pct_learned"]) <= 12.0

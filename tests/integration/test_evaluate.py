"""`streamer evaluate` on the CDNOW sample: the real command, its files, its key metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CDNOW = Path(__file__).resolve().parents[1] / "data" / "CDNOW_sample.txt"
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def test_evaluate_reproduces_the_published_fit_through_the_stream(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "evaluate", str(CDNOW), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "replaying [" in done.stderr  # the progress bar
    metrics = json.loads((out / "metrics.json").read_text())
    fitted = {**metrics["bgnbd"], "alpha": metrics["bgnbd"]["alpha"] / 7}  # per day -> per week
    for name, value in PUBLISHED.items():
        assert fitted[name] == pytest.approx(value, rel=0.02), name
    assert metrics["bgnbd_log_likelihood_weeks"] == pytest.approx(-9582.4, abs=0.5)
    assert metrics["customers"] == 2357
    assert metrics["total_actual_purchases"] == 1882
    # The batch BG/NBD figures, reached here by the streaming pipeline (the models issue's
    # targets — MAE ≤ 0.76, AUC ≥ 0.79, total within ±5 % — are not reached yet).
    assert metrics["mae_purchases"] == pytest.approx(0.786, abs=0.005)
    assert metrics["total_error_pct"] == pytest.approx(-12.1, abs=0.5)
    assert metrics["auc_churn_p_no_purchase"] == pytest.approx(0.757, abs=0.005)
    assert metrics["auc_churn_expected_purchases"] == pytest.approx(0.7725, abs=0.005)
    # The online learners (13-week delayed labels inside calibration), as measured: a lower
    # MAE than BG/NBD (0.774 vs 0.786) and better churn ranking than P(no purchase), but a
    # larger under-forecast (−18 %): CDNOW has no engagement data, so the correction they
    # learn is the level of the labels inside calibration, which the holdout does not share.
    assert metrics["labels_learned"] == 4714
    assert metrics["auc_churn_learned"] == pytest.approx(0.7671, abs=0.01)
    assert metrics["total_error_pct_learned"] == pytest.approx(-18.1, abs=2.0)
    assert metrics["mae_purchases_learned"] == pytest.approx(0.7736, abs=0.01)
    assert metrics["mae_purchases_learned"] < metrics["mae_purchases"]
    assert metrics["online_quality"]["labels"] == 4714
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "customer,expected_purchases,p_at_least_one,predicted_value,actual_purchases,actual_spend"
    assert len(rows) == 2358


def run_evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", "evaluate", *args, "--quiet"], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--holdout-end", "1997-06-30"], 2, "--holdout-end (1997-06-30) must come after --calibration-end (1997-09-30)"),
        (["--calibration-end", "1997-13-01"], 2, "must be dates like 1997-09-30"),
        (["--calibration-end", "1998-07-01"], 2, "must come after --calibration-end (1998-07-01)"),  # after the default holdout end
    ],
)
def test_evaluate_refuses_bad_dates_in_one_line(args: list[str], status: int, message: str) -> None:
    done = run_evaluate(str(CDNOW), *args)
    assert done.returncode == status and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_evaluate_refuses_a_file_that_is_no_cdnow_log(tmp_path: Path) -> None:
    other = tmp_path / "orders.csv"
    other.write_text("order_id,customer,total\n1,a,10\n")
    done = run_evaluate(str(other))
    assert done.returncode == 1 and "streamer evaluate: " in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert run_evaluate(str(tmp_path / "missing.txt")).returncode == 2


def test_a_population_too_small_to_fit_says_so(tmp_path: Path) -> None:
    small = tmp_path / "cdnow-50.txt"
    small.write_text("".join(CDNOW.read_text().splitlines(keepends=True)[:50]))
    done = run_evaluate(str(small))
    assert done.returncode == 0, done.stderr
    assert "not fitted: too few customers" in done.stdout and "LL=" not in done.stdout

"""The CDNOW ceiling study (bench/cdnow_headroom.py): even models fitted on the holdout
outcomes themselves, from the calibration histories, do not reach the models issue's CDNOW
targets together — which is what the README reports about them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cdnow_headroom import main, study

CDNOW = Path(__file__).resolve().parents[1] / "data" / "CDNOW_sample.txt"


def test_models_fitted_on_the_holdout_do_not_reach_the_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = study(CDNOW)
    bgnbd, scaled, median, quantile, *oracles = lines
    assert bgnbd.mae == pytest.approx(0.7855, abs=0.001) and bgnbd.total_error_pct == pytest.approx(-12.1, abs=0.1)
    assert bgnbd.churn_auc == pytest.approx(0.7725, abs=0.001)
    # Removing BG/NBD's under-forecast (with the holdout's own total) costs MAE.
    assert scaled.total_error_pct == pytest.approx(0.0, abs=1e-9) and scaled.mae > bgnbd.mae + 0.02
    # Scored by its median instead of its mean, the same BG/NBD has a far lower MAE; the
    # quantile that sums to BG/NBD's own total keeps that total with a lower MAE too.
    assert median.mae < 0.70 and median.total_error_pct < -40
    assert quantile.mae < 0.74 and quantile.total_error_pct == pytest.approx(bgnbd.total_error_pct, abs=1.5)
    assert len(oracles) == 3
    for line in oracles:
        assert abs(line.total_error_pct) < 5.0  # they do get the level right...
        assert line.mae > 0.80  # ...but not the MAE target (≤ 0.76) with it...
        assert 0.77 < line.churn_auc < 0.79  # ...and not the AUC target (≥ 0.79)

    assert main([str(CDNOW), "--json", str(tmp_path / "h.json")]) == 0
    assert "fitted on the holdout" in capsys.readouterr().out and (tmp_path / "h.json").exists()


def test_posterior_predictive_draws_agree_with_the_closed_form_expectation() -> None:
    import numpy as np

    from bench.cdnow_headroom import posterior_predictive_draws
    from streamer.models import btyd
    from streamer.models.scorer import PRIOR_BGNBD

    x, t_x, T = np.array([0.0, 2.0, 7.0, 1.0]), np.array([0.0, 20.0, 150.0, 5.0]), np.array([30.0, 100.0, 200.0, 300.0])
    draws = posterior_predictive_draws(PRIOR_BGNBD, x, t_x, T, 90.0, draws=40000, seed=1)
    expected = np.asarray(btyd.expected_purchases(PRIOR_BGNBD, 90.0, x, t_x, T))
    assert draws.mean(axis=1) == pytest.approx(expected, rel=0.05, abs=0.005)
    none = np.asarray(btyd.p_no_purchase(PRIOR_BGNBD, 90.0, x, t_x, T))
    assert (draws == 0).mean(axis=1) == pytest.approx(none, abs=0.01)

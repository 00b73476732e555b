"""`make bench-scale` end to end on a tiny replay: both modes run every event through the
engine without a rejection, and report resident memory as customers are added. Structure and
sanity only, never speed or the memory figures themselves."""

from __future__ import annotations

import json

import pytest

from bench import scale

pytestmark = [pytest.mark.timeout(300)]


def test_both_modes_replay_and_report(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scale.json"
    assert scale.main(["--customers", "1500", "--out", str(out)]) == 0
    results = {r["mode"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"memory-index", "bounded"}
    for result in results.values():
        # Every customer's first order, a third's repeat order and a third's email open.
        assert result["events"] == 1500 + 500 + 500 and result["rejected"] == 0
        assert result["in_engine"] == 1500
        assert [n for n, _ in result["samples"]] == list(range(75, 1501, 75))
        assert all(rss > 10 * 2**20 for _, rss in result["samples"])
        assert result["slope_bytes_per_customer"] is not None
        assert result["restored"] == 1500 and result["restore_seconds"] > 0
    printed = capsys.readouterr().out
    assert "bounded: 2,500 events (0 rejected) for 1,500 customers" in printed


def test_fill_by_restore_writes_restores_and_runs_live_events(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fill.json"
    assert scale.main(["--fill", "restore", "--customers", "4000", "--live", "500", "--templates", "300", "--modes", "bounded", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["mode"] == "bounded" and result["fill"] == "restore"
    # Every state written is restored; the live phase's new customers (one in ten) join them.
    assert result["restored"] == 4000 and result["in_engine"] == 4000 + 50
    assert result["live_rejected"] == 0
    assert [n for n, _ in result["samples"]] == list(range(200, 4001, 200))
    assert [n for n, _ in result["live_samples"]] == list(range(50, 501, 50))
    assert result["refit_rows"] == 4050 and result["ranks_exact"]
    assert result["rocksdb_timers"] is not None
    assert "restore: 4,000 states in" in capsys.readouterr().out

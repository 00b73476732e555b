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

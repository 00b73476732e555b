"""`make bench` end to end on a tiny load: the harness starts and stops the broker and a worker,
runs every phase and writes well-formed JSON with every field. Structure only, never speed."""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pytest

from bench import run
from bench.report import METRICS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def test_the_bench_runs_end_to_end_and_writes_every_field(tmp_path: Path) -> None:
    result = run.main(["--customers", "400", "--latency-seconds", "2", "--refit-customers", "20000", "--out", str(tmp_path)])

    (path,) = tmp_path.glob("bench-*.json")
    assert str(path) == result["json_path"]
    doc = json.loads(path.read_text())
    assert {"bench", "format", "started_at", "finished_at", "host", "config", "workload", "runs", "summary", "logs"} <= doc.keys()
    assert set(doc["workload"]["mix"]) == {"orders", "email-events", "community-events"}
    assert doc["workload"]["customers"] > 0 and doc["workload"]["events"] > doc["workload"]["customers"]

    (one,) = doc["runs"]
    worker = one["worker"]
    assert number(worker["ready_s"]) and worker["ready_s"] > 0
    thr = worker["throughput"]
    assert thr["complete"] is True and thr["scored"] == thr["events"] == doc["workload"]["events"]
    for key in ("events_per_s", "seconds", "timer_scores", "window_events"):
        assert number(thr[key]), key
    assert set(thr["cpu_share_after_publishing"]) == {"worker", "broker"}
    assert thr["count_source"] in ("scores topic", "worker acknowledgements") and isinstance(thr["scores_topic_complete"], bool)
    assert thr["events_per_s_by_acks"] is None or number(thr["events_per_s_by_acks"])
    mem = worker["memory"]
    assert mem["customers"] == doc["workload"]["customers"]
    assert mem["rss_after_bytes"] > 0 and mem["rss_before_bytes"] > 0 and number(mem["bytes_per_customer"])
    assert "bytes_per_customer_slope" in mem and isinstance(mem["rss_samples"], list)
    lat = worker["latency"]
    assert lat["events"] > 0 and lat["matched"] + lat["missing"] == lat["events"] and lat["matched"] > 0
    assert number(lat["timer_scores"]) and lat["complete"] is True
    for key in ("offered_events_per_s", "e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms", "record_ts_p50_ms", "record_ts_p99_ms"):
        assert number(lat[key]), key
    assert lat["e2e_p50_ms"] <= lat["e2e_p99_ms"] <= lat["e2e_max_ms"]
    assert len(lat["e2e_p50_ms_by_third"]) == 3
    assert isinstance(lat["gc_full_collections"], int) and lat["gc_full_collections"] >= 0
    assert lat["gc_full_longest_le_ms"] is None or (lat["gc_full_collections"] > 0 and number(lat["gc_full_longest_le_ms"]))
    ceiling = one["ceiling"]
    assert ceiling["complete"] is True and ceiling["events"] == doc["workload"]["events"] + lat["warmup_events"] + lat["events"]
    assert ceiling["invalid"] == 0 and number(ceiling["events_per_s"]) and ceiling["events_per_s"] > 0
    assert one["ratio"] == pytest.approx(thr["events_per_s"] / ceiling["events_per_s"], abs=1e-4)  # the ratio is rounded to 4 decimals
    # Quix Streams on the same input topics, both works, every record handled.
    assert set(one["quix"]) == {"ceiling", "engine"}
    for work, quix in one["quix"].items():
        assert quix["work"] == work and quix["complete"] is True and quix["events"] == ceiling["events"], work
        assert quix["invalid"] == 0 and number(quix["events_per_s"]) and quix["events_per_s"] > 0, work
        assert quix["ratio"] == pytest.approx(quix["events_per_s"] / ceiling["events_per_s"], abs=1e-4), work
    assert one["quix"]["ceiling"]["outputs"] == ceiling["events"]  # one output record per event, as the ceiling's
    # The scorer's outputs: at least a score update per event (plus segment changes, triggers and timer scores).
    assert one["quix"]["engine"]["outputs"] > ceiling["events"]
    assert one["quix"]["engine"]["worker_ratio"] == pytest.approx(thr["events_per_s"] / one["quix"]["engine"]["events_per_s"], abs=1e-4)
    assert one["refit"]["customers"] == 20000 and one["refit"]["fitted"] is True and number(one["refit"]["seconds"])

    assert set(doc["summary"]) == set(METRICS)
    for name, entry in doc["summary"].items():
        assert {"label", "unit", "per_run", "values", "min", "median", "max", "target", "runs_meeting_target"} <= entry.keys(), (
            name
        )
        # The slope needs enough samples while loading, and a longest GC pause a full collection
        # in the latency phase: neither is there at this size.
        if name not in ("bytes_per_customer_slope", "gc_full_longest_le_ms"):
            assert len(entry["values"]) == 1 and entry["min"] == entry["median"] == entry["max"], name
    for name in ("ratio", "latency_p99_ms", "bytes_per_customer", "ready_s", "refit_s"):
        assert doc["summary"][name]["target"] is not None and doc["summary"][name]["runs_meeting_target"] in (0, 1)

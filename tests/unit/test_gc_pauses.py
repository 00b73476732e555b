"""clv_gc_pause_seconds: every collection of Python's garbage collector is timed, by generation."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from streamer.metrics import Metrics


def _counts(metrics: Metrics) -> dict[str, float]:
    return {s.labels["generation"]: s.value for fam in metrics.gc_pause.collect() for s in fam.samples if s.name.endswith("_count")}


def test_collections_are_timed_by_generation_once_per_process() -> None:
    metrics = Metrics(CollectorRegistry())
    callbacks = len(gc.callbacks)
    metrics.track_gc_pauses()
    metrics.track_gc_pauses()  # idempotent: one callback, not two
    try:
        assert len(gc.callbacks) == callbacks + 1
        before = _counts(metrics)
        garbage = []
        for _ in range(3):
            cycle: list = []
            cycle.append(cycle)  # cyclic garbage: only the collector frees it
            garbage.append(cycle)
        del garbage, cycle
        gc.collect(0)
        gc.collect(2)
        after = _counts(metrics)
        assert after["0"] >= before["0"] + 1 and after["2"] >= before["2"] + 1
        sums = {s.labels["generation"]: s.value for fam in metrics.gc_pause.collect() for s in fam.samples if s.name.endswith("_sum")}
        assert sums["2"] > 0.0
    finally:
        gc.callbacks.pop()

"""What the query API and dashboard show: the engine's running populations and histograms equal
a count over the stored states (also after a restore), summaries add up across workers, and
the flow window forgets old minutes."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from streamer.core import views
from streamer.core.engine import DictStore, Engine, Record, Result, Transition, risk_bucket
from streamer.core.triggers import Outcome
from streamer.simulator import ShopSimulator

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def simulated(customers: int = 300, days: int = 200) -> tuple[Engine, DictStore]:
    engine, store = Engine(wall_clock=lambda: START.timestamp() + 400 * 86400), DictStore()
    sim = ShopSimulator(customers, START, seed=3)
    offsets: Counter = Counter()
    for role, key, value in sim.raw_events(until=START + timedelta(days=days)):
        partition = hash(key) % 4 if key else 0
        engine.process(Record(role, role, partition, offsets[(role, partition)], key, value), store)
        offsets[(role, partition)] += 1
    return engine, store


def counted(store: DictStore) -> tuple[dict[str, dict[str, int]], list[int]]:
    populations: dict[str, Counter] = {}
    risk = [0] * 10
    for state in store.data.values():
        for family, segment in state.segments.items():
            if segment is not None:
                populations.setdefault(family, Counter())[segment] += 1
        if state.risk is not None:
            risk[risk_bucket(state.risk)] += 1
    return {f: dict(c) for f, c in populations.items()}, risk


def test_running_counts_equal_a_count_over_the_states_and_survive_a_restore():
    engine, store = simulated()
    summary = views.partition_summary(engine)
    populations, risk = counted(store)
    assert summary["populations"] == populations
    assert summary["churn_risk_histogram"]["counts"] == risk
    assert summary["customers"] == len(store.data)
    assert sum(summary["clv_histogram"]["counts"]) == sum(1 for s in store.data.values() if s.value is not None)
    assert {"lifecycle", "value_tier", "churn_band", "engagement"} <= set(populations)

    restored = Engine()
    for partition in engine.partitions:
        restored.restore_partition(partition, [s for s in store.data.values() if s.partition == partition])
    assert views.partition_summary(restored) == summary


def test_summaries_of_disjoint_partitions_add_up():
    engine, store = simulated(customers=200, days=120)
    whole = views.partition_summary(engine)
    halves = []
    for part in ({0, 1}, {2, 3}):
        half = Engine()
        for p in part:
            half.restore_partition(p, [s for s in store.data.values() if s.partition == p])
        halves.append(views.partition_summary(half))
    restored_whole = Engine()
    for p in range(4):
        restored_whole.restore_partition(p, [s for s in store.data.values() if s.partition == p])
    assert views.merge_summaries(halves) == views.partition_summary(restored_whole) == whole


def test_flows_window_and_latest_triggers():
    now = [1_000_000.0]
    activity = views.RecentActivity(window_s=3600, clock=lambda: now[0])
    activity.record(Result(transitions=[Transition("lifecycle", None, "new"), Transition("lifecycle", "new", "repeat")]))
    activity.record(Result(triggers=[Outcome("win_back", 5.0, "lapsed", "email", "fired"), Outcome("overdue", 6.0, "late", "email", "cooldown")]))
    now[0] += 1800
    activity.record(Result(transitions=[Transition("lifecycle", None, "new")]))
    assert activity.flows() == [{"family": "lifecycle", "from": "none", "to": "new", "count": 2}, {"family": "lifecycle", "from": "new", "to": "repeat", "count": 1}]
    assert [t["trigger"] for t in activity.snapshot()["latest_triggers"]] == ["win_back"]  # suppressed ones are not shown
    now[0] += 2000  # the first minute is now more than an hour old
    assert activity.flows() == [{"family": "lifecycle", "from": "none", "to": "new", "count": 1}]
    merged = views.merge_activity([activity.snapshot(), activity.snapshot()])
    assert merged["flows"] == [{"family": "lifecycle", "from": "none", "to": "new", "count": 2}]


def test_throughput_merges_histograms_before_taking_quantiles():
    a = {"consumed": 10, "events_per_s": 2.0, "latency_buckets": [["0.1", 9], ["1.0", 10], ["+Inf", 10]]}
    b = {"consumed": 90, "events_per_s": 3.0, "latency_buckets": [["0.1", 0], ["1.0", 90], ["+Inf", 90]]}
    merged = views.merge_throughput([a, b])
    assert merged["consumed"] == 100 and merged["events_per_s"] == 5.0
    assert merged["latency_p50_s"] > 0.1  # 91 of 100 above 0.1 s: not the median of either alone
    assert views.merge_throughput([])["latency_p50_s"] is None

"""What keeps a partition's memory bounded with millions of customers: the value ranking's
sketch, the refit sample, and the timers on disk — each checked against the exact, in-memory
form it stands in for."""

from __future__ import annotations

import itertools
import random
import zlib
from bisect import bisect_left

import pytest

from bench.load import generate
from streamer.core.config import ScoringConfig
from streamer.core.engine import DictStore, Engine, Record
from streamer.core.partition_columns import PartitionColumns, sample_hash
from streamer.core.state import CustomerState
from streamer.core.timers import DiskTimers
from streamer.core.value_ranks import PartitionRanks
from streamer.core.views import CLV_EDGES, partition_summary

# -- value ranking: exact, then a sketch ----------------------------------------------------------


def clv_like(rng: random.Random, n: int) -> list[float]:
    """CLVs spread over orders of magnitude, with some zeros (customers whose orders were refunded)."""
    return [0.0 if rng.random() < 0.05 else rng.lognormvariate(5.0, 1.5) for _ in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_the_sketch_ranks_within_half_a_percent_of_the_exact_ranking(seed: int) -> None:
    rng = random.Random(seed)
    values = clv_like(rng, 60_000)
    exact, sketch = PartitionRanks(), PartitionRanks(exact_limit=1_000)
    for value in values:
        exact.replace(None, value)
        sketch.replace(None, value)
    # Customers change value, some leave: the sketch follows, given the value each had.
    for i in rng.sample(range(len(values)), 20_000):
        new = None if rng.random() < 0.2 else rng.lognormvariate(5.0, 1.5)
        exact.replace(values[i], new)
        sketch.replace(values[i], new)
    assert exact.exact and not sketch.exact and len(sketch) == len(exact) == len(exact.values())
    probes = clv_like(rng, 2_000) + [0.0, 1e-9, 1e12]
    errors = [abs(sketch.quantile(v) - exact.quantile(v)) for v in probes]
    assert max(errors) < 0.005, max(errors)
    # The dashboard's CLV buckets fall on bin edges: counted exactly from the sketch.
    sorted_values = exact.values()
    for edge in CLV_EDGES:
        assert sketch.count_below(edge) == bisect_left(sorted_values, edge)


def test_a_ranking_becomes_a_sketch_past_its_limit_also_on_restore() -> None:
    ranks = PartitionRanks(exact_limit=3)
    ranks.extend([1.0, 2.0, 3.0])
    assert ranks.exact and ranks.quantile(2.5) == pytest.approx(2 / 3)
    ranks.replace(None, 4.0)
    assert not ranks.exact and len(ranks) == 4
    with pytest.raises(ValueError, match="sketch"):
        ranks.values()
    restored = PartitionRanks(exact_limit=3)
    restored.extend([1.0, 2.0, 3.0, 4.0])
    assert not restored.exact and [restored.quantile(v) for v in (2.5, 5.0)] == [ranks.quantile(v) for v in (2.5, 5.0)]


# -- refit rows: a bottom-k sample by hash --------------------------------------------------------


def test_the_refit_sample_is_the_customers_with_the_smallest_hashes_whatever_the_order() -> None:
    customers = [f"customer-{i}" for i in range(2_000)]
    expected = set(sorted(customers, key=sample_hash)[:300])
    for seed in range(3):
        order = customers[:]
        random.Random(seed).shuffle(order)
        columns = PartitionColumns(refit_limit=300)
        for n, customer in enumerate(order):
            columns.set_refit(customer, 1.0, float(n), float(n + 1), 2.0)
            columns.set_refit(customer, 2.0, float(n), float(n + 2), 3.0)  # an update: no new row
        assert set(columns.refit_customers()) == expected
        assert columns.refit_rows == 300 == len(columns.refit_columns()[0])
        # Nothing else is kept for the customers left out (the due times are elsewhere).
        assert len(columns) == 300


def test_the_refit_sample_under_its_limit_keeps_everyone_and_erasure_frees_a_place() -> None:
    columns = PartitionColumns(refit_limit=3)
    for customer in "abc":
        columns.set_refit(customer, 1.0, 0.0, 1.0, 1.0)
    assert columns.refit_rows == 3
    columns.release("b")
    assert columns.refit_rows == 2 and "b" not in columns.refit_customers()
    columns.set_refit("d", 1.0, 0.0, 1.0, 1.0)  # the free place is taken, whatever the hash
    assert sorted(columns.refit_customers()) == ["a", "c", "d"]


# -- timers on disk, in the engine --------------------------------------------------------------


def bench_records(customers: int) -> list[Record]:
    workload = generate(customers, 28, 5)
    return [Record(role, role, zlib.crc32(key) % 4, i, key, value) for i, (role, key, value) in enumerate(workload.main)]


def outputs_of(engine: Engine, records: list[Record], store: DictStore) -> list[tuple]:
    return [(o.topic_role, o.key, o.value) for r in records for o in engine.process(r, store).outgoing]


_engines = itertools.count()


def disk_engine(tmp_path, **kw) -> Engine:
    """An engine whose timers are on disk, in a folder of its own."""
    folder = tmp_path / f"t{next(_engines)}"
    return Engine(wall_clock=lambda: 2e9, disk_timers=lambda p: DiskTimers(folder / f"p{p}"), **kw)


def test_timers_on_disk_give_the_same_outputs_as_in_memory_also_after_a_restore(tmp_path) -> None:
    records = bench_records(400)
    split = len(records) // 2
    memory = outputs_of(Engine(wall_clock=lambda: 2e9), records, DictStore())
    disk_engine_1, store = disk_engine(tmp_path), DictStore()
    head = outputs_of(disk_engine_1, records[:split], store)
    assert head == memory[: len(head)]
    assert any(clock.timers.due_times() for clock in disk_engine_1.partitions.values())
    # Restored from the states alone (as a worker does after a rebalance or a restart).
    restored, store2 = disk_engine(tmp_path), DictStore()
    restored.import_models(disk_engine_1.export_models())
    states = [CustomerState.from_bytes(s.to_bytes()) for s in store.data.values()]
    for state in states:
        store2.put(state.customer, state)
    assert restored.restore_partitions(disk_engine_1.partitions, states) == len(states)
    for p, clock in disk_engine_1.partitions.items():
        assert restored.partitions[p].timers.due_times() == clock.timers.due_times()
    tail = outputs_of(restored, records[split:], store2)
    assert head + tail == memory
    for engine in (disk_engine_1, restored):
        for p in list(engine.partitions):
            engine.forget_partition(p)
    assert not any(path.exists() for path in tmp_path.glob("t*/p*"))  # dropped with the partition


def test_past_the_limits_the_engine_runs_on_the_sketch_and_the_sample(tmp_path) -> None:
    config = ScoringConfig(value_rank_exact_limit=40, refit_sample_per_partition=30, value_tier_min_population=10)
    engine, store = disk_engine(tmp_path, config=config), DictStore()
    results = [engine.process(r, store) for r in bench_records(600)]
    assert not any(r.rejected for r in results)
    clocks = engine.partitions.values()
    assert all(not clock.ranks.exact for clock in clocks)
    assert all(clock.columns.refit_rows == 30 and len(clock.columns) == 30 for clock in clocks)
    x, *_ = engine.population_summaries()
    assert len(x) == 30 * len(engine.partitions)
    summary = partition_summary(engine)
    assert sum(summary["clv_histogram"]["counts"]) == sum(len(clock.ranks) for clock in clocks) > 0
    tiers = {s.segments.get("value_tier") for s in store.data.values()}
    assert {"top", "low"} <= tiers


def test_a_restore_past_the_sample_limit_keeps_the_same_sample_and_scores_only_its_customers(tmp_path, monkeypatch) -> None:
    from streamer.core import engine as engine_mod

    config = ScoringConfig(value_rank_exact_limit=40, refit_sample_per_partition=30, value_tier_min_population=10)
    live, store = disk_engine(tmp_path / "live", config=config), DictStore()
    for record in bench_records(600):
        live.process(record, store)
    computed: list[str] = []
    compute = engine_mod.features_mod.compute
    monkeypatch.setattr(engine_mod.features_mod, "compute", lambda state, *a: computed.append(state.customer) or compute(state, *a))
    restored = disk_engine(tmp_path / "restored", config=config)
    assert restored.restore_partitions(live.partitions, store.data.values()) == len(store.data)
    for partition, clock in live.partitions.items():
        again = restored.partitions[partition].columns
        assert sorted(again.refit_customers()) == sorted(clock.columns.refit_customers())
        assert sorted(zip(*(c.tolist() for c in again.refit_columns()))) == sorted(zip(*(c.tolist() for c in clock.columns.refit_columns())))
    # Features were computed for the customers the sample took on the way, not for everyone.
    kept = {c for clock in live.partitions.values() for c in clock.columns.refit_customers()}
    assert kept <= set(computed) and len(computed) < len(store.data) * 0.7


@pytest.mark.parametrize("exact_limit", [None, 40])
def test_a_restore_ranks_its_values_a_chunk_at_a_time_with_the_same_ranking(tmp_path, monkeypatch, exact_limit) -> None:
    from streamer.core import engine as engine_mod

    config = ScoringConfig(value_rank_exact_limit=exact_limit or 100_000, value_tier_min_population=10)
    live, store = disk_engine(tmp_path / "live", config=config), DictStore()
    for record in bench_records(600):
        live.process(record, store)
    whole = disk_engine(tmp_path / "whole", config=config)
    whole.restore_partitions(live.partitions, store.data.values())
    monkeypatch.setattr(engine_mod._Restore, "CHUNK", 7)  # a handful of chunks per partition
    chunked = disk_engine(tmp_path / "chunked", config=config)
    chunked.restore_partitions(live.partitions, store.data.values())
    probes = sorted({s.value for s in store.data.values() if s.value is not None})
    for partition, clock in live.partitions.items():
        a, b = whole.partitions[partition].ranks, chunked.partitions[partition].ranks
        assert len(a) == len(b) == len(clock.ranks) > 7 and a.exact == b.exact == (exact_limit is None)
        assert [a.quantile(v) for v in probes] == [b.quantile(v) for v in probes] == [clock.ranks.quantile(v) for v in probes]

"""Memory per customer at scale: the partition index held in memory vs bounded.

    python -m bench.scale [--customers 300000] [--modes memory-index,bounded]   (make bench-scale)

The worker with ``STORE=rocksdb`` keeps its states on disk; what else grows with customers is
the partitions' index: due times, the value ranking, the refit rows. This replays the core
``Engine`` over N customers into a RocksDB state store of the worker's settings (states stored
as the worker stores them, 4 MiB write buffers, 16 MiB block cache), each mode in a fresh
process, and samples the process's resident memory (VmRSS) as customers are added:

- ``memory-index``: timers in memory, the exact ranking and a refit row for every customer
  (what every worker did before: ``VALUE_RANK_EXACT_LIMIT`` and ``REFIT_SAMPLE_PER_PARTITION``
  set beyond the customers);
- ``bounded``: timers in RocksDB (``STORE=rocksdb``'s), the ranking's sketch and the refit
  sample at their defaults.

Each customer's first order comes in event-time order over 60 days, a third of them order
again 20 days later and a third open an email, so timers are set, fire and move as in a shop.
It prints, per mode, VmRSS at each tenth of the customers, the least-squares slope over the
second half (bytes per customer added: the fixed costs and the warm-up left out) and events/s.
Not the worker (no Kafka, no Faust): the worker's own memory per customer is ``make bench``'s.

``--fill restore`` reaches the sizes a replay cannot here (the core replays this load at ~1,000
events/s, so 10M customers would take hours): it scores a few thousand template customers
with the same load, writes N states cloned from them (each under its own id and partition)
straight into the RocksDB store, then does what a worker assigned those partitions does —
``Engine.restore_partitions`` over every stored state, which builds the timers, the ranking and
the refit sample — and finally processes live events (repeat orders of existing customers
read off disk, and new customers) against the full store. VmRSS is sampled through all three
phases; the slope is taken over the second half of the restore.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01


def vm_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def events(customers: int, partitions: int = 8):
    """(partition, key, topic role, JSON, whether a new customer) in event-time order."""
    import heapq

    import orjson

    from streamer.core.outputs import rfc3339

    span = 60 * DAY
    pending: list[tuple[float, int, str, str]] = []  # later events: (time, customer, role, kind)
    for i in range(customers):
        t = T0 + span * i / customers
        while pending and pending[0][0] <= t:
            yield _event(*heapq.heappop(pending), partitions, orjson, rfc3339)
        yield _event(t, i, "orders", "order", partitions, orjson, rfc3339)
        if i % 3 == 0:
            heapq.heappush(pending, (t + 20 * DAY, i, "orders", "repeat"))
        elif i % 3 == 1:
            heapq.heappush(pending, (t + 2 * DAY, i, "email-events", "open"))
    while pending:
        yield _event(*heapq.heappop(pending), partitions, orjson, rfc3339)


def _event(t: float, i: int, role: str, kind: str, partitions: int, orjson, rfc3339):
    customer = f"cust-{i:08d}"
    if kind == "open":
        doc = {"type": "Email Opened", "data": {"email_id": f"m-{i}", "campaign_id": "welcome"}}
    else:
        total = 20.0 + (i * 7919 % 300)
        order_id = f"o-{i}-{kind}"
        doc = {"type": "Order Completed", "data": {
            "order_id": order_id, "total": total, "currency": "USD", "margin": total * 0.3,
            "products": [{"product_id": "p-1", "price": total, "quantity": 1, "tier": "basic"}]}}
    doc.update({"specversion": "1.0", "id": f"e-{i}-{kind}", "source": "/bench/scale", "time": rfc3339(t), "subject": customer,
                "datacontenttype": "application/json"})
    return i % partitions, customer.encode(), role, orjson.dumps(doc), kind == "order"


class RocksStore:
    """States in RocksDB as the worker's table holds them (stored bytes), opened with the
    options Faust opens the worker's databases with (its bloom filter, index and file sizes)
    at the worker's buffer and cache sizes; the bench's stand-in for the Faust table."""

    def __init__(self, path: Path) -> None:
        from faust.stores.rocksdb import RocksDBOptions
        from rocksdict import WriteOptions

        from streamer.settings import SETTINGS_DOC

        options = RocksDBOptions(
            write_buffer_size=int(SETTINGS_DOC["ROCKSDB_WRITE_BUFFER_BYTES"][0]),
            max_write_buffer_number=2,
            block_cache_size=int(SETTINGS_DOC["ROCKSDB_BLOCK_CACHE_BYTES"][0]),
        )
        self.db = options.open(path)
        # No write-ahead log: the worker's table has its changelog topic; here nothing replays.
        unlogged = WriteOptions()
        unlogged.disable_wal = True
        self.db.set_write_options(unlogged)
        self.erasures: dict[str, tuple[int, float]] = {}

    def get(self, customer: str):
        from streamer.core.state import CustomerState

        raw = self.db.get(customer.encode())
        return CustomerState.from_bytes(raw) if raw is not None else None

    def put(self, customer: str, state) -> None:
        self.db[customer.encode()] = state.to_bytes()

    def delete(self, customer: str, partition: int) -> None:
        del self.db[customer.encode()]

    def mark_erased(self, digest: str, partition: int, at: float) -> None:
        self.erasures[digest] = (partition, at)  # kept aside: the bench's load has no erasures


#: RocksDB's own account of its memory, per database (summed over the timers' databases).
ROCKSDB_MEMORY = ("rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-table-readers-mem", "rocksdb.block-cache-usage")


def rocksdb_memory(dbs: list, shared_cache: bool = False) -> dict[str, int]:
    """Summed over ``dbs``; with ``shared_cache`` (the timers' databases) every database reports
    the one cache's usage, so it is counted once."""
    memory = {name.split(".", 1)[1]: sum(db.property_int_value(name) or 0 for db in dbs) for name in ROCKSDB_MEMORY}
    if shared_cache and dbs:
        memory["block-cache-usage"] = max(db.property_int_value("rocksdb.block-cache-usage") or 0 for db in dbs)
    return memory


def mode_setup(mode: str, customers: int, folder: Path):
    """The scoring config and the disk-timers factory (None: in memory) of a mode."""
    from streamer.core.config import ScoringConfig
    from streamer.core.timers import DiskTimers

    if mode == "memory-index":
        return ScoringConfig(value_rank_exact_limit=customers + 1, refit_sample_per_partition=customers + 1), None
    if mode == "bounded":
        return ScoringConfig(), lambda partition: DiskTimers(folder / "timers" / f"p{partition}")
    raise ValueError(f"unknown mode {mode!r}")


def index_figures(engine, store: RocksStore) -> dict:
    """RocksDB's memory and the partitions' index (refit rows, ranking) after a run."""
    from streamer.core.timers import DiskTimers

    timer_dbs = [clock.timers._db for clock in engine.partitions.values() if isinstance(clock.timers, DiskTimers)]
    return {
        "in_engine": engine.customers,
        "rocksdb_states": rocksdb_memory([store.db]),
        "rocksdb_timers": rocksdb_memory(timer_dbs, shared_cache=True) if timer_dbs else None,
        "refit_rows": sum(clock.columns.refit_rows for clock in engine.partitions.values()),
        "ranks_exact": all(clock.ranks.exact for clock in engine.partitions.values()),
    }


def run_mode(mode: str, customers: int, folder: Path, partitions: int = 8) -> dict:
    """In this process: replay into a fresh store, return the samples and figures."""
    from streamer.core.engine import Engine, Record

    config, disk = mode_setup(mode, customers, folder)
    engine = Engine(config, wall_clock=lambda: T0 + 400 * DAY, disk_timers=disk)
    store = RocksStore(folder / "states")
    samples: list[tuple[int, int]] = []
    step = max(customers // 20, 1)
    seen = 0
    started = time.perf_counter()
    processed = 0
    rejected = 0
    for offset, (partition, key, role, value, new) in enumerate(events(customers, partitions)):
        rejected += engine.process(Record(role, role, partition, offset, key, value), store).rejected is not None
        processed += 1
        if new:
            seen += 1
            if seen % step == 0:
                samples.append((seen, vm_rss()))
    seconds = time.perf_counter() - started
    restore = measure_restore(store, engine, mode, folder, partitions)
    half = [(n, rss) for n, rss in samples if n >= customers / 2]
    return {
        "mode": mode,
        "customers": customers,
        "events": processed,
        "rejected": rejected,
        "events_per_s": processed / seconds,
        "samples": samples,
        "slope_bytes_per_customer": slope(half),
        "rss_end_bytes": samples[-1][1] if samples else None,
        "partitions": partitions,
        **index_figures(engine, store),
        **restore,
    }


def template_states(customers: int, partitions: int, config) -> tuple[list[dict], float]:
    """States of ``customers`` scored by the engine over the replay load, as plain documents,
    and the event time they were all brought up to (every timer before it has fired)."""
    import orjson

    from streamer.core.engine import DictStore, Engine, Record

    engine = Engine(config, wall_clock=lambda: T0 + 400 * DAY)
    store = DictStore()
    for offset, (partition, key, role, value, _new) in enumerate(events(customers, partitions)):
        engine.process(Record(role, role, partition, offset, key, value), store)
    end = max(clock.now for clock in engine.partitions.values()) + 1.0
    for partition in list(engine.partitions):
        engine.advance_clock(partition, end, store)
    return [orjson.loads(state.to_bytes("none")) for state in store.data.values()], end


def run_fill(mode: str, customers: int, folder: Path, partitions: int = 8, live: int = 20_000, templates: int = 2_000) -> dict:
    """In this process: N cloned states written to the store, restored, then live events."""
    import random

    import orjson

    from streamer.core.engine import Engine, Record
    from streamer.core.outputs import rfc3339
    from streamer.core.state import CustomerState

    config, disk = mode_setup(mode, customers, folder)
    docs, end = template_states(templates, partitions, config)
    store = RocksStore(folder / "states")
    step = max(customers // 20, 1)
    phases: dict[str, list[tuple[int, int]]] = {"write": [], "restore": [], "live": []}
    started = time.perf_counter()
    for i in range(customers):
        doc = docs[i % len(docs)]
        doc["customer"], doc["partition"] = f"cust-{i:08d}", i % partitions
        store.db[doc["customer"].encode()] = CustomerState(**doc).to_bytes()
        if (i + 1) % step == 0:
            phases["write"].append((i + 1, vm_rss()))
    write_seconds = time.perf_counter() - started
    docs.clear()

    engine = Engine(config, wall_clock=lambda: T0 + 400 * DAY, disk_timers=disk)

    def stored_states():
        for n, raw in enumerate(store.db.values(), 1):
            yield CustomerState.from_bytes(raw)
            if n % step == 0:
                phases["restore"].append((n, vm_rss()))

    started = time.perf_counter()
    restored = engine.restore_partitions(range(partitions), stored_states())
    restore_seconds = time.perf_counter() - started

    # Live: repeat orders of customers picked at random (read off disk), one new customer in
    # ten; event times a few milliseconds apart, so timers come due as they would.
    rng = random.Random(7)
    live_step = max(live // 10, 1)
    fired = rejected = 0
    started = time.perf_counter()
    for j in range(live):
        new = j % 10 == 9
        i = customers + j if new else rng.randrange(customers)
        partition, key, role, value, _ = _event(end + j * 0.005, i, "orders", "order" if new else f"live{j}", partitions, orjson, rfc3339)
        result = engine.process(Record(role, role, partition, j, key, value), store)
        fired += result.timers_fired
        rejected += result.rejected is not None
        if (j + 1) % live_step == 0:
            phases["live"].append((j + 1, vm_rss()))
    live_seconds = time.perf_counter() - started
    half = [(n, rss) for n, rss in phases["restore"] if n >= customers / 2]
    return {
        "mode": mode,
        "fill": "restore",
        "customers": customers,
        "partitions": partitions,
        "templates": templates,
        "write_seconds": write_seconds,
        "restored": restored,
        "restore_seconds": restore_seconds,
        "restore_states_per_s": restored / restore_seconds,
        "samples": phases["restore"],
        "write_samples": phases["write"],
        "live_samples": phases["live"],
        "slope_bytes_per_customer": slope(half),
        "live_events": live,
        "live_rejected": rejected,
        "live_timers_fired": fired,
        "live_events_per_s": live / live_seconds,
        **index_figures(engine, store),
    }


def measure_restore(store: RocksStore, engine, mode: str, folder: Path, partitions: int) -> dict:
    """What a worker does when it is assigned the partitions: every state read off the store
    once, and the partitions' clocks, timers and rankings rebuilt (``Engine.restore_partitions``,
    as ``rebuild_partitions`` calls it). Timed; readiness grows with it."""
    from streamer.core.engine import Engine
    from streamer.core.state import CustomerState
    from streamer.core.timers import DiskTimers

    disk = (lambda p: DiskTimers(folder / "restored-timers" / f"p{p}")) if mode == "bounded" else None
    fresh = Engine(engine.config, wall_clock=engine.wall_clock, disk_timers=disk)
    started = time.perf_counter()
    restored = fresh.restore_partitions(range(partitions), (CustomerState.from_bytes(raw) for raw in store.db.values()))
    seconds = time.perf_counter() - started
    for partition in list(fresh.partitions):
        fresh.forget_partition(partition)
    return {"restored": restored, "restore_seconds": seconds, "restore_states_per_s": restored / seconds}


def slope(points: list[tuple[int, int]]) -> float | None:
    """Least-squares slope of rss over customers."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=300_000, help="customers replayed (default 300,000)")
    p.add_argument("--modes", default="memory-index,bounded", help="comma-separated: memory-index, bounded")
    p.add_argument("--partitions", type=int, default=8, help="partitions the customers are spread over (default 8, the worker's)")
    p.add_argument("--fill", choices=("replay", "restore"), default="replay",
                   help="replay: every customer through the engine; restore: cloned states written, restored, then live events")
    p.add_argument("--live", type=int, default=20_000, help="with --fill restore: live events after the restore (default 20,000)")
    p.add_argument("--templates", type=int, default=2_000, help="with --fill restore: customers scored to clone states from (default 2,000)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def print_fill(result: dict) -> None:
    def marks(samples: list[tuple[int, int]]) -> str:
        return ", ".join(f"{n:,}: {rss / 2**20:.0f} MiB" for i, (n, rss) in enumerate(samples) if i % 2 == 1 or len(samples) <= 10)

    print(f"{result['mode']}: {result['customers']:,} states cloned from {result['templates']:,} scored customers, "
          f"written in {result['write_seconds']:.0f}s; VmRSS by states written: {marks(result['write_samples'])}")
    print(f"  restore: {result['restored']:,} states in {result['restore_seconds']:.1f}s, {result['restore_states_per_s']:,.0f} states/s; "
          f"VmRSS by states restored: {marks(result['samples'])}")
    slope_b = result["slope_bytes_per_customer"]
    print(f"  slope over the second half of the restore: {slope_b:,.1f} bytes per customer" if slope_b is not None else "  slope: too few samples")
    print(f"  live: {result['live_events']:,} events ({result['live_rejected']} rejected, {result['live_timers_fired']:,} timers fired), "
          f"{result['live_events_per_s']:,.0f} events/s; VmRSS by events: {marks(result['live_samples'])}")
    print(f"  in engine {result['in_engine']:,} customers, refit rows {result['refit_rows']:,}, ranking {'exact' if result['ranks_exact'] else 'sketch'}; "
          "RocksDB memory, states: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in result["rocksdb_states"].items())
          + ("; timers: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in result["rocksdb_timers"].items()) if result["rocksdb_timers"] else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        folder = Path(tempfile.mkdtemp(prefix="clv-scale-"))
        try:
            if args.fill == "restore":
                print(json.dumps(run_fill(args.child, args.customers, folder, args.partitions, args.live, args.templates)))
            else:
                print(json.dumps(run_mode(args.child, args.customers, folder, args.partitions)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return 0
    results = []
    for mode in args.modes.split(","):
        # A fresh process per mode: resident memory is the process's own.
        out = subprocess.run(
            [sys.executable, "-m", "bench.scale", "--customers", str(args.customers), "--partitions", str(args.partitions),
             "--fill", args.fill, "--live", str(args.live), "--templates", str(args.templates), "--child", mode],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True, text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        if args.fill == "restore":
            print_fill(result)
            continue
        marks = [s for i, s in enumerate(result["samples"]) if i % 2 == 1]
        print(f"{mode}: {result['events']:,} events ({result['rejected']} rejected) for {result['customers']:,} customers, {result['events_per_s']:,.0f} events/s")
        print("  VmRSS by customers: " + ", ".join(f"{n:,}: {rss / 2**20:.0f} MiB" for n, rss in marks))
        slope_b = result["slope_bytes_per_customer"]
        print(f"  slope over the second half: {slope_b:,.0f} bytes per customer" if slope_b is not None else "  slope: too few samples")
        print(f"  restore (a worker assigned these partitions): {result['restored']:,} states in {result['restore_seconds']:.1f}s,"
              f" {result['restore_states_per_s']:,.0f} states/s")
        print(f"  refit rows {result['refit_rows']:,}, ranking {'exact' if result['ranks_exact'] else 'sketch'}; RocksDB memory, states: "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in result["rocksdb_states"].items())
              + ("; timers: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in result["rocksdb_timers"].items()) if result["rocksdb_timers"] else ""))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

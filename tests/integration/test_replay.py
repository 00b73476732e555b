"""``streamer replay`` on the real broker: a generated CSV with bad rows goes in as a subprocess,
and exactly its valid rows come out of the orders topic, keyed by customer, valid, in event-time
order per partition; a worker scores each replayed order once, even when the file is replayed
twice (deterministic ids)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from streamer import contracts
from streamer.core.config import Limits
from streamer.core.events import decode
from streamer.replay import prepare
from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, partition_count, partition_of

pytestmark = pytest.mark.integration

START = datetime(2023, 1, 1, tzinfo=timezone.utc)

#: reason -> a row that must be skipped for it (header: order_id,customer_id,time,total).
BAD_ROWS = {
    "missing_customer": "ORD-B1,,2023-05-01T00:00:00Z,10",
    "bad_time": "ORD-B2,cust-001,2023-02-30T00:00:00Z,10",
    "total_out_of_range": "ORD-B3,cust-001,2023-05-01T00:00:00Z,-10",
    "bad_total": "ORD-B4,cust-001,2023-05-01T00:00:00Z,ten",
    "malformed_row": "ORD-B5,cust-001,2023-05-01T00:00:00Z",
    # ORD-0003 of the same customer again, later than every valid row: the earlier one is
    # kept, this one skipped (another customer's ORD-0003 would be an order of its own).
    "duplicate_order_id": "ORD-0003,{customer_of_0003},2024-06-01T00:00:00Z,10",
}


def write_history(path: Path, n: int, customers: int, bad: bool, seed: int = 5) -> list[dict[str, str]]:
    """A shuffled CSV of ``n`` valid orders (one without an order id) plus, if ``bad``, BAD_ROWS."""
    rng = random.Random(seed)
    valid = []
    for i in range(n):
        moment = START + timedelta(minutes=rng.randrange(365 * 24 * 60))
        valid.append({
            "order_id": "" if i == 7 else f"ORD-{i:04d}",
            "customer_id": f"cust-{rng.randrange(customers):03d}",
            "time": moment.isoformat().replace("+00:00", "Z"),
            "total": f"{rng.uniform(5, 300):.2f}",
        })
    bad_rows = [row.format(customer_of_0003=valid[3]["customer_id"]) for row in BAD_ROWS.values()]
    lines = [",".join(row.values()) for row in valid] + (bad_rows if bad else [])
    rng.shuffle(lines)
    path.write_text("order_id,customer_id,time,total\n" + "\n".join(lines) + "\n")
    return valid


def replay(path: Path, bootstrap: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "replay", str(path)],
        env={**os.environ, **env, "KAFKA_BOOTSTRAP": bootstrap},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


async def consume_all(bootstrap: str, topic: str, expected: int, quiet_s: float = 2.0, timeout_s: float = 30.0) -> list:
    """Every record of ``topic``: at least ``expected``, then until nothing new for ``quiet_s``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
                last_new = time.monotonic()
            if len(records) >= expected and time.monotonic() - last_new >= quiet_s:
                break
    finally:
        await consumer.stop()
    return records


async def test_replay_sends_exactly_the_valid_rows_in_event_time_order(broker: str, tmp_path: Path) -> None:
    partitions = 3
    env = worker_env(partitions=partitions)
    topic = env["TOPIC_ORDERS"]
    path = tmp_path / "history.csv"
    valid = write_history(path, n=60, customers=12, bad=True)

    done = replay(path, broker, env)

    # The summary: the counts, per reason, the customers and the time span.
    out = done.stdout
    assert f"rows read {60 + len(BAD_ROWS)} from {path} (csv)" in out
    assert f"sent 60 events to topic {topic}" in out
    skipped_line = next(line for line in out.splitlines() if line.startswith("skipped "))
    assert skipped_line.startswith(f"skipped {len(BAD_ROWS)} rows: ")
    assert dict(re.findall(r"([a-z_]+) (\d+)", skipped_line.split(": ", 1)[1])) == {reason: "1" for reason in BAD_ROWS}
    assert sum(line.startswith("  line ") for line in out.splitlines()) == 5  # the first few reasons
    times = sorted(row["time"] for row in valid)
    assert f"customers {len({row['customer_id'] for row in valid})}, event time {times[0]} .. {times[-1]}" in out
    assert "order ids derived from the row content for 1 rows" in out
    assert re.search(r"60 events in [0-9.]+ s: [0-9,]+ events/s", out)
    assert "replaying [" in done.stderr  # the progress bar

    # The topic: created with the worker's partition count; exactly the valid rows.
    assert await partition_count(broker, topic) == partitions
    records = await consume_all(broker, topic, expected=60)
    docs = [orjson.loads(r.value) for r in records]
    assert Counter((d["subject"], d["time"], d["data"]["total"]) for d in docs) == Counter(
        (row["customer_id"], row["time"], float(row["total"])) for row in valid
    )
    assert {d["data"]["order_id"] for d in docs if not d["data"]["order_id"].startswith("row-")} == {
        row["order_id"] for row in valid if row["order_id"]
    }
    limits = Limits()
    per_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for record, doc in zip(records, docs):
        assert record.key == doc["subject"].encode()
        assert record.partition == partition_of(doc["subject"], partitions)
        assert contracts.first_error(doc) is None
        decode(record.value, "orders", record.key, limits, time.time())  # what the worker does: no InvalidEvent
        per_partition[record.partition].append((record.offset, doc["time"]))
    for partition, seen in per_partition.items():
        in_offset_order = [t for _, t in sorted(seen)]
        assert in_offset_order == sorted(in_offset_order), f"partition {partition} is not in event-time order"
    assert len(per_partition) > 1


async def test_a_worker_scores_each_replayed_order_once_even_when_replayed_twice(broker: str, tmp_path: Path, make_worker) -> None:
    env = worker_env(partitions=2)
    path = tmp_path / "history.csv"
    write_history(path, n=30, customers=8, bad=False, seed=11)
    event_ids = {record.event["id"] for record in prepare(path).records}  # deterministic: the ids the subprocess sends
    assert len(event_ids) == 30

    replay(path, broker, env)
    worker = make_worker(env)
    scores_topic = worker.topics["customer-scores"]
    async with Kafka(broker, [scores_topic]) as kafka:

        def caused() -> Counter[str]:
            return Counter(o.doc["data"]["cause"].get("event_id") for o in kafka.outputs if o.topic == scores_topic)

        deadline = time.monotonic() + 60
        while not event_ids <= set(caused()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert event_ids <= set(caused()), f"{len(event_ids - set(caused()))} orders not scored:\n{worker.log_tail()}"

        again = await asyncio.to_thread(replay, path, broker, env)
        assert "sent 30 events" in again.stdout
        all_duplicates = 'clv_events_duplicate_total{topic="orders"} 30.0'
        deadline = time.monotonic() + 30
        while all_duplicates not in worker.metrics() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await kafka.settle(quiet_s=2.0)
        counts = caused()

    assert {event_id: counts[event_id] for event_id in event_ids} == {event_id: 1 for event_id in event_ids}
    metrics = worker.metrics()
    assert all_duplicates in metrics
    assert 'clv_events_consumed_total{topic="orders",type="Order Completed"} 60.0' in metrics

"""Two workers in one group: one stops mid-stream (SIGTERM, or SIGKILL), the other takes over its
partitions and their state from the changelog, then the stopped one rejoins. Every customer's
order count and revenue must come out exact: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict

import pytest

from tests.integration.conftest import Worker, worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent, partition_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

PARTITIONS = 4
CUSTOMERS = [f"rb-{n:03d}" for n in range(200)]
ROUND_EVERY_S = 1.5
#: one worker stops once this round is being scored; it restarts once the survivor scores the
#: second; after it is back, this many more rounds are published
STOP_AT_ROUND, REJOIN_AT_ROUND, ROUNDS_AFTER_REJOIN = 3, 7, 4


def total_of(customer_index: int, n: int) -> float:
    return float(5 + (7 * n + customer_index) % 50)


def order(customer_index: int, n: int) -> bytes:
    customer = CUSTOMERS[customer_index]
    total = total_of(customer_index, n)
    data = {
        "order_id": f"{customer}-o{n}",
        "total": total,
        "currency": "USD",
        "margin": total / 4,
        "products": [{"product_id": "p", "price": total, "quantity": 1, "tier": "basic"}],
    }
    day, minute = divmod(n * 2 * 1440 + customer_index, 1440)
    when = f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}T{minute // 60:02d}:{minute % 60:02d}:00Z"
    return cloudevent(f"{customer}-e{n}", "Order Completed", when, customer, data)


def consumed(worker: Worker) -> float:
    """Valid records this worker process consumed (from its /metrics)."""
    text = worker.metrics()
    return sum(float(v) for labels, v in re.findall(r'^clv_events_consumed_total\{([^}]*)\} (\S+)$', text, re.M) if 'type="invalid"' not in labels)


def partitions_seen(worker: Worker) -> set[int]:
    """Partitions whose event-time clock this worker process has moved."""
    return {int(p) for p in re.findall(r'^clv_partition_event_time_seconds\{partition="(\d+)"\}', worker.metrics(), re.M)}


@pytest.mark.parametrize("signal", ["SIGTERM", "SIGKILL"])
async def test_worker_leaves_and_rejoins_without_losing_or_doubling(make_worker, broker: str, signal: str) -> None:
    started = time.monotonic()
    env = worker_env(partitions=PARTITIONS)
    first = make_worker(env)
    second = make_worker(env)
    first.wait_ready(60)  # the second worker's join rebalanced the first
    topics = first.topics
    scores_topic = topics["customer-scores"]
    events: list[str] = []
    timeline: dict[str, float] = {"workers ready": time.monotonic() - started}

    async with Kafka(broker, [scores_topic]) as kafka:

        rounds = 0  # published so far
        last_round: int | None = None  # set once the second worker is back

        async def publish() -> None:
            nonlocal rounds
            while last_round is None or rounds <= last_round:
                n = rounds
                futures = [await kafka.producer.send(topics["orders"], key=c.encode(), value=order(i, n)) for i, c in enumerate(CUSTOMERS)]
                await asyncio.gather(*futures)
                events.extend(f"{c}-e{n}" for c in CUSTOMERS)
                rounds += 1
                await asyncio.sleep(ROUND_EVERY_S)

        def scored(n: int) -> int:
            return sum(1 for o in kafka.outputs if o.topic == scores_topic and o.doc["data"]["cause"].get("event_id", "").endswith(f"-e{n}"))

        publisher = asyncio.create_task(publish())
        # Mid-stream: as soon as round STOP_AT_ROUND is being processed.
        while scored(STOP_AT_ROUND) == 0:
            assert not publisher.done()
            await asyncio.sleep(0.05)
        second_before = consumed(second)
        second_partitions = partitions_seen(second)
        timeline["stop"] = time.monotonic() - started
        await asyncio.to_thread(second.stop, signal == "SIGKILL")
        # The survivor takes the partitions over (and their state, from the changelog): wait
        # until it has scored a whole later round, every customer's.
        deadline = time.monotonic() + 90
        while scored(REJOIN_AT_ROUND) < len(CUSTOMERS):
            assert time.monotonic() < deadline, f"round {REJOIN_AT_ROUND}: {scored(REJOIN_AT_ROUND)} of {len(CUSTOMERS)} scored by the survivor"
            await asyncio.sleep(0.1)
        first_partitions_alone = partitions_seen(first)
        timeline["rejoin"] = time.monotonic() - started
        await asyncio.to_thread(second.start, 90)
        timeline["rejoined"] = time.monotonic() - started
        rejoined_at_round = rounds
        last_round = rounds + ROUNDS_AFTER_REJOIN - 1
        await publisher
        total_rounds = rounds
        last_ids = {f"{c}-e{total_rounds - 1}" for c in CUSTOMERS}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = {o.doc["data"]["cause"].get("event_id") for o in kafka.outputs if o.topic == scores_topic}
            if last_ids <= seen:
                break
            await asyncio.sleep(0.2)
        await kafka.settle(quiet_s=2.0)
        second_after = consumed(second)
        outputs = [o for o in kafka.outputs if o.topic == scores_topic]

    # Every order's score update shows the customer's exact running order count and revenue.
    by_event: dict[str, list[dict]] = defaultdict(list)
    ids: dict[str, set[str]] = defaultdict(set)
    for o in outputs:
        event_id = o.doc["data"]["cause"].get("event_id")
        if event_id:
            by_event[event_id].append(o.doc["data"]["inputs"])
            ids[event_id].add(o.doc["id"])
    missing = [e for e in events if e not in by_event]
    assert len(events) == total_rounds * len(CUSTOMERS) and rejoined_at_round < total_rounds
    twice = {e: sorted({(o.doc["id"], o.doc["data"]["as_of"]) for o in outputs if o.doc["data"]["cause"].get("event_id") == e}) for e, v in ids.items() if len(v) > 1}
    assert not twice, f"re-published score updates with different ids (id, as_of): {dict(list(twice.items())[:3])}; timeline {timeline}"
    assert not missing, f"{len(missing)} orders never scored, e.g. {missing[:5]}"
    wrong = []
    for i, customer in enumerate(CUSTOMERS):
        for n in range(total_rounds):
            expected = (n + 1, round(sum(total_of(i, k) for k in range(n + 1)), 6))
            for inputs in by_event[f"{customer}-e{n}"]:
                if (inputs["orders"], round(inputs["revenue"], 6)) != expected:
                    wrong.append((customer, n, (inputs["orders"], inputs["revenue"]), expected))
    assert not wrong, f"{len(wrong)} score updates with a wrong count or revenue, e.g. {wrong[:5]}"
    final = {c: by_event[f"{c}-e{total_rounds - 1}"][-1] for c in CUSTOMERS}
    assert all(final[c]["orders"] == total_rounds for c in CUSTOMERS)

    # Both processed something: the second before it stopped and again after it rejoined; the
    # first held every partition while alone.
    assert second_before > 0 and second_partitions, "the second worker processed nothing before it stopped"
    assert second_after > 0, "the rejoined worker processed nothing"
    assert consumed(first) > 0
    assert first_partitions_alone == set(range(PARTITIONS)), first_partitions_alone
    assert first.process.poll() is None

    # A score update published twice (records re-read after a SIGKILL) is the same update:
    # same CloudEvents id, same content, so downstream de-duplication works.
    republished = Counter(len(v) for v in by_event.values())
    if signal == "SIGTERM":
        assert set(republished) == {1}, f"a graceful stop re-published score updates: {dict(republished)}"
    moved = {partition_of(c, PARTITIONS) for c in CUSTOMERS} & second_partitions
    print(
        f"\n{signal}: {len(events)} orders, score updates per order {dict(republished)}; second worker had partitions "
        f"{sorted(second_partitions)} ({second_before:.0f} records) before the stop, {second_after:.0f} after rejoining; "
        f"partitions moved {sorted(moved)}; timeline (s) { {k: round(v, 1) for k, v in timeline.items()} }, {total_rounds} rounds ({rejoined_at_round} published before it was back); "
        f"test {time.monotonic() - started:.0f}s"
    )

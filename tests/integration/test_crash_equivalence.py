"""A worker SIGKILLed mid-stream and restarted gives exactly what an uninterrupted run gives:
the same final state, and every score update, segment change and campaign trigger — some
published twice across the crash, always with the same id and content, none missing.

The reference is the pure core over the same records in the same per-partition order (one
input topic, so the order within a partition is the log's). Online learning is kept out
(no label comes due): the learners' weights are persisted periodically, not per event, which
the README states.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streamer.core.config import Limits, ScoringConfig
from streamer.core.engine import DictStore, Engine, Record
from streamer.simulator import ShopSimulator
from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka

pytestmark = pytest.mark.integration

START = datetime(2023, 1, 1, tzinfo=timezone.utc)
OUTPUT_ROLES = ("customer-scores", "segment-changes", "campaign-triggers")


def history() -> list[tuple[bytes, bytes]]:
    """Orders of 250 simulated customers over 400 days (only the orders topic)."""
    sim = ShopSimulator(250, START, seed=11)
    return [(key, value) for role, key, value in sim.raw_events(until=START + timedelta(days=400)) if role == "orders"]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_killed_worker_publishes_exactly_what_an_uninterrupted_run_does(make_worker, broker: str, tmp_path, store: str) -> None:
    env = worker_env(partitions=2, STORE=store, DATA_DIR=str(tmp_path / "data"), LEARN_HORIZON_DAYS="100000", VALUE_TIER_MIN_POPULATION="20")
    first = make_worker(env)
    topics = first.topics
    records = history()
    event_ids = [orjson.loads(value)["id"] for _, value in records]
    async with Kafka(broker, [topics[r] for r in OUTPUT_ROLES]) as kafka:
        sent = []
        for key, value in records:
            sent.append(await kafka.send(topics["orders"], "orders", key, value))
        # Kill it about a third of the way through, with no warning.
        third = set(event_ids[: len(event_ids) // 3])
        await kafka.wait_for(lambda o: o.doc["data"].get("cause", {}).get("event_id") in third and len(kafka.outputs) > 600, timeout_s=120)
        first.stop(kill=True)
        killed_at = len(kafka.outputs)

        second = make_worker(env)
        remaining = set(event_ids)

        def all_scored(_o) -> bool:
            for o in kafka.outputs[all_scored.seen :]:
                remaining.discard(o.doc["data"].get("cause", {}).get("event_id"))
            all_scored.seen = len(kafka.outputs)
            return not remaining

        all_scored.seen = 0
        try:
            await kafka.wait_for(all_scored, timeout_s=240)
        except TimeoutError:
            # Say what the restarted worker did, so a failure here can be told apart: not
            # consuming, consuming without publishing, or publishing what the test missed.
            counters = [line for line in second.metrics().splitlines() if line.startswith(("clv_events_", "clv_partition_event_time"))]
            raise AssertionError(
                f"{len(remaining)} of {len(event_ids)} orders never scored; {len(kafka.outputs) - killed_at} outputs since the kill;\n"
                + "\n".join(counters) + "\n" + second.log_tail(30)
            ) from None
        await kafka.settle(quiet_s=3.0)
        outputs = list(kafka.outputs)

    # The reference: the pure core over the same records, partition by partition.
    config = ScoringConfig(learn_horizon_days=100000, value_tier_min_population=20)
    engine, state = Engine(config, Limits()), DictStore()
    expected: dict[str, tuple[str, dict]] = {}
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for record in sent:
        by_partition[record.partition].append(record)
    for partition in sorted(by_partition):
        for record in by_partition[partition]:
            for out in engine.process(record, state).outgoing:
                doc = orjson.loads(out.value)
                expected[doc["id"]] = (topics[out.topic_role], doc)

    actual: dict[str, tuple[str, dict]] = {}
    republished = 0
    for o in outputs:
        if o.doc["id"] in actual:
            republished += 1
            assert actual[o.doc["id"]] == (o.topic, o.doc), "a re-published output must be identical"
        actual[o.doc["id"]] = (o.topic, o.doc)
    missing = expected.keys() - actual.keys()
    extra = actual.keys() - expected.keys()
    assert not missing, f"{len(missing)} outputs lost in the crash, e.g. {[expected[i] for i in list(missing)[:2]]}"
    assert not extra, f"{len(extra)} outputs an uninterrupted run does not give, e.g. {[actual[i] for i in list(extra)[:2]]}"
    assert actual == expected
    kinds = defaultdict(int)
    for topic, _doc in expected.values():
        kinds[topic] += 1
    assert all(kinds[topics[r]] > 0 for r in OUTPUT_ROLES), kinds  # the test covers all three
    print(f"{store}: {len(records)} orders, {len(expected)} outputs, killed after {killed_at}, re-published {republished}")

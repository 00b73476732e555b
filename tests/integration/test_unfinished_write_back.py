"""A write-back a kill cut short is not recovered: the next owner of the partition starts from
the last whole write-back, so the events of the unfinished one are processed again — scored,
not taken for duplicates, and not re-scored against a clock moved on by half of them.

The unfinished write-back is written here the way a worker killed mid-write leaves it: a
customer's next state in the changelog (as the core computes it from the state there and the
customer's next order), and no flush mark after it. The next owner writes the customer again
(as recovered) before its first mark, so a later reader, which a mark releases everything held
before it to, ends with the recovered state too.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.core.engine import DictStore, Engine, Record
from streamer.core.state import CustomerState
from streamer.shell.flush_marks import MARK_KEY
from streamer.shell.recovery import read_to_end
from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka
from tests.integration.test_restart import order_event

pytestmark = pytest.mark.integration


async def changelog_records(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of partition 0, read to its real end (the worker's own
    ``read_to_end``: the embedded broker under-reports high watermarks)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[tuple[int, bytes, bytes | None]] = []
        await read_to_end(consumer, lambda _tp, messages: records.extend((m.offset, m.key, m.value) for m in messages), deadline_s=30)
        return records
    finally:
        await consumer.stop()


def customer_orders(worker_url: str, customer: str) -> int:
    with urllib.request.urlopen(f"{worker_url}/customers/{customer}", timeout=5) as response:
        return orjson.loads(response.read())["inputs"]["orders"]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_a_write_back_cut_short_is_not_recovered(make_worker, broker: str, tmp_path, store: str) -> None:
    env = worker_env(partitions=1, STORE=store, DATA_DIR=str(tmp_path / "data"))
    first = make_worker(env)
    topics = first.topics
    changelog = f"{env['STREAMER_APP_ID']}-customer-state-changelog"
    customer = "half-written"
    scored = lambda n: lambda o: o.doc["data"]["cause"].get("event_id") == f"{customer}-e{n}"  # noqa: E731
    async with Kafka(broker, [topics["customer-scores"]]) as kafka:
        for n in range(2):
            await kafka.send(topics["orders"], "orders", customer.encode(), order_event(customer, n))
            await kafka.wait_for(scored(n), timeout_s=60)
        first.stop()  # SIGTERM: the last write-back is whole, with its mark

        records = await changelog_records(broker, changelog)
        assert records[-1][1] == MARK_KEY, "a write-back ends with its flush mark"
        last_state = CustomerState.from_bytes(next(v for _o, k, v in reversed(records) if k == customer.encode()))
        assert len(last_state.orders) == 2

        # What a worker killed while writing back the customer's third order leaves behind.
        engine, state = Engine(), DictStore()
        state.put(customer, last_state)
        engine.process(Record("orders", topics["orders"], 0, 99, customer.encode(), order_event(customer, 2)), state)
        assert len(state.get(customer).orders) == 3
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(changelog, state.get(customer).to_bytes(), key=customer.encode(), partition=0)
        finally:
            await producer.stop()

        leftover = (await changelog_records(broker, changelog))[-1][0]

        second = make_worker(env)
        assert customer_orders(second.url, customer) == 2  # the unfinished write-back is not in the state
        # Its first write-back writes the customer again, as recovered, and marks it: whoever
        # reads the changelog later takes the rewrite after the leftover.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = [(k, v) for o, k, v in await changelog_records(broker, changelog) if o > leftover]
            if any(k == MARK_KEY for k, _v in after):
                break
            await asyncio.sleep(0.5)
        rewrites = [v for k, v in after if k == customer.encode()]
        assert rewrites and after[-1][0] == MARK_KEY, after
        assert len(CustomerState.from_bytes(rewrites[-1]).orders) == 2
        # The third order (its offset was never committed) is processed, not taken for a duplicate.
        await kafka.send(topics["orders"], "orders", customer.encode(), order_event(customer, 2))
        third = await kafka.wait_for(scored(2), timeout_s=60)
        assert third.doc["data"]["inputs"]["orders"] == 3
        assert customer_orders(second.url, customer) == 3
    assert "dropped 1 changelog records of a write-back" in second.log_path.read_text()

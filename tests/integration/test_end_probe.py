"""Reading a log to its real end, on a busy machine too.

The embedded broker reports high watermarks that miss the last batch of each partition, so the
worker's recovery probes past them (``recovery.probe_end_offsets``): a probe that stopped short
would leave the newest write-back of a partition, and its flush mark, unread. It is checked
here from a standing start and with the event loop held up the way a loaded worker holds it
(timeouts then expire before the network is read).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from streamer.shell.recovery import probe_end_offsets, read_to_end

pytestmark = pytest.mark.integration

#: Records per partition, each sent (and acknowledged) on its own: one batch each.
RECORDS = {0: 7, 1: 4}


async def topic_with_batches(bootstrap: str) -> str:
    topic = f"end-probe-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, len(RECORDS), 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in RECORDS.items():
            for n in range(count):
                await producer.send_and_wait(topic, f"r{n}".encode(), key=b"k", partition=partition)
    finally:
        await producer.stop()
    return topic


class BusyLoop:
    """Holds the event loop for ``block_s`` every ``every_s``, as a loaded worker does (a
    long write-back, a full collection): timeouts then expire before the network is read."""

    def __init__(self, block_s: float = 0.45, every_s: float = 0.02) -> None:
        self.block_s, self.every_s = block_s, every_s
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            time.sleep(self.block_s)  # noqa: ASYNC251 - blocking is the point

    async def __aenter__(self) -> "BusyLoop":
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy-loop"])
async def test_probe_finds_the_last_batch_of_every_partition(broker: str, busy: bool) -> None:
    topic = await topic_with_batches(broker)
    # Start from nothing known: the probe must find every end, however far.
    reported = {TP(topic, p): 0 for p in RECORDS}
    if busy:
        async with BusyLoop():
            ends = await probe_end_offsets(broker, reported)
    else:
        ends = await probe_end_offsets(broker, reported)
    assert ends == {TP(topic, p): count for p, count in RECORDS.items()}


async def test_read_to_end_on_a_busy_loop_returns_every_record(broker: str) -> None:
    topic = await topic_with_batches(broker)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in RECORDS]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        offsets: dict[int, list[int]] = {p: [] for p in RECORDS}
        async with BusyLoop():
            await read_to_end(consumer, lambda tp, messages: offsets[tp.partition].extend(m.offset for m in messages), deadline_s=60)
    finally:
        await consumer.stop()
    assert offsets == {p: list(range(count)) for p, count in RECORDS.items()}

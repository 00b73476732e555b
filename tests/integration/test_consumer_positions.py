"""After a rebalance every input partition is back where processing must resume: its committed
offset, or its beginning when it has none.

Faust drops the records a fetch returns for a partition it paused while the fetch was out
(table recovery pauses the inputs), after the client has moved past them, and counts on the
seek to committed offsets that follows every rebalance to go back. aiokafka does not seek a
partition without a committed offset, so a worker that took over from one killed before its
first commit skipped those records for good (the crash-equivalence test caught it: one poll,
250 records, never scored). Here the worker's consumer runs that seek against the real broker
after its client has read past everything, the state the dropped records leave it in.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamer.shell.recovery import StreamerConsumer

pytestmark = pytest.mark.integration

RECORDS_PER_PARTITION = 6
COMMITTED_P1 = 4


class ClientThread:
    """Faust's consumer thread, reduced to the two calls the seek makes, on a real client."""

    def __init__(self, client: AIOKafkaConsumer) -> None:
        self.client = client

    async def seek_to_committed(self):  # noqa: ANN201 - Faust's signature
        return await self.client.seek_to_committed()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self.client.seek_to_beginning(*partitions)


async def test_seek_after_rebalance_goes_back_to_committed_or_beginning(broker: str) -> None:
    topic, group = f"positions-{uuid.uuid4().hex[:8]}", f"positions-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for partition in (0, 1):
            for n in range(RECORDS_PER_PARTITION):
                await producer.send_and_wait(topic, b"v%d" % n, partition=partition)
    finally:
        await producer.stop()

    client = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest")
    await client.start()
    try:
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        client.assign([p0, p1])
        await client.commit({p1: COMMITTED_P1})
        # Read past every record, as a poll whose records Faust then dropped leaves the client.
        for tp in (p0, p1):
            client.seek(tp, RECORDS_PER_PARTITION)
        assert [await client.position(tp) for tp in (p0, p1)] == [RECORDS_PER_PARTITION] * 2

        consumer = StreamerConsumer.__new__(StreamerConsumer)  # the seek needs only these two
        consumer._thread = ClientThread(client)
        consumer.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={f"{topic}-changelog"}))
        committed = await consumer.seek_to_committed()

        assert committed == {p0: None, p1: COMMITTED_P1}
        assert [await client.position(tp) for tp in (p0, p1)] == [0, COMMITTED_P1]
    finally:
        await client.stop()

"""Small aiokafka helpers for integration tests: publish, and collect what comes out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streamer.core.engine import Record
from streamer.core.state import DEFLATED_STATE, ZSTD_MAGIC, CustomerState

_partitioner = DefaultPartitioner()


def decode(value: bytes | None) -> dict | None:
    """A record's JSON; a stored customer state (the state changelog) as its dict; None for a
    tombstone (no value)."""
    if value is None:
        return None
    if value[:4] == ZSTD_MAGIC or value[:1] == DEFLATED_STATE:
        return CustomerState.from_bytes(value).to_dict()
    return orjson.loads(value)


def partition_of(key: str, partitions: int) -> int:
    """The partition the producer's default (murmur2) partitioner picks for ``key``."""
    every = list(range(partitions))
    return _partitioner(key.encode(), every, every)


def cloudevent(event_id: str, type_name: str, time_: str, customer: str, data: dict) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": event_id, "source": "/it", "type": type_name, "time": time_, "subject": customer, "data": data})


@dataclass
class Output:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    doc: dict | None


class Kafka:
    """Producer + a background consumer of the output topics (no consumer group)."""

    def __init__(self, bootstrap: str, output_topics: list[str], **client_options: object) -> None:
        self.bootstrap = bootstrap
        self.output_topics = output_topics
        self.client_options = client_options  # TLS / SASL, as KafkaSecurity.client_options() gives them
        self.outputs: list[Output] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Kafka":
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=4 * 1024 * 1024, **self.client_options)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            *self.output_topics, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest", **self.client_options
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def _collect(self) -> None:
        async for message in self.consumer:
            doc = decode(message.value)
            self.outputs.append(Output(message.topic, message.partition, message.offset, message.key, doc))

    async def send(self, topic: str, role: str, key: bytes | None, value: bytes) -> Record:
        metadata = await self.producer.send_and_wait(topic, value=value, key=key)
        return Record(role, topic, metadata.partition, metadata.offset, key, value, metadata.timestamp)

    async def wait_for(self, predicate: Callable[[Output], bool], timeout_s: float = 30.0) -> Output:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for output in self.outputs[seen:]:
                if predicate(output):
                    return output
            seen = len(self.outputs)
            await asyncio.sleep(0.02)
        raise TimeoutError("expected output did not arrive")

    async def settle(self, quiet_s: float = 2.0, timeout_s: float = 30.0) -> None:
        """Wait until no new output arrived for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        count, last_change = len(self.outputs), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if len(self.outputs) != count:
                count, last_change = len(self.outputs), time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                return


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """The broker's view of a topic's configuration."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (resource,) = response.resources
        return {entry[0]: entry[1] for entry in resource[4]}
    finally:
        await admin.close()


async def partition_count(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()

"""The worker's clients must not auto-create topics (streamer/shell/no_auto_create.py): after a
broker comes back empty, a topic created by the consumer's first metadata request gets the
broker's default partition count, which the worker cannot repair."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiokafka.client
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamer.shell.no_auto_create import forbid_auto_create
from tests.integration.kafka_helpers import partition_count

pytestmark = pytest.mark.integration


@pytest.fixture
def forbidden() -> Iterator[None]:
    """forbid_auto_create() for this test only (it patches the process's aiokafka client)."""
    original = aiokafka.client.MetadataRequest
    forbid_auto_create()
    yield
    aiokafka.client.MetadataRequest = original


async def touch(bootstrap: str, topic: str) -> None:
    """What the worker's clients do with their topics: a consumer subscribes, a producer sends."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.subscribe([topic])  # after start, as Faust's consumer does
        await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 3)
    except (TimeoutError, KafkaError):
        pass  # the topic is missing: the send waits for it, then gives up
    finally:
        await producer.stop()


async def test_clients_auto_create_topics_by_default(broker: str) -> None:
    """The control: without the patch the embedded broker creates the topic, with 4 partitions."""
    topic = f"auto-{uuid.uuid4().hex[:8]}"
    await touch(broker, topic)
    assert await partition_count(broker, topic) == 4


async def test_worker_clients_do_not_auto_create_topics(broker: str, forbidden: None) -> None:
    topic = f"noauto-{uuid.uuid4().hex[:8]}"
    await touch(broker, topic)
    assert await partition_count(broker, topic) == 0

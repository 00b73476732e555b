"""Topic creation against the real broker: aiokafka reports each topic's error code in the
response rather than raising, so the project reads them (streamer.topics.create_topics)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamer.topics import create_topics, refused_topics
from tests.integration.kafka_helpers import partition_count

pytestmark = pytest.mark.integration


async def test_creating_an_existing_topic_is_no_error_and_the_response_says_so(broker: str) -> None:
    name = f"created-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await create_topics(admin, [NewTopic(name, 3, 1)])
        again = await admin.create_topics([NewTopic(name, 3, 1)])  # no exception from aiokafka...
        assert [code for topic, code, *_ in again.topic_errors if topic == name] == [36]  # ...only the code
        assert refused_topics(again) is None
        await create_topics(admin, [NewTopic(name, 3, 1)])
    finally:
        await admin.close()
    assert await partition_count(broker, name) == 3

"""Fitted models kept in Kafka: a compacted topic, one small versioned record per key.

Only parameters and model state are written — never training data — so a worker that
restarts or takes over partitions scores with the same model version at once instead of
falling back to the prior until its next refit.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

POPULATION_KEY = b"population"

EMPTY_FETCHES_AT_END = 2
FETCH_TIMEOUT_MS = 200
READ_DEADLINE_S = 10.0


async def read_latest(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The latest value per key, read to the log's real end (not the reported high
    watermark, which the embedded broker under-reports)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        empty, deadline = 0, time.monotonic() + READ_DEADLINE_S
        while empty < EMPTY_FETCHES_AT_END and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            if not any(fetched.values()):
                empty += 1
                continue
            empty = 0
            for messages in fetched.values():
                for message in messages:
                    if message.key is None:
                        continue
                    if message.value is None:
                        latest.pop(message.key, None)
                    else:
                        latest[message.key] = message.value
    finally:
        await consumer.stop()
    return latest

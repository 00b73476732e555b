"""Fitted models kept in Kafka: a compacted topic, one small versioned record per key.

Only parameters and model state are written — never training data — so a worker that
restarts or takes over partitions scores with the same model version at once instead of
falling back to the prior until its next refit.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.shell.recovery import read_to_end

POPULATION_KEY = b"population"

READ_DEADLINE_S = 10.0


async def read_latest(bootstrap: str, topic: str, **client_options: Any) -> dict[bytes, bytes]:
    """The latest value per key, read to the log's real end (not the reported high
    watermark, which the embedded broker under-reports)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client_options)
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        def keep_latest(_tp: TopicPartition, messages: list[Any]) -> None:
            for message in messages:
                if message.key is None:
                    continue
                if message.value is None:
                    latest.pop(message.key, None)
                else:
                    latest[message.key] = message.value

        await read_to_end(consumer, keep_latest, READ_DEADLINE_S)
    finally:
        await consumer.stop()
    return latest

"""Create the service's topics with the right partitions and configs (aiokafka admin).

Input topics and the state table's changelog must have the same partition count
(co-partitioning): a customer's events and state then always meet on one partition.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streamer.settings import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}


def topic_specs(settings: Settings) -> list[NewTopic]:
    t = settings.topics
    rf = settings.replication_factor
    specs = [NewTopic(t[role], settings.partitions, rf) for role in settings.input_roles]
    specs.append(NewTopic(t["customer-scores"], settings.output_partitions, rf, topic_configs=COMPACTED))
    for role in ("segment-changes", "campaign-triggers", "dead-letter", "audit"):
        specs.append(NewTopic(t[role], settings.output_partitions, rf))
    # One partition: a handful of small, versioned model records, latest per key.
    specs.append(NewTopic(t["model-state"], 1, rf, topic_configs=COMPACTED))
    return specs


async def ensure_topics(settings: Settings, attempts: int | None = 30) -> list[str]:
    """Create missing topics; returns the names created. Retries while the broker is down
    (``attempts=None``: for as long as it takes)."""
    delay = 0.2
    attempt = 0
    while attempts is None or attempt < attempts:
        attempt += 1
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000, **settings.security.client_options())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    log.info("topics were created by another worker meanwhile")
                log.info("created topics: %s", ", ".join(s.name for s in missing))
            return [s.name for s in missing]
        except KafkaConnectionError as exc:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("broker not reachable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            await admin.close()
    return []

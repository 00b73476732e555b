"""Create the service's topics with the right partitions and configs (aiokafka admin).

Input topics and the state table's changelog must have the same partition count
(co-partitioning): a customer's events and state then always meet on one partition.
"""

from __future__ import annotations

import asyncio
import logging

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from streamer.errors import BrokerError
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


class TopicsNotCreated(BrokerError):
    """The broker refused to create some topics; ``retriable``: only for reasons that may pass
    (a controller moving, a timeout), not for a wrong setting (replication factor, access)."""

    def __init__(self, problems: dict[str, str], retriable: bool) -> None:
        super().__init__("the broker did not create topics: " + "; ".join(f"{name}: {why}" for name, why in problems.items()))
        self.problems, self.retriable = problems, retriable


def refused_topics(response: Any) -> TopicsNotCreated | None:
    """The topics a CreateTopics response refused, as an error (None: all created or there).

    aiokafka's ``create_topics`` does not raise for them: each topic has its own error code
    in the response (36, already exists, is no problem).
    """
    problems: dict[str, str] = {}
    retriable = True
    for name, code, *message in response.topic_errors:
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code)
        problems[name] = f"{error.__name__}" + (f" ({message[0]})" if message and message[0] else "")
        retriable = retriable and bool(getattr(error, "retriable", False))
    return TopicsNotCreated(problems, retriable) if problems else None


async def create_topics(admin: AIOKafkaAdminClient, specs: list[NewTopic]) -> None:
    """Create ``specs``; raises :class:`TopicsNotCreated` for any the broker refused."""
    try:
        response = await admin.create_topics(specs)
    except TopicAlreadyExistsError:
        return  # an older client raises for it; the partition checks tell whether they fit
    if (refused := refused_topics(response)) is not None:
        raise refused


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
                await create_topics(admin, missing)
                log.info("created topics: %s", ", ".join(s.name for s in missing))
            return [s.name for s in missing]
        except (KafkaConnectionError, TopicsNotCreated) as exc:
            if isinstance(exc, TopicsNotCreated) and not exc.retriable:
                raise  # a setting the broker refuses (REPLICATION_FACTOR, ACLs): retrying cannot help
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("broker not ready (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            await admin.close()
    return []

"""The worker's Kafka clients never auto-create topics.

aiokafka asks for ``allow_auto_topic_creation`` in every metadata request (like Java clients'
default ``allow.auto.create.topics=true``). A broker that came back without its data (the
embedded, memory-only one after a restart; a wiped cluster) then creates any input topic or
changelog the worker's consumer or producer touches first, with the broker's default partition
count (4 on the embedded broker), before the broker watch can recreate it with ``PARTITIONS``
— and a topic's partitions cannot shrink, so the worker stays unready until an operator acts.
Kafka Streams turns the option off for its clients for the same reason; so do we. The worker
creates its topics itself: ``ensure_topics`` at start, the broker watch after an outage.
"""

from __future__ import annotations

import aiokafka.client
from aiokafka.protocol.metadata import MetadataRequest


class NoAutoCreateMetadataRequest(MetadataRequest):
    """A metadata request that does not create the topics it names unless asked explicitly."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


def forbid_auto_create() -> None:
    """Make every aiokafka client of this process (Faust's consumer and producer included) ask
    for no auto-creation. aiokafka's client builds its metadata requests from the name it
    imported, so that name is replaced; requests built elsewhere are unaffected."""
    aiokafka.client.MetadataRequest = NoAutoCreateMetadataRequest  # type: ignore[misc]

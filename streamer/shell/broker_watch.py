"""Watch the broker from a running worker: is it reachable, and are the service's topics there
with the partitions the worker needs? ``/readyz`` includes both.

Faust alone does not notice a broker outage in its readiness: its consumer retries in the
background and the worker keeps reporting ready. And a broker that comes back without its
data (the embedded, memory-only one after a restart; a wiped cluster) has no topics: Faust
rejoins its group and carries on (it declares its changelog once per process), while other
clients (producers) may auto-create the topics they touch with the broker's default partition
count, so records on partitions beyond ``PARTITIONS`` are never consumed; the worker's own
clients do not (``no_auto_create``). The watch recreates missing topics (right partitions and
configs) as soon as the broker answers again, and keeps the
worker unready while an input topic or the changelog has a partition count other than the
table's — which it cannot repair (a topic's partitions cannot shrink): that needs an operator,
and on a real cluster ``auto.create.topics.enable=false`` prevents it.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient

from streamer.settings import Settings
from streamer.topics import TopicsNotCreated, create_topics, topic_specs

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 4.0
#: Probe interval while the broker answers, and while it does not (short: the topics should be
#: back before clients auto-create them).
INTERVAL_S, INTERVAL_DOWN_S = 5.0, 1.0


class BrokerWatch:
    """Probed by a worker task (agents.watch_broker); ``ok`` feeds readiness.

    ``co_partitioned`` are extra topics (the table's changelog) that must have exactly
    ``PARTITIONS`` partitions, created with ``extra_specs`` when missing.
    """

    def __init__(self, settings: Settings, extra_specs: list[NewTopic] | None = None) -> None:
        self.settings = settings
        self.specs = topic_specs(settings) + list(extra_specs or [])
        self.co_partitioned = [settings.topics[role] for role in settings.input_roles] + [s.name for s in extra_specs or []]
        # The worker starts only after it created its topics, so the broker was there.
        self.reachable = True
        self.problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.problem is None

    @property
    def interval(self) -> float:
        return INTERVAL_S if self.reachable else INTERVAL_DOWN_S

    async def _partitions(self) -> dict[str, int]:
        """Topic -> partition count, from one metadata request (which creates nothing)."""
        options = self.settings.security.client_options()
        client = AIOKafkaClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000), **options)
        try:
            await asyncio.wait_for(client.bootstrap(), PROBE_TIMEOUT_S)
            cluster = client.cluster
            return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}
        finally:
            await client.close()

    async def _create(self, specs: list[NewTopic]) -> None:
        """Raises TopicsNotCreated for topics the broker refused (one that exists is fine:
        the partition check below tells whether it is right)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=10_000, **self.settings.security.client_options())
        try:
            await admin.start()
            await create_topics(admin, specs)
        finally:
            await admin.close()

    async def probe(self) -> None:
        try:
            partitions = await self._partitions()
        except Exception as exc:  # noqa: BLE001 - any failure means: not reachable now
            if self.reachable:
                log.error("broker unreachable (%s): not ready until it answers", type(exc).__name__)
            self.reachable, self.problem = False, "broker unreachable"
            return
        if not self.reachable:
            log.info("broker reachable again")
        self.reachable = True
        missing = [spec for spec in self.specs if spec.name not in partitions]
        if missing:
            try:
                await self._create(missing)
                partitions = await self._partitions()
            except Exception as exc:  # noqa: BLE001 - the next probe tries again
                why = str(exc) if isinstance(exc, TopicsNotCreated) else type(exc).__name__
                self.problem = f"topics missing and not created: {why}"
                log.error("%s", self.problem)
                return
            if still := [spec.name for spec in missing if spec.name not in partitions]:
                # Every topic the worker writes to must be there: sends to a missing one fail.
                self.problem = f"topics missing after creating them: {', '.join(still)}"
                log.error("%s", self.problem)
                return
            log.warning("the broker had lost topics (restarted without its data?); recreated: %s", ", ".join(s.name for s in missing))
        wrong = {name: partitions.get(name, 0) for name in self.co_partitioned if partitions.get(name, 0) != self.settings.partitions}
        problem = f"not co-partitioned with the state table ({self.settings.partitions} partitions): {wrong}" if wrong else None
        if problem and problem != self.problem:
            log.error("%s; records or state on other partitions would be missed: recreate these topics", problem)
        self.problem = problem

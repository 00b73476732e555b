"""Table recovery that reads each changelog to its real end.

Faust recovers a table by reading its changelog up to the high watermark the broker reports.
The embedded broker (Tansu) reports high watermarks that miss the last batch of each
partition. Measured here: 30 changelog records over two partitions, reported end offsets 9 and
17 instead of 12 and 18. So recovery stopped short and a restarted worker lost the newest
state — and with RocksDB, whose persisted offset is then past the reported end, Faust refused
to start (ConsistencyError). We correct the high watermarks Faust's recovery asks for by
probing: read from the reported end until fetches come back empty. On Apache Kafka, whose
high watermarks are right, the probe finds nothing and costs one empty fetch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.exceptions import ProducerSendError
from faust.types import TP

log = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 200
PROBE_DEADLINE_S = 10.0


async def read_to_end(consumer: AIOKafkaConsumer, handle: Callable[[TopicPartition, list[Any]], None], deadline_s: float) -> None:
    """Fetch each assigned partition from the consumer's position to its end (whatever high
    watermark the broker reports), or until ``deadline_s`` passes; ``handle`` gets each
    partition's records.

    A partition is at its end when the broker answered a fetch at its current position with
    nothing: aiokafka stamps every answer for the position it asked at
    (``last_poll_timestamp``), and the records an answer brings are buffered by then, so a
    stamp taken before a ``getmany`` that returns nothing for the partition is an empty
    answer. (Counting empty polls, as before, depends on timing: on a loaded machine a poll
    could time out before an answer with data is read.) A wall clock set back only delays the
    end to the deadline.
    """
    deadline = time.monotonic() + deadline_s
    reading = set(consumer.assignment())
    # Per partition, the wall-clock ms (aiokafka's stamps are time.time()) an answer must come
    # after to be one for the current position.
    since = dict.fromkeys(reading, int(time.time() * 1000))
    while reading and time.monotonic() < deadline:
        answered = {tp: consumer.last_poll_timestamp(tp) for tp in reading}
        fetched = await consumer.getmany(*reading, timeout_ms=FETCH_TIMEOUT_MS)
        now_ms = int(time.time() * 1000)
        for tp, messages in fetched.items():
            if messages:
                handle(tp, messages)
                since[tp] = now_ms + 1
        for tp in list(reading):
            if not fetched.get(tp) and (answered[tp] or 0) >= since[tp]:
                reading.discard(tp)


async def probe_end_offsets(bootstrap: str, reported: Mapping[TP, int], **client_options: Any) -> dict[TP, int]:
    """The true end offset (last offset + 1) of each partition, starting from ``reported``."""
    ends = dict(reported)
    if not ends:
        return ends
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="latest", **client_options)
    await consumer.start()
    try:
        by_kafka_tp = {TopicPartition(tp.topic, tp.partition): tp for tp in ends}
        consumer.assign(list(by_kafka_tp))
        for kafka_tp, tp in by_kafka_tp.items():
            consumer.seek(kafka_tp, max(ends[tp], 0))
        def note_end(kafka_tp: TopicPartition, messages: list[Any]) -> None:
            tp = by_kafka_tp[kafka_tp]
            ends[tp] = max(ends[tp], messages[-1].offset + 1)

        # A partition another worker is still writing to (a standby) never runs dry: stop
        # at a deadline rather than hold up the rebalance.
        await read_to_end(consumer, note_end, PROBE_DEADLINE_S)
    finally:
        await consumer.stop()
    corrected = {tp: (reported[tp], end) for tp, end in ends.items() if end != reported[tp]}
    if corrected:
        log.info("corrected %d reported high watermarks (reported, real): %s", len(corrected), sorted(corrected.items()))
    return ends


class StreamerConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait from the settings.

    Faust fixes ``fetch_max_wait_ms`` at 1500. A broker that answers a waiting fetch only when
    the wait is over (the embedded one does) then holds every input record up to 1.5 s before
    the worker sees it; Apache Kafka answers as soon as data arrives, so a shorter wait only
    adds idle fetches there.
    """

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if fetch_max_wait_ms is not None:
            consumer._fetch_max_wait_ms = int(fetch_max_wait_ms)  # read when the consumer starts its fetcher
        return consumer


class EndProbingConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, with high watermarks checked by reading past them."""

    def _new_consumer_thread(self) -> StreamerConsumerThread:
        return StreamerConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        reported = await super().highwaters(*partitions)
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker)
        return await probe_end_offsets(bootstrap, reported, **getattr(self.app, "kafka_options", {}))


def never_committed(committed: Mapping[TP, int | None], is_changelog: Callable[[TP], bool]) -> list[TP]:
    """The input partitions of ``committed`` (what ``seek_to_committed`` found) that aiokafka
    did not seek: no committed offset, or 0 (it seeks only past 0).

    >>> never_committed({TP("orders", 0): None, TP("orders", 1): 40, TP("orders", 2): 0, TP("app-state-changelog", 0): None},
    ...                 lambda tp: tp.topic.endswith("-changelog"))
    [TP(topic='orders', partition=0), TP(topic='orders', partition=2)]
    """
    return [tp for tp, offset in committed.items() if not offset and not is_changelog(tp)]


class StreamerConsumer(EndProbingConsumer):
    """...that lets the app's ``before_commit`` hooks choose the offsets it commits, and puts
    partitions that have no committed offset back at their beginning after a rebalance.

    Faust commits the offsets acknowledged so far after flushing its producer. Here each hook
    (the state table's write-back, see ``tables.TableStore``) gets a ``choose`` callback and
    calls it where what it writes matches the records acknowledged: the write-back commits
    exactly the records whose states it writes.
    """

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust drops the records a fetch returns for a partition it paused meanwhile (table
        recovery pauses the inputs), after the client has moved past them, and counts on this
        seek, after every rebalance, to go back to them. aiokafka seeks only where an offset
        is committed, so a partition without one stayed past the dropped records: a worker
        that took over from one killed before its first commit skipped them for good (seen:
        the 250 records of one poll, never processed). ``earliest`` is what such a partition
        starts from anyway; being there again costs re-reading what was not committed."""
        committed = await super().seek_to_committed()
        fresh = never_committed(committed, self._is_changelog_tp)
        if fresh:
            await self._thread.seek_to_beginning(*fresh)
        return committed

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        # The offsets are chosen by the write-back, at the moment it takes the changed states
        # (under the lock the agents process and acknowledge each record under): the states it
        # writes are then exactly those of the records committed, no more. States ahead of the
        # committed offsets made a restarted worker re-process records against a partition
        # that already held later ones (value-tier ranks, the clock): outputs re-published
        # under the same id with other content, seen once in 16 loaded crash-test runs.
        generation = self.app.consumer_generation_id
        chosen: dict[TP, tuple[int, int]] = self.__dict__.setdefault("_chosen", {})

        def choose() -> None:
            # Every partition acknowledged by now, not only those Faust listed before the
            # write-back waited for the lock: a partition's first records may have come since.
            for tp, offset in self._filter_committable_offsets(list(self._acked)).items():
                kept = chosen.get(tp)
                chosen[tp] = (generation, max(offset, kept[1]) if kept and kept[0] == generation else offset)

        hooks = getattr(self.app, "before_commit", ())
        for hook in hooks:
            await hook(choose)
        if not hooks:
            choose()
        # Faust forgets the acknowledgements behind the offsets it hands out (and would not
        # commit past the gap they leave), so the offsets stay chosen until committed.
        # (Only this rebalance generation's: a partition may have moved meanwhile.)
        commit_offsets = {tp: offset for tp, (g, offset) in chosen.items() if g == generation}
        if not commit_offsets:
            chosen.clear()
            return False
        # The rest is Faust's own _commit_tps (faust-streaming 0.15), with the offsets chosen
        # above: publish attached messages, then flush and commit.
        try:
            await self._handle_attached(commit_offsets)
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        committed = await self._commit_offsets(commit_offsets, start_new_transaction=start_new_transaction)
        chosen.clear()
        return committed


class EndProbingTransport(aiokafka_driver.Transport):
    Consumer = StreamerConsumer


def transport_for(app: Any) -> EndProbingTransport:
    return EndProbingTransport(app.conf.broker_consumer, app)

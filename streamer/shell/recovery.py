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

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

log = logging.getLogger(__name__)

#: Consecutive empty fetches that mean "this is the end of the log".
EMPTY_FETCHES_AT_END = 2
FETCH_TIMEOUT_MS = 200
PROBE_DEADLINE_S = 10.0
#: How long a seek waits for the fetch loop to let go of the record it was handing to the
#: agents (that can include an offset commit); well under recovery's request timeout (90 s).
HANDOVER_WAIT_S = 30.0


async def read_to_end(consumer: AIOKafkaConsumer, handle: Callable[[TopicPartition, list[Any]], None], deadline_s: float) -> None:
    """Fetch from the consumer's positions until fetches come back empty (the log's real end,
    whatever high watermark the broker reports) or ``deadline_s`` passes; ``handle`` gets each
    partition's records."""
    empty = 0
    deadline = time.monotonic() + deadline_s
    while empty < EMPTY_FETCHES_AT_END and time.monotonic() < deadline:
        fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
        if not any(fetched.values()):
            empty += 1
            continue
        empty = 0
        for kafka_tp, messages in fetched.items():
            handle(kafka_tp, messages)


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

    def verify_event_path(self, now: float, tp: TP) -> None:
        # Faust's livelock check (every 2.5 commit intervals, outside rebalances) reads the
        # position of each assigned partition that has been fetched, and aiokafka asserts a
        # position is there. A partition waiting for an offset reset has none until the reset's
        # answer comes back: one never committed, put back at its beginning by a seek to the
        # committed offsets (``seek_to_committed``), which the fetch loop also runs on its own
        # when a fetch comes back to a stopped flow, so it can still be under way after
        # recovery's seek and "Worker ready". A check landing then crashed the consumer and
        # the worker with it (seen once in CI, 10 ms after "Worker ready"). Nothing is late on
        # such a partition: skip it this round. (One never fetched is left to Faust, which
        # does not read its position and logs when no fetch has gone out for too long.)
        state = self._fetch_state(tp)
        if state is not None and state.timestamp and not state.has_valid_position:
            log.info("livelock check skipped for %s: no position while its offset is being reset", tp)
            return None
        return super().verify_event_path(now, tp)

    def _fetch_state(self, tp: TP) -> Any:
        """aiokafka's state of ``tp`` in the current assignment, or None."""
        consumer = self._consumer
        if consumer is None:
            return None
        subscription = consumer._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return None
        return assignment.state_value(TopicPartition(tp.topic, tp.partition))


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
    """...that also runs the app's ``before_commit`` hooks before it commits offsets, puts
    partitions that have no committed offset back at their beginning after a rebalance, and
    hands no record to the agents while it seeks to the committed offsets.

    Faust commits the offsets acknowledged so far after flushing its producer. The hooks run
    between choosing those offsets and committing them, so everything they write (the state
    table's write-back, see ``tables.TableStore``) covers at least the records committed.
    """

    _handover_idle: asyncio.Event | None = None

    @property
    def handover_idle(self) -> asyncio.Event:
        """Set unless a record fetched by ``getmany`` is being handed to the agents."""
        if self._handover_idle is None:
            self._handover_idle = asyncio.Event()
            self._handover_idle.set()
        return self._handover_idle

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # Faust's fetch loop hands a record over while this generator waits at its yield, and
        # records the record's offset as read after the handover: so "not at the yield" means
        # that record's read offset is written.
        idle = self.handover_idle
        async for tp, message in super().getmany(timeout):
            idle.clear()
            try:
                yield tp, message
            finally:
                idle.set()

    async def perform_seek(self) -> None:
        """Seek the inputs to their committed offsets with the flow stopped; the caller (table
        recovery, after every rebalance) resumes it.

        Faust's recovery seeks, then resumes flow control, which empties the agents' input
        queues, then resumes the flow. Its fetch loop, left running since the changelogs were
        read, handed records over in between: a record fetched right after the seek went into
        an agent's queue, was emptied out by the resume, and its offset was recorded as read,
        so the fetch loop dropped it when it came again (seen under load: the first order after
        the committed offset of a restarted worker's partition, never scored). With the flow
        stopped the fetch loop takes nothing more from the client and breaks off its batch (a
        fetch already under way comes back to a stopped flow: Faust discards it and seeks
        again), so the queues hold only records from before the seek, which come again.
        Stopping the flow also cancels the handover under way; the seek waits until the fetch
        loop has let go of that record, whose read offset would otherwise overwrite the
        committed one. Standby changelog partitions go back to the last record their table
        took (``_seek_standbys_back``).

        If the seek fails, the flow is left as it was, as Faust's own seek leaves it; if it is
        cancelled (another rebalance began), the next recovery resumes it."""
        was_active = self.flow_active
        self.stop_flow()
        try:
            try:
                await asyncio.wait_for(self.handover_idle.wait(), HANDOVER_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("seeking to committed offsets while a record is still being handed over (waited %.0f s)", HANDOVER_WAIT_S)
            await super().perform_seek()
            await self._seek_standbys_back()
        except Exception:
            if was_active:
                self.resume_flow()
            raise

    async def _seek_standbys_back(self) -> None:
        """Stopping the flow breaks off the batch being handed over, standby changelog records
        included, after the client has moved past them; inputs go back to their committed
        offsets, standby partitions go back here to the last record their table took (where
        recovery starts them; the table skips what it has seen), so those records come again.
        """
        recovery = self.app.tables.recovery
        assigned = self.assignment()
        # None: a rebalance has just added the partition; its recovery will seek it.
        taken = {tp: recovery.standby_offsets.get(tp) for tp in recovery.standby_tps if tp in assigned}
        offsets = {tp: max(offset, 0) for tp, offset in taken.items() if offset is not None}
        if offsets:
            await self.seek_wait(offsets)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust drops the records a fetch returns for a partition it paused meanwhile (table
        recovery pauses the inputs), after the client has moved past them, and counts on this
        seek, after every rebalance, to go back to them. aiokafka seeks only where an offset
        is committed, so a partition without one stayed past the dropped records: a worker
        that took over from one killed before its first commit skipped them for good (seen:
        the 250 records of one poll, never processed). ``earliest`` is what such a partition
        starts from anyway; being there again costs re-reading what was not committed."""
        committed = await super().seek_to_committed()
        # The group's offsets at this assignment: the lag metric's base until this worker
        # commits (Faust's monitor forgets every committed offset at a rebalance).
        self.assigned_committed = dict(committed)
        fresh = never_committed(committed, self._is_changelog_tp)
        if fresh:
            await self._thread.seek_to_beginning(*fresh)
        return committed

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        commit_offsets = self._filter_committable_offsets(tps)
        for hook in getattr(self.app, "before_commit", ()):
            await hook()
        if not commit_offsets:
            return False
        # The rest is Faust's own _commit_tps (faust-streaming 0.15), with the offsets chosen
        # above: publish attached messages, then flush and commit.
        try:
            await self._handle_attached(commit_offsets)
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        return await self._commit_offsets(commit_offsets, start_new_transaction=start_new_transaction)


class EndProbingTransport(aiokafka_driver.Transport):
    Consumer = StreamerConsumer


def transport_for(app: Any) -> EndProbingTransport:
    return EndProbingTransport(app.conf.broker_consumer, app)

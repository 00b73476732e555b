"""The seek to committed offsets after a rebalance loses no record.

Faust's table recovery ends with: seek the inputs to their committed offsets, resume flow
control (which empties the agents' input queues), resume the flow. Its fetch loop keeps
running meanwhile. These tests run Faust's own fetch loop (``Consumer._drain_messages``) on
our consumer, with the broker client replaced by a log that behaves like aiokafka's (a seek
discards what was fetched and fetches again from the new position), and play that recovery
sequence with the agents slower than the fetch loop, as they are under load. Seen before the
fix, on a worker restarted after SIGKILL: the first order after a partition's committed
offset, never scored.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from streamer.shell import recovery

TOPIC = "orders"
TP0 = TP(TOPIC, 0)
COMMITTED = 6
END = 10  # records 6..9 are after the committed offset
CHANGELOG = "app-customer-state-changelog"
STANDBY = TP(CHANGELOG, 0)  # a changelog partition this worker keeps a standby copy of
STANDBY_END = 6


def record(offset: int, tp: TP = TP0) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v%d" % offset, None, 1, 2, ())


class PartitionLog:
    """The broker client's side of one input partition (and a standby changelog partition): a
    seek discards the fetched records and makes the next fetch start again at the committed
    offset (at the offset sought, for the standby)."""

    def __init__(self, consumer: recovery.StreamerConsumer) -> None:
        self.consumer = consumer
        self.fetched: list[ConsumerRecord] = []
        self.seeks = 0
        self.hold: asyncio.Event | None = None  # when set up, a fetch that took records waits for it
        self.in_flight = asyncio.Event()
        self.seek_error: Exception | None = None
        self.standby: list[ConsumerRecord] = []
        self.standby_seeks: list[dict[TP, int]] = []

    def arrive(self, first: int) -> None:
        self.fetched = [record(offset) for offset in range(first, END)]

    def arrive_standby(self, first: int) -> None:
        self.standby = [record(offset, STANDBY) for offset in range(first, STANDBY_END)]

    def assignment(self) -> set[TP]:
        return {TP0, STANDBY}

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.standby_seeks.append(dict(partitions))
        self.arrive_standby(partitions[STANDBY])
        self.consumer._read_offset[STANDBY] = partitions[STANDBY]  # as Faust's _seek_wait does

    async def seek_to_committed(self) -> dict[TP, int]:
        self.seeks += 1
        if self.seek_error is not None:
            raise self.seek_error
        self.arrive(COMMITTED)
        return {TP0: COMMITTED}

    def highwater(self, tp: TP) -> int:
        return END

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> dict[TP, list[ConsumerRecord]]:
        # aiokafka's fetch returns nothing while the flow is stopped (Faust's _fetch_records)
        batch: dict[TP, list[ConsumerRecord]] = {}
        if self.consumer.flow_active:
            if self.fetched and (not active_partitions or TP0 in active_partitions):
                batch[TP0], self.fetched = self.fetched, []
            if self.standby and (not active_partitions or STANDBY in active_partitions):
                batch[STANDBY], self.standby = self.standby, []
        if batch:
            if self.hold is not None:
                self.in_flight.set()
                await self.hold.wait()
            return batch
        await asyncio.sleep(0.005)
        return {}


class Harness:
    """Our consumer with Faust's fetch loop running; what it hands over goes, as Faust's
    conductor does, into a flow-controlled queue cleared when flow control resumes; the agent
    takes from that queue only once ``start_agent`` is called."""

    def __init__(self) -> None:
        self.app = faust.App("seek-handover-test", broker="kafka://127.0.0.1:1", store="memory://")
        transport = recovery.EndProbingTransport(self.app.conf.broker_consumer, self.app)
        self.consumer = transport.create_consumer(callback=self.deliver, on_partitions_revoked=None, on_partitions_assigned=None)
        self.log = PartitionLog(self.consumer)
        self.consumer._thread = self.log  # the seek's client calls
        self.consumer._getmany = self.log.getmany  # the fetch
        self.consumer.app = SimpleNamespace(
            tables=SimpleNamespace(changelog_topics={CHANGELOG}, recovery=SimpleNamespace(standby_tps=set(), standby_offsets=Counter())),
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
            consumer_generation_id=1,
            client_only=False,
        )
        self.queue: FlowControlQueue = FlowControlQueue(flow_control=self.app.flow_control, clear_on_resume=True)
        self.processed: list[int] = []
        self.standby_taken: list[int] = []
        self.gate: asyncio.Event | None = None  # when set up, deliveries wait for it
        self.delivering = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def deliver(self, message: Any) -> None:
        self.delivering.set()
        if self.gate is not None:
            await self.gate.wait()
        await self.app.flow_control.acquire()
        self.queue.put_nowait(message)

    async def agent(self) -> None:
        while True:
            message = await self.queue.get()
            (self.standby_taken if message.topic == CHANGELOG else self.processed).append(message.offset)

    def start_fetch_loop(self, partitions: frozenset[TP] = frozenset({TP0})) -> None:
        # Recovery has read the changelogs: the inputs are active and the flow is running.
        self.consumer._set_active_tps(set(partitions))
        self.consumer.resume_flow()
        self.app.flow_control.resume()
        self.tasks.append(asyncio.create_task(self.consumer._drain_messages(self.fetcher)))

    def start_agent(self) -> None:
        self.tasks.append(asyncio.create_task(self.agent()))

    async def recovery_tail(self, loop_turns: int = 50) -> None:
        """Faust's Recovery.on_recovery_completed from the seek on; the loop turns stand for
        its own awaits, widened as under load."""
        await self.consumer.perform_seek()
        for _ in range(loop_turns):
            await asyncio.sleep(0)
        self.app.flow_control.resume()
        self.consumer.resume_flow()

    async def processed_through(self, last: int, taken: list[int] | None = None, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) until offset ``last`` is in ``taken`` (the inputs the
        agent processed, unless given)."""
        offsets = self.processed if taken is None else taken

        async def wait() -> None:
            while last not in offsets:
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        self.fetcher._stopped.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def harness() -> Any:
    h = Harness()
    yield h
    await h.close()


async def test_records_fetched_right_after_the_seek_are_not_emptied_out_of_the_queues(harness: Harness) -> None:
    harness.start_fetch_loop()
    await harness.recovery_tail()
    harness.start_agent()
    await harness.processed_through(END - 1)
    # Before the fix the fetch loop handed 6..9 to the queue between the seek and the resume
    # of flow control, which emptied the queue; their offsets counted as read: none processed.
    assert sorted(set(harness.processed)) == list(range(COMMITTED, END))


async def test_a_record_being_handed_over_when_the_seek_starts_does_not_move_the_read_offset_past_the_committed_one(
    harness: Harness,
) -> None:
    harness.gate = asyncio.Event()
    harness.log.arrive(COMMITTED + 2)  # fetched before the rebalance: 8 and 9
    harness.start_fetch_loop()
    await asyncio.wait_for(harness.delivering.wait(), 5)  # record 8 is being handed over
    await harness.recovery_tail()
    harness.gate.set()
    harness.start_agent()
    await harness.processed_through(END - 1)
    # Before the fix the handover of 8 ended after the seek and set the read offset to 8, so
    # the fetch loop dropped 6 and 7 when they came again.
    assert sorted(set(harness.processed)) == list(range(COMMITTED, END))
    assert harness.consumer._read_offset[TP0] == END - 1


async def test_the_flow_stays_stopped_from_the_seek_until_recovery_resumes_it(harness: Harness) -> None:
    harness.start_fetch_loop()
    await harness.consumer.perform_seek()
    assert not harness.consumer.flow_active
    for _ in range(50):
        await asyncio.sleep(0)
    assert harness.queue.qsize() == 0 and harness.log.fetched  # nothing taken from the client
    harness.app.flow_control.resume()
    harness.consumer.resume_flow()
    harness.start_agent()
    await harness.processed_through(END - 1)
    assert harness.processed == list(range(COMMITTED, END))


async def test_a_fetch_under_way_when_the_flow_stops_is_fetched_again_after_the_seek(harness: Harness) -> None:
    hold = harness.log.hold = asyncio.Event()
    harness.log.arrive(COMMITTED + 2)  # fetched before the rebalance: 8 and 9
    harness.start_fetch_loop()
    await asyncio.wait_for(harness.log.in_flight.wait(), 5)
    harness.log.hold = None  # later fetches answer at once
    tail = asyncio.create_task(harness.recovery_tail())
    while harness.consumer.flow_active:
        await asyncio.sleep(0)
    hold.set()  # the fetch comes back (8, 9) to a stopped flow: Faust discards it and seeks again
    await tail
    harness.start_agent()
    await harness.processed_through(END - 1)
    assert harness.processed == list(range(COMMITTED, END))
    assert harness.log.seeks == 2


async def test_a_failed_seek_leaves_the_flow_running_as_it_found_it(harness: Harness) -> None:
    harness.start_fetch_loop()
    harness.log.seek_error = RuntimeError("broker gone")
    with pytest.raises(RuntimeError):
        await harness.consumer.perform_seek()
    assert harness.consumer.flow_active


async def test_standby_records_broken_off_by_the_seek_come_again(harness: Harness) -> None:
    recovery_state = harness.consumer.app.tables.recovery
    recovery_state.standby_tps.add(STANDBY)
    recovery_state.standby_offsets[STANDBY] = 2  # the standby table has taken 0..2
    harness.gate = asyncio.Event()
    harness.log.arrive_standby(3)  # 3, 4, 5 fetched for the standby
    harness.start_fetch_loop(frozenset({TP0, STANDBY}))
    await asyncio.wait_for(harness.delivering.wait(), 5)  # 3 is being handed over
    await harness.recovery_tail()  # stopping the flow cancels 3 and breaks off 4 and 5
    harness.gate.set()
    harness.start_agent()
    await harness.processed_through(END - 1)
    await harness.processed_through(STANDBY_END - 1, harness.standby_taken)
    # Faust's table manager skips what it has seen (2 again); 3, 4 and 5 reach it.
    assert {3, 4, 5} <= set(harness.standby_taken)
    assert harness.log.standby_seeks == [{STANDBY: 2}]
    assert harness.processed == list(range(COMMITTED, END))


async def test_a_standby_partition_a_rebalance_has_just_added_is_left_to_its_recovery(harness: Harness) -> None:
    recovery_state = harness.consumer.app.tables.recovery
    recovery_state.standby_tps.add(STANDBY)
    recovery_state.standby_offsets[STANDBY] = None  # Faust's value until recovery builds it
    harness.start_fetch_loop()
    await harness.consumer.perform_seek()
    assert harness.log.standby_seeks == [] and harness.log.seeks == 1

"""Reads the worker's customer-scores topic: counts the score updates caused by events (the
embedded broker under-reports high watermarks, so progress is never read from end offsets),
and, for the latency phase, matches each score's ``cause.event_id`` to when that event was sent."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.progress import say

#: How an event-caused score starts its cause (outputs.customer_scored, orjson, key order kept);
#: a timer's score has {"timer": ...} there instead. Saves parsing every score while counting.
EVENT_CAUSE = b'"cause":{"event_id"'
#: Records a consumer restart must bring to count as having helped.
TRICKLE = 100


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class ScoreWatcher:
    """A background consumer of the scores topic (no group, from the earliest offset).

    On the embedded broker a consumer that is kept at the tail of a busy topic for minutes has
    been seen to stop receiving records (one partition after another) while the records were
    there for a new consumer. ``wait_for`` therefore restarts the consumer at the next
    offset of every partition when nothing arrives for a while, and counts the restarts."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer = self._new_consumer()
        self.next_offsets: dict[TopicPartition, int] = {}
        self.restarts = 0
        self.records = 0
        self.event_scores = 0
        self.timer_scores = 0
        #: Record timestamps (epoch ms, set by the worker's producer) of the earliest and latest
        #: event scores: when the worker published them, whenever this consumer got them.
        self.first_ts_ms: int | None = None
        self.last_ts_ms: int | None = None
        #: event id -> (epoch s, record timestamp ms) of its send; scores of these are timed.
        self.sent: dict[str, tuple[float, int]] = {}
        #: (sent at, sent -> this consumer saw the score, input record timestamp -> score
        #: record timestamp), seconds, in arrival order.
        self.timings: list[tuple[float, float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def start(self) -> ScoreWatcher:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic)
        for _ in range(100):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await self.consumer.topics()  # refreshes metadata
            partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        for tp in tps:
            if tp in self.next_offsets:
                self.consumer.seek(tp, self.next_offsets[tp])
        self._task = asyncio.create_task(self._run())
        return self

    async def restart(self) -> None:
        """A new consumer, at the next offset of every partition."""
        await self.stop()
        self.restarts += 1
        self.consumer = self._new_consumer()
        await self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            say(f"scores consumer failed: {type(exc).__name__}: {exc}")
            raise

    async def _consume(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=10_000)
            seen_epoch = time.time()
            for tp, messages in batches.items():
                if messages:
                    self.next_offsets[tp] = messages[-1].offset + 1
                    self.records += len(messages)
                for message in messages:
                    if message.value is None:  # a tombstone (erasure), not a score
                        continue
                    if EVENT_CAUSE not in message.value:
                        self.timer_scores += 1
                        continue
                    self.event_scores += 1
                    ts = message.timestamp
                    if self.first_ts_ms is None or ts < self.first_ts_ms:
                        self.first_ts_ms = ts
                    if self.last_ts_ms is None or ts > self.last_ts_ms:
                        self.last_ts_ms = ts
                    if self.sent:
                        self._time(message, seen_epoch)

    def _time(self, message: object, seen_epoch: float) -> None:
        cause = orjson.loads(message.value)["data"]["cause"]  # type: ignore[attr-defined]
        sent = self.sent.pop(cause.get("event_id"), None)
        if sent is not None:
            self.timings.append((sent[0], seen_epoch - sent[0], (message.timestamp - sent[1]) / 1000.0))  # type: ignore[attr-defined]

    async def wait_for(
        self,
        target: int,
        alive: object,
        quiet_s: float,
        label: str,
        report_every_s: float = 10.0,
        restart_after_s: float = 10.0,
        max_restarts: int = 2,
    ) -> bool:
        """Wait until ``target`` event scores were seen; False if none arrived for ``quiet_s``.
        After ``restart_after_s`` without any record (scores or not) the consumer is restarted;
        after ``max_restarts`` restarts that each brought at most a trickle, False too.
        ``alive()`` raises if the worker died."""
        last_count, last_change, last_report = self.event_scores, time.monotonic(), time.monotonic()
        last_records, last_record_at = self.records, time.monotonic()
        restarts, records_at_restart = 0, self.records
        while self.event_scores < target:
            await asyncio.sleep(0.05)
            alive()  # type: ignore[operator]
            if self._task is not None and self._task.done():
                self._task.result()  # raises what stopped the consumer
                raise RuntimeError("scores consumer stopped")
            now = time.monotonic()
            if self.records != last_records:
                last_records, last_record_at = self.records, now
            elif now - last_record_at > restart_after_s:
                if self.records - records_at_restart > TRICKLE:
                    restarts = 0  # the last restart helped
                if restarts >= max_restarts:
                    say(
                        f"{label}: {restarts} consumer restarts brought nothing more at {self.event_scores:,}/{target:,}; giving up on the scores topic"
                    )
                    return False
                say(
                    f"{label}: no record for {restart_after_s:.0f}s at {self.event_scores:,}/{target:,}; restarting the scores consumer at its offsets"
                )
                await self.restart()
                restarts, records_at_restart = restarts + 1, self.records
                last_record_at = time.monotonic()
            if self.event_scores != last_count:
                last_count, last_change = self.event_scores, now
            elif now - last_change > quiet_s:
                say(f"{label}: no new score for {quiet_s:.0f}s at {self.event_scores:,}/{target:,}; giving up")
                return False
            if now - last_report >= report_every_s:
                last_report = now
                say(f"{label}: {self.event_scores:,}/{target:,} event scores seen")
        return True

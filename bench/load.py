"""The workload: the shop simulator's mix of order, email and community events, pre-generated
once as Kafka records ``(role, key, value)`` and reused by every phase and repeat; and the two
ways of publishing them (as fast as possible, and paced at a fixed rate)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson
from aiokafka import AIOKafkaProducer

from bench.progress import say
from streamer.core.outputs import rfc3339
from streamer.simulator import ShopSimulator

Rec = tuple[str, bytes, bytes]  # (topic role, key = customer id, value = CloudEvent JSON)

#: Simulated days after the main load that the latency phase's continuation events may come
#: from (they are sent stamped with the moment of sending, see ``publish_paced``).
LATENCY_RESERVE_DAYS = 120


@dataclass
class Workload:
    """``main``: every event of ``customers`` customers over ``days`` of simulated time (the
    throughput and memory phases); ``more(n)``: the next n events of the same customers (the
    latency phase), generated on demand and cached, so each repeat offers the same events."""

    customers: int
    days: float
    acquisition_days: float
    seed: int
    main: list[Rec]
    generate_s: float
    _sim: ShopSimulator
    _until: datetime
    _end: datetime
    _more: list[Rec] = field(default_factory=list)

    def mix(self) -> dict[str, float]:
        counts = collections.Counter(role for role, _, _ in self.main)
        return {role: round(counts[role] / max(len(self.main), 1), 3) for role in sorted(counts)}

    def distinct_customers(self) -> int:
        return len({key for _, key, _ in self.main})

    def mean_value_bytes(self) -> float:
        return sum(len(v) for _, _, v in self.main) / max(len(self.main), 1)

    def more(self, n: int) -> list[Rec]:
        """The first ``n`` events after the main load (fewer if simulated time runs out)."""
        while len(self._more) < n and self._until < self._end:
            self._until = min(self._until + timedelta(days=3), self._end)
            self._more.extend(self._sim.raw_events(until=self._until))
        return self._more[:n]


def generate(customers: int, days: float, acquisition_days: float, seed: int = 7) -> Workload:
    """Simulate ``days`` of a shop whose ``customers`` place their first order within the
    first ``acquisition_days``; the main load ends a day before today, so the latency phase's
    live events (stamped now) follow it closely in event time."""
    started = time.perf_counter()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # From midnight: the same arguments give the same events all day long.
    start = now.replace(hour=0, minute=0, second=0) - timedelta(days=days + 1)
    sim = ShopSimulator(customers, start, seed=seed, acquisition_days=min(acquisition_days, days))
    until = start + timedelta(days=days)
    main = list(sim.raw_events(until=until))
    elapsed = time.perf_counter() - started
    say(f"generated {len(main):,} events for {customers:,} customers ({days:g} days simulated) in {elapsed:.1f}s")
    return Workload(customers, days, acquisition_days, seed, main, elapsed, sim, until, until + timedelta(days=LATENCY_RESERVE_DAYS))


def event_id(value: bytes) -> str:
    return orjson.loads(value)["id"]


def new_producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    # Default (murmur2) partitioner and key = customer id, as the README asks of producers.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=256 * 1024, max_request_size=4 * 1024 * 1024
    )


async def publish_all(bootstrap: str, topics: dict[str, str], records: Sequence[Rec], label: str = "events") -> dict[str, float]:
    """Send every record as fast as the client goes; returns counts and the rate."""
    producer = new_producer(bootstrap)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for i, (role, key, value) in enumerate(records, 1):
            pending.append(await producer.send(topics[role], value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
            if i % 100_000 == 0:
                say(f"published {i:,}/{len(records):,} {label}")
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    return {
        "events": len(records),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(records) / seconds, 1) if seconds else 0.0,
    }


async def publish_paced(
    producer: AIOKafkaProducer,
    topics: dict[str, str],
    records: Sequence[Rec],
    rate: float,
    on_send: Callable[[int, float], None],
    tick_s: float = 0.005,
    live: bool = False,
) -> float:
    """Offer ``records`` at ``rate`` events/s (catching up if a tick runs late); ``on_send(index,
    epoch s)`` is called just before each send, whose record timestamp is that same moment.
    ``live``: each event's CloudEvents ``time`` is also set to that moment, as a live producer
    would send it (the ids, keys and data stay the simulator's). Returns the seconds the
    offering took."""
    docs = [orjson.loads(value) for _, _, value in records] if live else None
    started = time.monotonic()
    sent = 0
    futures = []
    while sent < len(records):
        due = min(len(records), int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            role, key, value = records[sent]
            now = time.time()
            if docs is not None:
                docs[sent]["time"] = rfc3339(now)
                value = orjson.dumps(docs[sent])
            on_send(sent, now)
            futures.append(await producer.send(topics[role], value=value, key=key, timestamp_ms=int(now * 1000)))
            sent += 1
        await asyncio.sleep(tick_s)
    await asyncio.gather(*futures)
    return time.monotonic() - started

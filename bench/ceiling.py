"""The ceiling: the least a Kafka service doing this job must do, in one plain aiokafka loop —
decode (orjson + the project's validation, ``streamer.core.events.decode``), state update
(``streamer.core.state.apply`` into a dict) and one produced output record per event. No
scoring, segments, triggers, changelog or framework."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer

from bench.load import new_producer
from bench.progress import say
from streamer.core.config import Limits, ScoringConfig
from streamer.core.events import Event, decode
from streamer.core.state import CustomerState, apply, is_duplicate
from streamer.errors import InvalidEvent


def update(state: CustomerState | None, event: Event, partition: int, config: ScoringConfig) -> CustomerState | None:
    """The ceiling's state update for one decoded event: ``state`` (None: a new customer)
    with the event applied, or None for a duplicate (nothing to do)."""
    if state is None:
        state = CustomerState(customer=event.customer, partition=partition)
    elif is_duplicate(state, event):
        return None
    return apply(state, event, config)


def output(event: Event, state: CustomerState) -> bytes:
    """The ceiling's one output record for an event, from the state it left."""
    return orjson.dumps(
        {"customer": event.customer, "event_id": event.id, "orders": len(state.orders), "last_event_at": state.last_event_at}
    )


async def run_ceiling(
    bootstrap: str, roles: dict[str, str], out_topic: str, expected: int, quiet_s: float = 15.0
) -> dict[str, float | int | bool]:
    """Consume the input topics (``roles``: topic -> role) from the start until ``expected``
    records were handled; returns the count and events/s (first record fetched -> last output
    acknowledged)."""
    limits, config = Limits(), ScoringConfig()
    states: dict[str, CustomerState] = {}
    consumer = AIOKafkaConsumer(
        *roles,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = new_producer(bootstrap)
    await consumer.start()
    await producer.start()
    handled = invalid = duplicates = 0
    started: float | None = None
    last_progress = last_seen = time.monotonic()
    try:
        while handled < expected:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            now = time.monotonic()
            if not batches:
                if now - last_seen > quiet_s:
                    say(f"ceiling: nothing new for {quiet_s:.0f}s at {handled:,}/{expected:,}; giving up")
                    break
                continue
            last_seen = now
            if started is None:
                started = now
            wall_now = time.time()
            for tp, messages in batches.items():
                role = roles[tp.topic]
                for message in messages:
                    handled += 1
                    try:
                        event = decode(message.value, role, message.key, limits, wall_now)
                    except InvalidEvent:
                        invalid += 1
                        continue
                    state = update(states.get(event.customer), event, message.partition, config)
                    if state is None:
                        duplicates += 1
                        continue
                    states[event.customer] = state
                    await producer.send(out_topic, value=output(event, state), key=message.key)
            if now - last_progress >= 10:
                last_progress = now
                say(f"ceiling: {handled:,}/{expected:,} handled")
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    seconds = time.monotonic() - started if started is not None else 0.0
    return {
        "events": handled,
        "complete": handled >= expected,
        "invalid": invalid,
        "duplicates": duplicates,
        "customers": len(states),
        "seconds": round(seconds, 3),
        "events_per_s": round(handled / seconds, 1) if seconds else 0.0,
    }

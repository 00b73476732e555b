"""The progress metrics ops alert on, from a real worker: ``clv_consumer_lag_records`` rises
while a backlog is worked off and returns to 0; ``clv_partition_event_time_seconds`` is the
newest event time processed, also with ``CLOCK=wall`` (where the partition clock is the wall
clock, which would hide any lag)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent
from tests.integration.test_poison import metric_values

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BACKLOG = 40_000  # ~15 s of work here: the lag is sampled every 5 s
EVENT_TIME = "2024-06-01T10:00:00Z"


def lag_by_partition(text: str) -> dict[str, float]:
    return {dict(k)["partition"]: v for k, v in metric_values(text, "clv_consumer_lag_records").items() if dict(k)["topic"] == "email-events"}


async def test_lag_rises_with_a_backlog_and_returns_to_zero_and_event_time_is_no_wall_clock(make_worker, broker: str) -> None:
    worker = make_worker(worker_env(CLOCK="wall"))  # creates the topics
    worker.stop()  # the backlog piles up while no worker runs
    topics = worker.topics
    async with Kafka(broker, []) as kafka:
        sent = []
        for n in range(BACKLOG):
            customer = f"lag-{n % 2000}"
            event = cloudevent(f"m{n}", "Email Opened", EVENT_TIME, customer, {"email_id": f"mail-{n}"})
            sent.append(await kafka.producer.send(topics["email-events"], value=event, key=customer.encode()))
        await asyncio.gather(*sent)
    worker.start()
    seen_lag: list[float] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = worker.metrics()
        lags = lag_by_partition(text)
        consumed = sum(v for k, v in metric_values(text, "clv_events_consumed_total").items() if dict(k)["topic"] == "email-events")
        if lags:
            seen_lag.append(sum(lags.values()))
        if consumed >= BACKLOG and lags and sum(lags.values()) == 0:
            break
        await asyncio.sleep(0.5)
    assert consumed == BACKLOG, worker.log_tail()
    assert max(seen_lag) > 0, f"no lag seen while {BACKLOG} records were worked off: {seen_lag}"
    assert seen_lag[-1] == 0 and set(lag_by_partition(text)) == {"0", "1"}, seen_lag[-5:]
    print(f"\nlag samples (email-events, both partitions): {seen_lag}")
    event_times = {dict(k)["partition"]: v for k, v in metric_values(text, "clv_partition_event_time_seconds").items()}
    assert event_times == {p: datetime.fromisoformat(EVENT_TIME).timestamp() for p in ("0", "1")}  # not now

"""Rebuilding the partitions' clocks after recovery lets the event loop run in between: with
millions of customers it takes minutes, and /healthz (the liveness probe), /metrics and the
consumer's heartbeats are served by the same loop."""

from __future__ import annotations

import asyncio
from faust.types import TP
from unittest.mock import AsyncMock

import pytest

from streamer.core.state import CustomerState
from streamer.shell import agents, tables

CUSTOMERS = 5 * agents.REBUILD_PAUSE_EVERY + 123


async def test_the_rebuild_pauses_and_restores_every_customer(monkeypatch: pytest.MonkeyPatch) -> None:
    changelog = tables.customers.changelog_topic.get_topic_name()
    monkeypatch.setattr(agents.app.assignor, "assigned_actives", lambda: {TP(changelog, 0)})
    monkeypatch.setattr(agents, "load_models", AsyncMock())  # reads the model-state topic: no broker here
    for n in range(CUSTOMERS):
        state = CustomerState(customer=f"c{n}", partition=0, last_event_at=1_735_689_600.0 + n, value=float(n), next_due=1_735_700_000.0 + n)
        state.segments["lifecycle"] = "new"
        tables.customers.data[state.customer.encode()] = state.to_bytes()

    ticks = 0

    async def ticker() -> None:  # stands for the web server and the heartbeats
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await agents.rebuild_partitions()
    during = ticks - before
    beat.cancel()
    clock = agents.engine.partitions[0]
    assert clock.customers == CUSTOMERS
    assert clock.now == 1_735_689_600.0 + CUSTOMERS - 1
    clock.now = 1_735_700_000.0 + CUSTOMERS  # every customer's timer is due by then
    due = []
    while (item := clock.pop_due()) is not None:
        due.append(item)
    assert len(due) == CUSTOMERS and due[0] == (1_735_700_000.0, "c0")
    assert during >= CUSTOMERS // agents.REBUILD_PAUSE_EVERY, f"the loop ran {during} times during the rebuild"

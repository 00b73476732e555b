"""The lag metric right after a rebalance: Faust's monitor forgets every committed offset at a
rebalance and learns them again only from this worker's own commits, so a worker stuck from
its first record on would show no lag at all — and the lag alerts could not fire."""

from __future__ import annotations

import pytest
from faust.types import TP

from streamer.shell import agents

ORDERS = agents.settings.topics["orders"]
EMAIL = agents.settings.topics["email-events"]


class Consumer:
    def __init__(self, ends: dict[TP, int], at_assignment: dict[TP, int | None], earliest: dict[TP, int]) -> None:
        self.ends, self.assigned_committed, self.earliest = ends, at_assignment, earliest
        self.asked_earliest: list[TP] = []

    def assignment(self) -> set[TP]:
        return set(self.ends) | {TP(f"{agents.settings.app_id}-customer-state-changelog", 0)}

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        self.asked_earliest.extend(tps)
        return {tp: self.earliest[tp] for tp in tps}


class Monitor:
    def __init__(self, committed: dict[TP, int]) -> None:
        self.tp_committed_offsets = committed


def patch(monkeypatch: pytest.MonkeyPatch, consumer: Consumer, monitor: Monitor) -> None:
    monkeypatch.setattr(type(agents.app), "consumer", property(lambda self: consumer))
    monkeypatch.setattr(type(agents.app), "monitor", property(lambda self: monitor))


async def test_lag_after_a_rebalance_before_this_worker_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    stuck, fresh, moving = TP(ORDERS, 0), TP(ORDERS, 1), TP(EMAIL, 0)
    consumer = Consumer(
        ends={stuck: 5000, fresh: 700, moving: 900},
        at_assignment={stuck: 1200, fresh: None, moving: 300},
        earliest={stuck: 0, fresh: 50, moving: 0},
    )
    patch(monkeypatch, consumer, Monitor({moving: 850}))  # only ``moving`` committed since
    lags = await agents.consumer_lags()
    assert lags == {("orders", 0): 3800, ("orders", 1): 650, ("email-events", 0): 50}
    assert consumer.asked_earliest == [fresh]  # only where the group never committed


async def test_no_assignment_no_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    patch(monkeypatch, Consumer({}, {}, {}), Monitor({}))
    assert await agents.consumer_lags() == {}

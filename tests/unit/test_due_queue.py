"""The bucketed due-queue, and the timers on disk, pop exactly what a heap of (due, customer) pops."""

from __future__ import annotations

import heapq
import random

import pytest

from streamer.core.due_queue import BUCKET_S, DueQueue
from streamer.core.engine import PartitionClock
from streamer.core.timers import DiskTimers


class HeapClock:
    """The reference: a plain heap with stale entries, as PartitionClock kept it before."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, str]] = []
        self.due_of: dict[str, float] = {}

    def schedule(self, customer: str, due: float | None) -> None:
        if due is None:
            self.due_of.pop(customer, None)
        elif self.due_of.get(customer) != due:
            self.due_of[customer] = due
            heapq.heappush(self.heap, (due, customer))

    def pop_due(self) -> tuple[float, str] | None:
        while self.heap and self.heap[0][0] <= self.now:
            due, customer = heapq.heappop(self.heap)
            if self.due_of.get(customer) == due:
                del self.due_of[customer]
                return due, customer
        return None


def make_clock(kind: str, path) -> PartitionClock:
    return PartitionClock() if kind == "memory" else PartitionClock(timers=DiskTimers(path / "timers"))


@pytest.mark.parametrize("kind", ["memory", "disk"])
@pytest.mark.parametrize("seed", range(6))
def test_pops_in_the_order_of_a_heap(seed: int, kind: str, tmp_path) -> None:
    rng = random.Random(seed)
    # Ids of different lengths and a non-ASCII one: ties in due time are broken by id, in the
    # same order in memory (str) and on disk (UTF-8 bytes).
    customers = [f"c{i}" for i in range(300)] + ["c", "c1\u00e9", "\u00e9", "Z"]
    clock, reference = make_clock(kind, tmp_path), HeapClock()
    popped = []
    for step in range(20_000):
        op = rng.random()
        if op < 0.55:
            customer = rng.choice(customers)
            # Mostly ahead of the clock, some behind it, some on bucket edges, some repeated.
            due = rng.choice([
                clock.now + rng.uniform(0, 40 * BUCKET_S),
                clock.now - rng.uniform(0, BUCKET_S),
                (int(clock.now // BUCKET_S) + rng.randint(0, 3)) * BUCKET_S,
                reference.due_of.get(customer, clock.now + 1.0),
            ])
            clock.schedule(customer, due)
            reference.schedule(customer, due)
        elif op < 0.6:
            customer = rng.choice(customers)
            clock.schedule(customer, None)
            reference.schedule(customer, None)
        elif op < 0.8:
            clock.now = reference.now = clock.now + rng.expovariate(1 / (0.5 * BUCKET_S))
        else:
            # Pop a few, rescheduling some of them right away (a timer's evaluation does).
            for _ in range(rng.randint(1, 5)):
                got, want = clock.pop_due(), reference.pop_due()
                assert got == want
                popped.append(got)
                if got is not None and rng.random() < 0.5:
                    later = clock.now + rng.uniform(0, 3 * BUCKET_S)
                    clock.schedule(got[1], later)
                    reference.schedule(got[1], later)
        if kind == "memory" or step % 500 == 0:  # a full scan on disk
            assert clock.timers.due_times() == reference.due_of
    assert clock.timers.due_times() == reference.due_of
    clock.now = reference.now = clock.now + 100 * BUCKET_S
    while (want := reference.pop_due()) is not None:
        assert clock.pop_due() == want
    assert clock.pop_due() is None
    assert sum(item is not None for item in popped) > 1000
    clock.timers.close()


def test_stale_entries_are_shed() -> None:
    clock = PartitionClock()
    for n in range(5000):  # one customer rescheduled over and over
        clock.schedule("a", 1e6 + n * 10.0)
    queue = clock.timers.queue
    assert len(queue) <= 2 * len(clock.columns) + 1024
    clock.now = 2e6
    assert clock.pop_due() == (1e6 + 4999 * 10.0, "a")
    assert clock.pop_due() is None and len(queue) == 0


def test_an_empty_queue() -> None:
    queue = DueQueue(lambda customer: None)
    assert queue.pop(1e12) is None and len(queue) == 0

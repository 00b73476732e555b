"""The bucketed due-queue pops exactly what a heap of (due, customer) pops."""

from __future__ import annotations

import heapq
import random

import pytest

from streamer.core.due_queue import BUCKET_S, DueQueue
from streamer.core.engine import PartitionClock


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


@pytest.mark.parametrize("seed", range(6))
def test_pops_in_the_order_of_a_heap(seed: int) -> None:
    rng = random.Random(seed)
    customers = [f"c{i}" for i in range(300)]
    clock, reference = PartitionClock(), HeapClock()
    popped = []
    for _ in range(20_000):
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
        assert clock.columns.due_times() == reference.due_of
    clock.now = reference.now = clock.now + 100 * BUCKET_S
    while (want := reference.pop_due()) is not None:
        assert clock.pop_due() == want
    assert clock.pop_due() is None
    assert sum(item is not None for item in popped) > 1000


def test_stale_entries_are_shed() -> None:
    clock = PartitionClock()
    for n in range(5000):  # one customer rescheduled over and over
        clock.schedule("a", 1e6 + n * 10.0)
    assert len(clock.due) <= 2 * len(clock.columns) + 1024
    clock.now = 2e6
    assert clock.pop_due() == (1e6 + 4999 * 10.0, "a")
    assert clock.pop_due() is None and len(clock.due) == 0


def test_an_empty_queue() -> None:
    queue = DueQueue(lambda customer: None)
    assert queue.pop(1e12) is None and len(queue) == 0

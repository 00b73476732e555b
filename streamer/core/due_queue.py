"""A partition's due-queue: customers in the order of their due times, popped as the clock
passes them.

A heap of ``(due, customer)`` costs ~80 bytes a customer (a tuple and a float object), and
every customer in state has a due time. Here a due time far from the clock costs one list
slot in an hour's bucket (8 bytes); a bucket becomes a heap of ``(due, customer)`` only when
the clock reaches its hour. The order popped is exactly a heap's: every entry due at or
before the clock is in the heap by the time it is asked for.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

#: Seconds of due times per bucket.
BUCKET_S = 3600.0


class DueQueue:
    """``(due, customer)`` entries; ``due_of(customer)`` says which are current (others are
    stale: the customer was rescheduled or cleared since) and is the caller's to keep.

    >>> due = {"a": 7200.5, "b": 10.0, "c": 7200.5}
    >>> queue = DueQueue(due.get)
    >>> for customer, at in due.items(): queue.push(customer, at)
    >>> queue.pop(5.0) is None, queue.pop(100.0)
    (True, (10.0, 'b'))
    >>> due["a"] = 9999.0; queue.push("a", 9999.0)  # rescheduled: its entry at 7200.5 is stale
    >>> queue.pop(1e5), queue.pop(1e5)
    ((7200.5, 'c'), (9999.0, 'a'))
    """

    __slots__ = ("_due_of", "_buckets", "_bucket_ids", "_heap", "_heap_upto", "_size")

    def __init__(self, due_of: Callable[[str], float | None]) -> None:
        self._due_of = due_of
        self._buckets: dict[int, list[str]] = {}
        self._bucket_ids: list[int] = []  # heap of the keys of _buckets
        self._heap: list[tuple[float, str]] = []
        #: Buckets up to this one have been moved into the heap: their entries go there directly.
        self._heap_upto: int | None = None
        self._size = 0

    def __len__(self) -> int:
        """Entries held, stale ones included (what a rebuild would shed)."""
        return self._size

    def push(self, customer: str, due: float) -> None:
        bucket = int(due // BUCKET_S)
        if self._heap_upto is not None and bucket <= self._heap_upto:
            heapq.heappush(self._heap, (due, customer))
        else:
            entries = self._buckets.get(bucket)
            if entries is None:
                self._buckets[bucket] = [customer]
                heapq.heappush(self._bucket_ids, bucket)
            else:
                entries.append(customer)
        self._size += 1

    def pop(self, now: float) -> tuple[float, str] | None:
        """The first current ``(due, customer)`` due at or before ``now``, or None. The entry
        leaves the queue; clearing the customer's due time is the caller's."""
        upto = int(now // BUCKET_S)
        if self._bucket_ids and self._bucket_ids[0] <= upto:
            self._open_buckets(upto)
        heap, due_of = self._heap, self._due_of
        while heap and heap[0][0] <= now:
            due, customer = heapq.heappop(heap)
            self._size -= 1
            if due_of(customer) == due:
                return due, customer
        return None

    def _open_buckets(self, upto: int) -> None:
        """Move the buckets up to ``upto`` into the heap, with their customers' current due times."""
        heap, due_of = self._heap, self._due_of
        while self._bucket_ids and self._bucket_ids[0] <= upto:
            bucket = heapq.heappop(self._bucket_ids)
            for customer in self._buckets.pop(bucket):
                due = due_of(customer)
                if due is not None and int(due // BUCKET_S) == bucket:
                    heapq.heappush(heap, (due, customer))
                else:
                    self._size -= 1  # rescheduled to another bucket, or cleared
        self._heap_upto = upto if self._heap_upto is None else max(self._heap_upto, upto)

    def rebuild(self, entries: Iterable[tuple[str, float]]) -> None:
        """Start over from ``(customer, due)`` entries (stale ones are shed)."""
        self._buckets, self._bucket_ids, self._heap, self._size = {}, [], [], 0
        for customer, due in entries:
            self.push(customer, due)

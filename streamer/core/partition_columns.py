"""The numbers a partition keeps per customer, in float columns with one slot per customer.

A partition needs, without reading the table: each customer's due time (with in-memory timers,
see ``timers.MemoryTimers``) and what a population refit needs (repeat purchase days, first
and last order time, mean repeat value). Kept as dicts of Python floats and tuples they cost
~330 bytes a customer (dict entries, float and tuple objects); here they are one dict entry and
five 8-byte slots. NaN marks "none".

Refit rows are kept for at most ``refit_limit`` customers: beyond that, for the customers with
the smallest hash of their id (a bottom-k sample: the same customers whatever the order they
came in, a uniform sample of the partition). A refit over a few hundred thousand customers
estimates the population's six parameters as well as one over millions, and the memory stays
bounded.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from array import array

import numpy as np

NONE = math.nan


def sample_hash(customer: str) -> int:
    """A customer's place in the refit sample: 64 bits of its id's BLAKE2b digest."""
    return int.from_bytes(hashlib.blake2b(customer.encode(), digest_size=8).digest(), "big")


class PartitionColumns:
    """customer -> slot; columns ``due``, ``x``, ``first``, ``last``, ``m``.

    >>> cols = PartitionColumns()
    >>> cols.set_due("a", 5.0); cols.set_refit("a", 2, 10.0, 50.0, 7.5); cols.set_due("b", 9.0)
    >>> cols.due_of("a"), cols.due_of("b"), cols.refit_rows
    (5.0, 9.0, 1)
    >>> cols.release("a"); cols.due_of("a"), len(cols), cols.due_times()
    (None, 1, {'b': 9.0})
    >>> cols.set_refit("c", 1, 3.0, 4.0, 2.0)  # takes a's freed slot
    >>> [column.tolist() for column in cols.refit_columns()]
    [[1.0], [3.0], [4.0], [2.0]]
    >>> sampled = PartitionColumns(refit_limit=2)
    >>> for name in "abcdef": sampled.set_refit(name, 1, 0.0, 1.0, 1.0)
    >>> sampled.refit_rows, sorted(sampled.refit_customers()) == sorted(sorted("abcdef", key=sample_hash)[:2])
    (2, True)
    >>> [sampled.may_take(name) for name in "abcdef"] == [name in sorted("abcdef", key=sample_hash)[:2] for name in "abcdef"]
    True
    """

    __slots__ = ("_slot", "_free", "due", "x", "first", "last", "m", "refit_limit", "refit_rows", "_sample")

    def __init__(self, refit_limit: int | None = None) -> None:
        self._slot: dict[str, int] = {}
        self._free: list[int] = []  # slots of released customers, reused first
        self.due = array("d")
        self.x, self.first, self.last, self.m = array("d"), array("d"), array("d"), array("d")
        #: At most this many refit rows (None: one for every customer with orders).
        self.refit_limit = refit_limit
        self.refit_rows = 0
        #: Once the limit is reached: a heap of (-sample_hash, customer) over the rows kept, its
        #: top the kept customer with the largest hash (the next to give way). May hold
        #: customers released since (dropped when they come to the top).
        self._sample: list[tuple[int, str]] | None = None

    def _columns(self) -> tuple[array, ...]:
        return (self.due, self.x, self.first, self.last, self.m)

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, customer: object) -> bool:
        return customer in self._slot

    def slot(self, customer: str) -> int:
        """The customer's slot, taken (all NONE) if it has none yet."""
        slot = self._slot.get(customer)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self.due)
                for column in self._columns():
                    column.append(NONE)
            self._slot[customer] = slot
        return slot

    def release(self, customer: str) -> None:
        """Forget a customer (erasure): its slot is cleared and reused."""
        slot = self._slot.pop(customer, None)
        if slot is not None:
            if self.x[slot] == self.x[slot]:
                self.refit_rows -= 1
            for column in self._columns():
                column[slot] = NONE
            self._free.append(slot)

    def _read(self, column: array, customer: str) -> float | None:
        slot = self._slot.get(customer)
        if slot is None:
            return None
        number = column[slot]
        return None if number != number else number  # NaN: none

    def _write(self, column: array, customer: str, number: float | None) -> float | None:
        """Set (None: clear) the customer's number in ``column``; returns the one it replaces."""
        if number is None:
            slot = self._slot.get(customer)
            if slot is None:
                return None  # no slot taken just to say "none"
        else:
            slot = self.slot(customer)
        old = column[slot]
        column[slot] = NONE if number is None else number
        return None if old != old else old

    # -- due time ---------------------------------------------------------------------------

    def due_of(self, customer: str) -> float | None:
        return self._read(self.due, customer)

    def set_due(self, customer: str, due: float | None) -> float | None:
        """Set (or clear) the due time; returns the one it replaces."""
        return self._write(self.due, customer, due)

    def due_times(self) -> dict[str, float]:
        """customer -> due time, of every customer with one (for restores and tests)."""
        due = self.due
        return {customer: due[slot] for customer, slot in self._slot.items() if due[slot] == due[slot]}

    # -- population refit rows ----------------------------------------------------------------

    def set_refit(self, customer: str, x: float, first: float, last: float, m: float) -> None:
        """Set the customer's refit row, if it has one or the sample takes it."""
        slot = self._slot.get(customer)
        if slot is None or self.x[slot] != self.x[slot]:  # no row yet
            if not self._admit(customer):
                return
            if slot is None:
                slot = self.slot(customer)
            self.refit_rows += 1
        self.x[slot], self.first[slot], self.last[slot], self.m[slot] = x, first, last, m

    def clear_refit(self, customer: str) -> None:
        """No row for the customer any more: no purchase left to fit (every order refunded)."""
        if self._has_row(customer):
            self._drop_refit(customer)

    def _admit(self, customer: str) -> bool:
        """Whether a customer without a row gets one; makes room by dropping another's."""
        limit, sample = self.refit_limit, self._sample
        if limit is None:
            return True
        if self.refit_rows < limit:
            if sample is not None:
                heapq.heappush(sample, (-sample_hash(customer), customer))
            return True
        if sample is None:
            x = self.x
            sample = self._sample = [(-sample_hash(c), c) for c, slot in self._slot.items() if x[slot] == x[slot]]
            heapq.heapify(sample)
        self._prune(sample)
        h = sample_hash(customer)
        if not sample or h >= -sample[0][0]:
            return False
        _, dropped = heapq.heapreplace(sample, (-h, customer))
        self._drop_refit(dropped)
        return True

    def may_take(self, customer: str) -> bool:
        """Whether ``set_refit`` could keep a row for the customer: it has one, or the sample
        has room or would take it. A restore asks first, so it computes the features of the
        customers the sample takes only (at 10M customers, ~1 in 50)."""
        limit, sample = self.refit_limit, self._sample
        if limit is None or self.refit_rows < limit or self._has_row(customer):
            return True
        if sample is None:
            return True  # the heap is built by the first _admit past the limit
        self._prune(sample)
        return not sample or sample_hash(customer) < -sample[0][0]

    def _prune(self, sample: list[tuple[int, str]]) -> None:
        """Drop from the top of the sample heap the customers released since they were sampled."""
        while sample and not self._has_row(sample[0][1]):
            heapq.heappop(sample)

    def _has_row(self, customer: str) -> bool:
        slot = self._slot.get(customer)
        return slot is not None and self.x[slot] == self.x[slot]

    def _drop_refit(self, customer: str) -> None:
        slot = self._slot[customer]
        self.x[slot] = self.first[slot] = self.last[slot] = self.m[slot] = NONE
        self.refit_rows -= 1
        if self.due[slot] != self.due[slot]:  # nothing else kept: the slot goes too
            del self._slot[customer]
            self._free.append(slot)

    def refit_customers(self) -> list[str]:
        """The customers with a refit row."""
        x = self.x
        return [customer for customer, slot in self._slot.items() if x[slot] == x[slot]]

    def refit_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, first, last, m) of every customer with a refit row, in slot order (copies)."""
        if not len(self.x):
            empty = np.zeros(0)
            return empty, empty, empty, empty
        x = np.frombuffer(self.x, dtype=np.float64)
        rows = ~np.isnan(x)
        return tuple(np.frombuffer(column, dtype=np.float64)[rows] for column in (self.x, self.first, self.last, self.m))  # type: ignore[return-value]

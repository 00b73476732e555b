"""The numbers a partition keeps per customer, in float columns with one slot per customer.

A partition needs, for every customer in its state and without reading the table: the due
time (the due-queue), the CLV it is ranked by (value tiers), and what a population refit needs
(repeat purchase days, first and last order time, mean repeat value). Kept as three dicts of
Python floats and tuples they cost ~330 bytes a customer (dict entries, float and tuple
objects); here they are one dict entry and six 8-byte slots. NaN marks "none".
"""

from __future__ import annotations

import math
from array import array

import numpy as np

NONE = math.nan


class PartitionColumns:
    """customer -> slot; columns ``due``, ``value``, ``x``, ``first``, ``last``, ``m``.

    >>> cols = PartitionColumns()
    >>> cols.set_due("a", 5.0); cols.set_refit("a", 2, 10.0, 50.0, 7.5); cols.set_due("b", 9.0)
    >>> cols.due_of("a"), cols.due_of("b"), cols.value_of("a")
    (5.0, 9.0, None)
    >>> cols.release("a"); cols.due_of("a"), len(cols), cols.due_times()
    (None, 1, {'b': 9.0})
    >>> cols.set_refit("c", 1, 3.0, 4.0, 2.0)  # takes a's freed slot
    >>> [column.tolist() for column in cols.refit_columns()]
    [[1.0], [3.0], [4.0], [2.0]]
    """

    __slots__ = ("_slot", "_free", "due", "value", "x", "first", "last", "m")

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}
        self._free: list[int] = []  # slots of released customers, reused first
        self.due, self.value = array("d"), array("d")
        self.x, self.first, self.last, self.m = array("d"), array("d"), array("d"), array("d")

    def _columns(self) -> tuple[array, ...]:
        return (self.due, self.value, self.x, self.first, self.last, self.m)

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

    # -- ranked value -------------------------------------------------------------------------

    def value_of(self, customer: str) -> float | None:
        return self._read(self.value, customer)

    def set_value(self, customer: str, value: float | None) -> float | None:
        """Set (or clear) the ranked value; returns the one it replaces."""
        return self._write(self.value, customer, value)

    # -- population refit rows ----------------------------------------------------------------

    def set_refit(self, customer: str, x: float, first: float, last: float, m: float) -> None:
        slot = self.slot(customer)
        self.x[slot], self.first[slot], self.last[slot], self.m[slot] = x, first, last, m

    def refit_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, first, last, m) of every customer with a refit row, in slot order (copies)."""
        if not len(self.x):
            empty = np.zeros(0)
            return empty, empty, empty, empty
        x = np.frombuffer(self.x, dtype=np.float64)
        rows = ~np.isnan(x)
        return tuple(np.frombuffer(column, dtype=np.float64)[rows] for column in (self.x, self.first, self.last, self.m))  # type: ignore[return-value]

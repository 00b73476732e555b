"""What a population refit needs of each customer, packed into arrays.

A partition keeps, per customer with orders, (repeat purchase days, first order time, last
order time, mean repeat value) so the BG/NBD and Gamma-Gamma refit never reads the table. As a
dict of tuples that cost ~260 bytes a customer (dict entry, tuple, four number objects); here
it is a dict entry and four 8-byte slots, and the refit's snapshot is a few array copies instead
of a Python tuple per customer built on the event loop.
"""

from __future__ import annotations

from array import array

import numpy as np


class RefitRows:
    """customer -> (x, first, last, m), four float columns with a slot per customer.

    >>> rows = RefitRows()
    >>> rows.set("a", 2, 10.0, 50.0, 7.5); rows.set("b", 0, 20.0, 20.0, 0.0)
    >>> rows.set("a", 3, 10.0, 60.0, 8.0)  # overwrites in place
    >>> rows.pop("b"); len(rows), "b" in rows, rows.get("a")
    (1, False, (3.0, 10.0, 60.0, 8.0))
    >>> [column.tolist() for column in rows.columns()]
    [[3.0], [10.0], [60.0], [8.0]]
    """

    __slots__ = ("_slot", "_free", "_columns")

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}
        self._free: list[int] = []  # slots of removed customers, reused first
        self._columns = (array("d"), array("d"), array("d"), array("d"))

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, customer: object) -> bool:
        return customer in self._slot

    def set(self, customer: str, x: float, first: float, last: float, m: float) -> None:
        slot = self._slot.get(customer)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._columns[0])
                for column in self._columns:
                    column.append(0.0)
            self._slot[customer] = slot
        xs, firsts, lasts, ms = self._columns
        xs[slot], firsts[slot], lasts[slot], ms[slot] = x, first, last, m

    def get(self, customer: str) -> tuple[float, float, float, float] | None:
        slot = self._slot.get(customer)
        return None if slot is None else tuple(column[slot] for column in self._columns)  # type: ignore[return-value]

    def pop(self, customer: str) -> None:
        slot = self._slot.pop(customer, None)
        if slot is not None:
            self._free.append(slot)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, first, last, m) of every customer, in the order they were first set (copies)."""
        slots = np.fromiter(self._slot.values(), dtype=np.intp, count=len(self._slot))
        return tuple(np.frombuffer(column, dtype=np.float64)[slots] if len(column) else np.zeros(0) for column in self._columns)  # type: ignore[return-value]

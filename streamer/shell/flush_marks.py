"""Whole write-backs only: the changelog records of one state flush count once their mark is in.

The worker writes the states changed since the last commit as one changelog record per
customer (see ``tables.TableStore.flush``), then one *flush mark* per changelog partition
naming the offset where that flush began. A worker killed while writing leaves some of a
flush's records in the changelog and no mark after them. Read back without marks, those
records would give the next owner of the partition a mix of states from before and after the
flush: the written customers' events count as already applied, the others are applied again
with the partition's event-time clock already moved on by the written ones, so their outputs
come out as of a later moment with different ids.

So whoever reads the changelog (recovery, standbys) holds records back until a mark releases
them, and drops what no mark covers: the records before a mark's first offset that came after
the previous mark (leftovers of a killed flush, rewritten by the flush the mark closes), and
what is still held when recovery ends (the killed flush itself). Kafka transactions would do
the same; the embedded broker rejects them.

>>> marks = FlushMarks()
>>> marks.take(0, 10, b"alice", b"v2", "alice@10")  # held until a mark covers it
[]
>>> marks.take(0, 11, MARK_KEY, mark_value(first_offset=10), "mark@11")
['alice@10']
>>> marks.take(0, 12, b"bob", b"v2", "bob@12")  # a flush killed after this record...
[]
>>> marks.take(0, 13, b"bob", b"v2", "bob@13")  # ...and the next flush, from 13
[]
>>> marks.take(0, 14, MARK_KEY, mark_value(first_offset=13), "mark@14")
['bob@13']
>>> marks.dropped
1
>>> marks.take(0, 15, b"carol", b"v1", "carol@15")
[]
>>> marks.take(0, 15, b"carol", b"v1", "carol@15")  # read again (the partition came back)
[]
>>> marks.held[0]
[(15, 'carol@15')]
"""

from __future__ import annotations

from typing import Generic, TypeVar

import orjson

#: The key of a flush mark. Customer ids (CloudEvents subjects) cannot contain control
#: characters, so no customer's state can have this key.
MARK_KEY = b"\x00flush-mark"

T = TypeVar("T")


def mark_value(first_offset: int) -> bytes:
    """The value of a flush mark: the changelog offset of the flush's first record."""
    return orjson.dumps({"from": first_offset})


def mark_first_offset(value: bytes | None) -> int:
    """The first offset a flush mark covers (a mark that cannot be read covers nothing held)."""
    try:
        first = orjson.loads(value or b"{}").get("from")
    except (orjson.JSONDecodeError, AttributeError):
        return 1 << 62
    return first if isinstance(first, int) else 1 << 62


class FlushMarks(Generic[T]):
    """Changelog records held per partition until a flush mark covers them."""

    def __init__(self) -> None:
        #: partition -> [(offset, record)] read since that partition's last mark.
        self.held: dict[int, list[tuple[int, T]]] = {}
        #: Records dropped so far (leftovers of flushes a kill interrupted).
        self.dropped = 0

    def take(self, partition: int, offset: int, key: bytes | None, value: bytes | None, record: T) -> list[T]:
        """Read one changelog record (``record`` stands for it); returns the records it
        releases, in log order. A mark itself is never returned."""
        held = self.held.setdefault(partition, [])
        if held and offset <= held[-1][0]:
            # The partition is read again from an earlier offset (reassigned, recovery
            # restarted): what was held from there on comes again.
            held[:] = [(o, r) for o, r in held if o < offset]
        if key != MARK_KEY:
            held.append((offset, record))
            return []
        first = mark_first_offset(value)
        del self.held[partition]
        released = [r for o, r in held if o >= first]
        self.dropped += len(held) - len(released)
        return released

    def drop(self, partitions: set[int] | None = None) -> int:
        """Forget what is held for ``partitions`` (all if None): flushes no mark completed.
        Returns how many records were dropped."""
        dropped = 0
        for partition in list(self.held if partitions is None else partitions & self.held.keys()):
            dropped += len(self.held.pop(partition))
        self.dropped += dropped
        return dropped

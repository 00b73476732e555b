"""Whole write-backs only: the changelog records of one state flush count once their mark is in.

The worker writes the states changed since the last commit as one changelog record per
customer (see ``tables.TableStore.flush``), then one *flush mark* per changelog partition. A
worker killed while writing leaves some of a flush's records in the changelog and no mark
after them. Read back as they are, those records would give the next owner of the partition a
mix of states from before and after the flush: the written customers' events count as already
applied, the others are applied again with the partition's event-time clock already moved on
by the written ones, so their outputs come out as of a later moment with different ids.

So whoever reads the changelog (recovery, standbys) holds records back until a mark releases
them, and the owner that recovers a partition drops what is still held when its recovery ends
(the killed flush) and writes those customers' recovered states again in its first write-back.
A mark releases everything held before it: the leftovers of a killed flush are always followed,
before the next mark, by those rewrites, which win (they come later in the log). A mark never
has to know where the previous one was, so compaction may remove old marks (they all share one
key) without a reader losing the write-backs they closed. Kafka transactions would do the same;
the embedded broker rejects them.

>>> marks = FlushMarks()
>>> marks.take(0, 10, b"alice", b"v2", "alice@10")  # held until a mark covers it
[]
>>> marks.take(0, 11, MARK_KEY, mark_value(first_offset=10), "mark@11")
['alice@10']
>>> marks.take(0, 12, b"bob", b"v2", "bob@12")  # a flush killed after this record:
[]
>>> marks.drop({0})  # recovery ends with it held; the owner writes bob again
['bob@12']
>>> marks.take(0, 13, b"bob", b"v1", "bob@13")  # (a standby reads on: both, the rewrite last)
[]
>>> marks.take(0, 14, MARK_KEY, mark_value(first_offset=13), "mark@14")
['bob@13']
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
    """The value of a flush mark: the changelog offset of the flush's first record (for
    whoever inspects the changelog; readers need only the key)."""
    return orjson.dumps({"from": first_offset})


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
        return [r for _o, r in self.held.pop(partition)]

    def drop(self, partitions: set[int] | None = None) -> list[T]:
        """Forget what is held for ``partitions`` (all if None): flushes no mark completed.
        Returns the records dropped, so their keys can be written again."""
        dropped: list[T] = []
        for partition in sorted(self.held if partitions is None else partitions & self.held.keys()):
            dropped.extend(r for _o, r in self.held.pop(partition))
        self.dropped += len(dropped)
        return dropped

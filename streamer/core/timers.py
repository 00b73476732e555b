"""Where a partition keeps its customers' due times: in memory, or on disk.

A partition fires each customer's next change (lapse, at risk, a campaign step) when its clock
passes the customer's due time. Every customer in state has one, so holding them costs memory
per customer: in memory (:class:`MemoryTimers`) about 100 bytes a customer with its id, which
is 1 GB at 10M customers. :class:`DiskTimers` keeps them in a local RocksDB database instead,
keyed by due time, so memory stays bounded whatever the number of customers (the worker uses it
with ``STORE=rocksdb``). Both give the same entries in the same order: ascending due time, then
customer id for equal times (the disk's key order; the memory queue's heap order is the same).

Both are derived data: a partition's timers are rebuilt from its states when it is restored
(``Engine.restore_partition``), so the disk copy needs no write-ahead log and no recovery.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from streamer.core.due_queue import DueQueue
from streamer.core.partition_columns import PartitionColumns


class Timers(Protocol):
    """A partition's due times: customer -> due, and the due ones in order."""

    def set(self, customer: str, due: float | None) -> None:
        """Set (None: clear) the customer's due time."""

    def pop(self, now: float) -> tuple[float, str] | None:
        """The first ``(due, customer)`` due at or before ``now``, or None; it is cleared."""

    def due_of(self, customer: str) -> float | None: ...

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        """Set many due times at once (a restore, into empty timers)."""

    def due_times(self) -> dict[str, float]:
        """customer -> due time, of every customer with one (tests, diagnostics: a full scan)."""

    def close(self) -> None:
        """Release what the timers hold (the partition is gone)."""


class MemoryTimers:
    """Due times in the partition's float column, ordered by an hour-bucketed queue."""

    def __init__(self, columns: PartitionColumns) -> None:
        self.columns = columns
        self.queue = DueQueue(columns.due_of)

    def set(self, customer: str, due: float | None) -> None:
        columns = self.columns
        if columns.set_due(customer, due) == due or due is None:
            return  # unchanged (its queue entry stands), or cleared (its entry is now stale)
        self.queue.push(customer, due)
        if len(self.queue) > 2 * len(columns) + 1024:
            # Stale entries pile up as customers keep buying; rebuild so memory stays
            # proportional to customers, not to events.
            self.queue.rebuild(columns.due_times().items())

    def pop(self, now: float) -> tuple[float, str] | None:
        item = self.queue.pop(now)
        if item is not None:
            self.columns.set_due(item[1], None)
        return item

    def due_of(self, customer: str) -> float | None:
        return self.columns.due_of(customer)

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        columns, queue = self.columns, self.queue
        for customer, due in entries:
            if columns.set_due(customer, due) != due:
                queue.push(customer, due)

    def due_times(self) -> dict[str, float]:
        return self.columns.due_times()

    def close(self) -> None:
        pass


def time_key(t: float) -> bytes:
    """8 bytes that sort like ``t`` (IEEE 754 bits, sign flipped; negatives inverted).

    >>> sorted([3.5, -1.0, 0.0, 1e9, -2.5], key=time_key)
    [-2.5, -1.0, 0.0, 3.5, 1000000000.0]
    """
    (bits,) = struct.unpack(">Q", struct.pack(">d", t))
    return struct.pack(">Q", bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63)


def from_time_key(key: bytes) -> float:
    """The time :func:`time_key` made ``key`` of.

    >>> [from_time_key(time_key(t)) for t in (-2.5, 0.0, 1733300000.25)]
    [-2.5, 0.0, 1733300000.25]
    """
    (bits,) = struct.unpack(">Q", key)
    bits = bits & ~(1 << 63) if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    return struct.unpack(">d", struct.pack(">Q", bits))[0]


_QUEUE, _DUE = b"q", b"d"  # key prefixes: q + time key + customer -> b""; d + customer -> due
_DUE_FORMAT = struct.Struct("<d")


class DiskTimers:
    """Due times in a local RocksDB database: memory bounded by its buffers, not by customers.

    Two kinds of keys: ``q`` + due time + customer (the queue, in due order) and ``d`` +
    customer (its due time, to find and delete its queue key when it changes). The next due
    time is kept in memory, so the many clock advances with nothing due read nothing.

    >>> import tempfile
    >>> timers = DiskTimers(Path(tempfile.mkdtemp()) / "p0")
    >>> timers.set("a", 7200.5); timers.set("b", 10.0); timers.set("c", 7200.5)
    >>> timers.pop(5.0) is None, timers.pop(100.0), timers.due_of("b")
    (True, (10.0, 'b'), None)
    >>> timers.set("a", 9999.0)  # rescheduled: its entry at 7200.5 is gone
    >>> timers.pop(1e5), timers.pop(1e5), timers.pop(1e5)
    ((7200.5, 'c'), (9999.0, 'a'), None)
    >>> timers.close()
    """

    #: A small memtable (a due time is ~50 bytes, and the queue is derived data), at most two
    #: of them per partition, and one block cache for every partition's database (RocksDB's
    #: default is a cache of its own for each). With 1 MiB memtables and an 8 MiB cache the
    #: timers' fixed cost (~24 MiB for 8 partitions) outweighed what they saved at 100,000
    #: customers (measured: 1,544 bytes a customer in the worker bench, against 1,168 before).
    WRITE_BUFFER_BYTES = 256 * 1024
    BLOCK_CACHE_BYTES = 2 * 1024 * 1024
    _cache: Cache | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        shutil.rmtree(path, ignore_errors=True)  # a leftover from an earlier assignment is stale
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(self.WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_max_open_files(64)
        if DiskTimers._cache is None:
            DiskTimers._cache = Cache(self.BLOCK_CACHE_BYTES)
        table = BlockBasedOptions()
        table.set_block_cache(DiskTimers._cache)
        options.set_block_based_table_factory(table)
        self._db = Rdict(str(path), options)
        unlogged = WriteOptions()
        unlogged.disable_wal = True  # rebuilt from the states on restore: nothing to recover
        self._db.set_write_options(unlogged)
        #: The earliest due time in the queue; None when empty; NaN when not known.
        self._next: float | None = None
        #: No queue key sorts below this one: where the search for the first one starts. The
        #: keys popped before it are deleted, and RocksDB keeps their tombstones until a
        #: compaction; seeking from the queue's start would step over all of them every time.
        self._floor = _QUEUE
        self._closed = False

    def set(self, customer: str, due: float | None) -> None:
        db, name = self._db, customer.encode()
        old_raw = db.get(_DUE + name)
        old = _DUE_FORMAT.unpack(old_raw)[0] if old_raw is not None else None
        if old == due:
            return
        batch = WriteBatch(raw_mode=True)
        if old is not None:
            batch.delete(_QUEUE + time_key(old) + name)
        if due is None:
            batch.delete(_DUE + name)
        else:
            key = _QUEUE + time_key(due) + name
            batch.put(key, b"")
            batch.put(_DUE + name, _DUE_FORMAT.pack(due))
            if key < self._floor:
                self._floor = key
        db.write(batch)
        if due is not None and (self._next is None or due < self._next):
            self._next = due
        elif old is not None and old == self._next:
            self._next = _UNKNOWN

    def pop(self, now: float) -> tuple[float, str] | None:
        if self._next is None or self._next > now:  # NaN compares False: look
            return None
        first = self._first()
        if first is None:
            self._next = None
            return None
        key, due, customer = first
        self._floor = key
        if due > now:
            self._next = due
            return None
        # Its due time is known from the key: delete both keys without reading the customer's.
        batch = WriteBatch(raw_mode=True)
        batch.delete(key)
        batch.delete(_DUE + key[9:])
        self._db.write(batch)
        self._next = _UNKNOWN
        return due, customer

    def _first(self) -> tuple[bytes, float, str] | None:
        it = self._db.iter()
        it.seek(self._floor)
        if not it.valid():
            return None
        key: bytes = it.key()
        if not key.startswith(_QUEUE):
            return None
        return key, from_time_key(key[1:9]), key[9:].decode()

    def due_of(self, customer: str) -> float | None:
        raw = self._db.get(_DUE + customer.encode())
        return _DUE_FORMAT.unpack(raw)[0] if raw is not None else None

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        batch, pending = WriteBatch(raw_mode=True), 0
        for customer, due in entries:
            name = customer.encode()
            batch.put(_QUEUE + time_key(due) + name, b"")
            batch.put(_DUE + name, _DUE_FORMAT.pack(due))
            pending += 1
            if pending == 10_000:  # bounded batches: a restore of millions stays small in memory
                self._db.write(batch)
                batch, pending = WriteBatch(raw_mode=True), 0
        if pending:
            self._db.write(batch)
        self._next, self._floor = _UNKNOWN, _QUEUE

    def due_times(self) -> dict[str, float]:
        out = {}
        it = self._db.iter()
        it.seek(_DUE)
        while it.valid() and it.key().startswith(_DUE):
            out[it.key()[1:].decode()] = _DUE_FORMAT.unpack(it.value())[0]
            it.next()
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
            shutil.rmtree(self.path, ignore_errors=True)


_UNKNOWN = float("nan")

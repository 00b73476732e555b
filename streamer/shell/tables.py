"""The per-customer state table, co-partitioned with the input topics."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.types import TP

from streamer.core.state import CustomerState
from streamer.settings import Settings
from streamer.shell.app import app, settings
from streamer.shell.channels import inputs
from streamer.shell.flush_marks import MARK_KEY, FlushMarks, mark_value

log = logging.getLogger(__name__)

#: A write-back lets other tasks run after queueing this many states.
YIELD_EVERY = 200
#: Keys of erasure markers (``TableStore.mark_erased``): the prefix, then the SHA-256 (hex) of
#: the erased customer's id. A customer id has no control character (envelope schema), so no
#: customer's key begins with NUL. (The flush mark's key does too, and never reaches the
#: table: the write-back's readers drop it.)
ERASED_PREFIX = b"\x00erased:"


def erasure_marker(raw: bytes) -> tuple[int, float]:
    """(partition, erased up to) of a stored erasure marker."""
    doc = orjson.loads(raw)
    return int(doc["partition"]), float(doc["erased_at"])


def erasure_entry(key: bytes, raw: bytes) -> tuple[str, int, float]:
    """(id digest, partition, erased up to) of the marker stored under ``key``."""
    return (key[len(ERASED_PREFIX) :].decode(), *erasure_marker(raw))


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Memory bounds for each partition's RocksDB database (Faust's defaults are sized for a
    machine with the table's data in RAM: 3 × 64 MiB of write buffers and a 2 GiB block cache
    per database, so at bench sizes every state written stayed in memory)."""
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_bytes,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_bytes,
    }


class FlushMarkedTable(faust.Table):
    """A Faust table whose changelog is read back in whole write-backs only.

    Every write-back (:meth:`TableStore.flush`) ends with a flush mark per changelog partition;
    recovery and standbys apply a write-back's records only when a mark is read, and the owner
    of a partition drops the records of a write-back a kill interrupted and writes those
    customers again (see :mod:`streamer.shell.flush_marks`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: FlushMarks[Any] = FlushMarks()
        #: Gets ``{key: partition}`` of the records an unfinished write-back left behind, once
        #: recovery has dropped them (the state store writes those customers again).
        self.on_unfinished: Callable[[dict[bytes, int]], None] | None = None
        #: The partitions whose keys this worker kept after the last recovery.
        self.kept_partitions: set[int] | None = None

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        complete: list[Any] = []
        for event in batch:
            message = event.message
            complete.extend(self.marks.take(message.partition, message.offset, message.key, message.value, event))
        if complete:
            super().apply_changelog_batch(complete)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        # What is still held for an active partition is a write-back no mark completed: its
        # writer was killed before it finished, so its inputs were not committed either and
        # this worker processes them again. (A standby keeps reading; its mark may follow.)
        dropped = self.marks.drop({tp.partition for tp in active_tps})
        if dropped:
            log.warning("dropped %d changelog records of a write-back that a stopped worker did not finish; their events are processed again", len(dropped))
            if self.on_unfinished is not None:
                self.on_unfinished({event.message.key: event.message.partition for event in dropped})
        kept = {tp.partition for tp in active_tps | standby_tps}
        if self.kept_partitions is not None and self.kept_partitions - kept:
            gone = self.drop_partitions_not_in(kept)
            log.info("dropped %d states of partitions this worker no longer holds", gone)
        self.kept_partitions = kept
        await super().on_recovery_completed(active_tps, standby_tps)

    def drop_partitions_not_in(self, kept: set[int]) -> int:
        """Drop the states (and erasure markers) of partitions other than ``kept`` from the
        memory store; returns how many.

        Faust's memory store drops a revoked partition's keys by a key -> partition index
        that only its changelog reader fills; the write-back (``TableStore.flush``) writes
        around it, so states of partitions moved to another worker stayed (memory, and stale
        answers to forwarded queries). Kept as such, that index cost ~60 bytes a customer;
        this reads each key's partition from its value instead, once per revocation. RocksDB
        keeps a database per partition, which Faust closes: nothing to do there.
        """
        store = self.data
        items = getattr(store, "data", None)
        if settings.store != "memory" or not isinstance(items, dict):
            return 0
        gone = [key for key, raw in items.items() if raw is not None and _partition_of(key, raw) not in kept]
        for key in gone:
            items.pop(key, None)
            getattr(store, "_key_partition", {}).pop(key, None)
        return len(gone)


def _partition_of(key: bytes, raw: bytes) -> int:
    if key.startswith(ERASED_PREFIX):
        return erasure_marker(raw)[0]
    return CustomerState.from_bytes(raw).partition


customers = app.tables.add(
    FlushMarkedTable(
        app,
        name="customer-state",
        partitions=settings.partitions,
        beacon=app.tables.beacon,
        # key_type/value_type bytes make the changelog codec "raw" (recovery decodes with it);
        # the schema does the same for the table's own reads and writes.
        key_type=bytes,
        value_type=bytes,
        schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
        help="CustomerState per customer id (STATE_COMPRESSION: zstd, deflate or plain JSON), and erasure markers under ERASED_PREFIX",
        options=rocksdb_options(settings) if settings.store == "rocksdb" else None,
    )
)


class TableStore:
    """The Faust table as the core's ``StateStore``, written back *after* the outputs.

    A state change is kept here (readable at once) and reaches the table — the local store
    and the changelog — only in :meth:`flush`, which the consumer runs before every offset
    commit (see ``recovery.StreamerConsumer``):

    1. the outputs queued so far are acknowledged by the broker (the changed states are taken
       under :attr:`changing`, so all their outputs are queued by then);
    2. the changed states are written to the changelog and acknowledged;
    3. a flush mark per changelog partition closes the write-back (see
       :mod:`streamer.shell.flush_marks`): a reader applies a write-back whole or not at all;
    4. the local store takes the states (with RocksDB: then the offset of the mark, so a
       restart reads the changelog from there);
    5. the offsets are committed.

    A worker killed at any point therefore either has a record's state *and* its outputs, or
    re-reads the record and publishes its outputs again (with the same deterministic ids) —
    never the state without the outputs, and never half a write-back. Writing back at commit
    also means one changelog record per changed customer per commit, however many events it
    had.
    """

    def __init__(self, table: Any, codec: str = "zstd") -> None:
        self.table = table
        self.codec = codec  # STATE_COMPRESSION: how states are stored
        #: key -> (partition, state bytes or None for a deletion), newest change per key.
        self.pending: dict[bytes, tuple[int, bytes | None]] = {}
        #: The changes being written by :meth:`flush` (readable until they are in the table).
        self.flushing: dict[bytes, tuple[int, bytes | None]] = {}
        self._lock = asyncio.Lock()
        #: Held by whoever changes states and queues their outputs (the agents, the wall-clock
        #: tick) until the outputs are on the producer; :meth:`flush` takes the changed states
        #: under it, so every state it writes has all its outputs queued before it.
        self.changing = asyncio.Lock()

    def get(self, customer: str) -> CustomerState | None:
        key = customer.encode()
        if key[:1] == b"\x00":  # an erasure marker's key (the query API passes any id)
            return None
        entry = self.pending.get(key) or self.flushing.get(key)
        raw = entry[1] if entry is not None else self.table.get(key)
        return CustomerState.from_bytes(raw) if raw is not None else None

    def put(self, customer: str, state: CustomerState) -> None:
        self.pending[customer.encode()] = (state.partition, state.to_bytes(self.codec))

    def delete(self, customer: str, partition: int) -> None:
        self.pending[customer.encode()] = (partition, None)

    def mark_erased(self, digest: str, partition: int, at: float) -> None:
        """Keep the erasure marker in the table and its changelog, with the states: a restart
        reads it back (``agents.rebuild_partitions``) and still refuses the customer's older events."""
        self.pending[ERASED_PREFIX + digest.encode()] = (partition, orjson.dumps({"partition": partition, "erased_at": at}))

    def rewrite(self, unfinished: Mapping[bytes, int]) -> None:
        """Queue the recovered state of each customer an unfinished write-back wrote (``key ->
        partition``), a deletion where there is none, for the next write-back.

        Their records from the unfinished one stay in the changelog, and the next mark releases
        them to whoever reads it; this rewrite comes after them and before that mark, so it is
        what they end up with (see :mod:`streamer.shell.flush_marks`). A newer change of the
        customer, already pending, does the same.
        """
        for key, partition in unfinished.items():
            if key not in self.pending:
                with partition_context(partition):
                    self.pending[key] = (partition, self.table.get(key))

    async def _send(self, partition: int, key: bytes, value: bytes | None) -> Awaitable[Any]:
        """Queue one changelog record on the producer; returns its delivery (``.offset``).

        Straight to the Kafka client (Faust's ``Producer.send``), not ``Table.send_changelog``
        or ``Topic.send_soon``: their callback records each record's offset as persisted
        (RocksDB) as soon as it is acknowledged, before the write-back is whole, and their
        per-message futures and buffer cost ~65 µs a record — a write-back of 2,000 states
        held the event loop for ~130 ms of them (measured at 30,000 customers; the p99 of
        score latency came from these stalls, one per offset commit).
        """
        producer = self.table.app.producer
        return await producer.send(self.table.changelog_topic.get_topic_name(), key, value, partition, None, None)

    async def flush(self) -> int:
        """Write the states changed so far, after their outputs; returns how many."""
        async with self._lock:
            async with self.changing:
                if not self.pending:
                    return 0
                changed, self.pending = self.pending, {}
                self.flushing = changed  # still readable until they are in the table
            try:
                await self.table.app.producer.flush()  # the outputs of these changes are acknowledged first
                deliveries = []
                for key, (partition, raw) in changed.items():
                    deliveries.append(await self._send(partition, key, raw))
                    if len(deliveries) % YIELD_EVERY == 0:
                        # Let the agents go on meanwhile: queueing a few thousand states in one
                        # go held the event loop for tens of milliseconds (the p99 of latency).
                        await asyncio.sleep(0)
                written = await asyncio.gather(*deliveries)
                first: dict[int, int] = {}
                for (partition, _raw), meta in zip(changed.values(), written):
                    first[partition] = min(meta.offset, first.get(partition, meta.offset))
                marks = [await self._send(p, MARK_KEY, mark_value(offset)) for p, offset in first.items()]
                marked = await asyncio.gather(*marks)
            except BaseException:
                # Whatever reached the changelog has no mark: readers drop it. Keep the changes
                # for the next write-back (newer changes made meanwhile win).
                self.pending = {**changed, **self.pending}
                self.flushing = {}
                raise
            # No await from here on: each state moves from ``flushing`` to the table with no
            # reader in between. One partition context per partition, not per state.
            by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
            for key, (partition, raw) in changed.items():
                by_partition.setdefault(partition, []).append((key, raw))
            data = self.table.data
            for partition, items in by_partition.items():
                with partition_context(partition):
                    for key, raw in items:
                        if raw is None:
                            data.pop(key, None)
                        else:
                            data[key] = raw
            changelog = self.table.changelog_topic.get_topic_name()
            for partition, meta in zip(first, marked):
                data.set_persisted_offset(TP(changelog, partition), meta.offset)
            self.flushing = {}
            return len(changed)


store = TableStore(customers, codec=settings.state_compression)
customers.on_unfinished = store.rewrite
app.before_commit.append(store.flush)


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


@dataclass(frozen=True)
class _PartitionEvent:
    message: _Message


@contextmanager
def partition_context(partition: int) -> Iterator[None]:
    """Let code outside an agent (the wall-clock timer) write a partition's table keys.

    Faust picks the changelog partition — and, with RocksDB, the local shard — from the
    event being processed, and refuses table writes without one. The timer that fires due
    customers has none, so this stands in an event of the partition the customers live on
    (an input topic: co-partitioned with the table), for the duration of the block only.
    """
    stand_in = _PartitionEvent(_Message(inputs["orders"].get_topic_name(), partition))
    token = _current_event.set(weakref.ref(stand_in))
    try:
        yield
    finally:
        _current_event.reset(token)

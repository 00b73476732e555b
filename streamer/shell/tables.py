"""The per-customer state table, co-partitioned with the input topics."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event

from streamer.core.state import CustomerState
from streamer.shell.app import app, settings
from streamer.shell.channels import inputs

customers = app.Table(
    "customer-state",
    partitions=settings.partitions,
    # key_type/value_type bytes make the changelog codec "raw" (recovery decodes with it);
    # the schema does the same for the table's own reads and writes.
    key_type=bytes,
    value_type=bytes,
    schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
    help="CustomerState per customer id, JSON (orjson) encoded",
)


class TableStore:
    """The Faust table as the core's ``StateStore``, written back *after* the outputs.

    A state change is kept here (readable at once) and reaches the table — the local store
    and the changelog — only in :meth:`flush`, which the consumer runs before every offset
    commit (see ``recovery.StreamerConsumer``): first the outputs queued so far are
    acknowledged by the broker, then the changed states are written and acknowledged, then
    the offsets are committed. A worker killed at any point therefore either has a record's
    state *and* its outputs, or re-reads the record and publishes its outputs again (with the
    same deterministic ids) — never the state without the outputs. Writing back at commit
    also means one changelog record per changed customer per commit, however many events it
    had.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        #: key -> (partition, state bytes or None for a deletion), newest change per key.
        self.pending: dict[bytes, tuple[int, bytes | None]] = {}
        #: The changes being written by :meth:`flush` (readable until they are in the table).
        self.flushing: dict[bytes, tuple[int, bytes | None]] = {}
        self._lock = asyncio.Lock()

    def get(self, customer: str) -> CustomerState | None:
        key = customer.encode()
        entry = self.pending.get(key) or self.flushing.get(key)
        raw = entry[1] if entry is not None else self.table.get(key)
        return CustomerState.from_bytes(raw) if raw is not None else None

    def put(self, customer: str, state: CustomerState) -> None:
        self.pending[customer.encode()] = (state.partition, state.to_bytes())

    def delete(self, customer: str, partition: int) -> None:
        self.pending[customer.encode()] = (partition, None)

    async def flush(self) -> int:
        """Write the states changed so far, after their outputs; returns how many."""
        async with self._lock:
            if not self.pending:
                return 0
            changed, self.pending = self.pending, {}
            self.flushing = changed  # still readable while the outputs are awaited
            try:
                await self.table.app.producer.flush()  # the outputs of these changes are acknowledged first
            except BaseException:
                self.pending = {**changed, **self.pending}  # keep them for the next flush
                self.flushing = {}
                raise
            # No await from here to the changelog sends: each state moves from ``flushing``
            # to the table with no reader in between.
            sent = []
            for key, (partition, raw) in changed.items():
                with partition_context(partition):
                    if raw is None:
                        self.table.data.pop(key, None)
                    else:
                        self.table.data[key] = raw
                sent.append(self.table.send_changelog(partition, key, raw, value_serializer="raw"))
            self.flushing = {}
            await asyncio.gather(*sent)
            return len(changed)


store = TableStore(customers)
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

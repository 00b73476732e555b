"""The per-customer state table, co-partitioned with the input topics."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
    """Adapts the Faust table to the core's ``StateStore`` protocol."""

    def __init__(self, table: object) -> None:
        self.table = table

    def get(self, customer: str) -> CustomerState | None:
        raw = self.table.get(customer.encode())  # type: ignore[attr-defined]
        return CustomerState.from_bytes(raw) if raw is not None else None

    def put(self, customer: str, state: CustomerState) -> None:
        self.table[customer.encode()] = state.to_bytes()  # type: ignore[index]


store = TableStore(customers)


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

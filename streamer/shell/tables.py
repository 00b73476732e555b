"""The per-customer state table, co-partitioned with the input topics."""

from __future__ import annotations

import faust

from streamer.core.state import CustomerState
from streamer.shell.app import app, settings

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

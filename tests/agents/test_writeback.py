"""The state write-back: a change is readable at once, reaches the table and its changelog only
at flush, and only after the outputs queued before it are acknowledged; a failed flush keeps
the changes; the consumer runs the flush between choosing offsets and committing them."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from streamer.core.state import CustomerState
from streamer.shell import recovery, tables
from streamer.shell.app import app


def state(customer: str, partition: int = 0, n: int = 1) -> CustomerState:
    return CustomerState(customer=customer, partition=partition, orders={f"o{i}": [0.0, 1.0, 0.5, 0.0, 1] for i in range(n)})


@pytest.fixture
def order(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records, in order, the producer flushes and the changelog sends."""
    seen: list[Any] = []

    async def flush() -> None:
        seen.append("outputs flushed")

    def send_changelog(partition: int, key: bytes, value: bytes | None, **kw: Any) -> asyncio.Future:
        seen.append(("changelog", partition, key, value is not None))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    monkeypatch.setattr(app.producer, "flush", flush)
    monkeypatch.setattr(tables.customers, "send_changelog", send_changelog)
    return seen


async def test_changes_are_read_back_at_once_and_written_after_the_outputs(order: list[Any]) -> None:
    store = tables.TableStore(tables.customers)
    store.put("a", state("a", 1, n=1))
    store.put("a", state("a", 1, n=2))  # a second change of the same customer before the flush
    store.put("b", state("b", 0))
    assert len(store.get("a").orders) == 2 and tables.customers.get(b"a") is None
    assert await store.flush() == 2
    # One changelog record per changed customer, after the outputs were acknowledged.
    assert order == ["outputs flushed", ("changelog", 1, b"a", True), ("changelog", 0, b"b", True)]
    assert CustomerState.from_bytes(tables.customers.data[b"a"]).orders.keys() == {"o0", "o1"}
    assert not store.pending and await store.flush() == 0
    store.delete("b", 0)
    assert store.get("b") is None
    await store.flush()
    assert b"b" not in tables.customers.data and order[-1] == ("changelog", 0, b"b", False)


async def test_a_failed_flush_keeps_the_changes(monkeypatch: pytest.MonkeyPatch, order: list[Any]) -> None:
    store = tables.TableStore(tables.customers)
    store.put("c", state("c"))
    monkeypatch.setattr(app.producer, "flush", AsyncMock(side_effect=RuntimeError("broker gone")))
    with pytest.raises(RuntimeError):
        await store.flush()
    assert store.get("c") is not None and b"c" in store.pending and b"c" not in tables.customers.data
    assert not [o for o in order if o != "outputs flushed"]  # nothing reached the changelog


async def test_changes_made_while_the_outputs_are_awaited_stay_readable(monkeypatch: pytest.MonkeyPatch, order: list[Any]) -> None:
    store = tables.TableStore(tables.customers)
    store.put("d", state("d", n=1))
    gate = asyncio.Event()

    async def slow_flush() -> None:
        await gate.wait()

    monkeypatch.setattr(app.producer, "flush", slow_flush)
    flushing = asyncio.create_task(store.flush())
    await asyncio.sleep(0)
    assert len(store.get("d").orders) == 1  # being flushed: still readable
    store.put("d", state("d", n=3))  # an agent moves on meanwhile
    gate.set()
    await flushing
    assert len(store.get("d").orders) == 3  # the newer change wins, and waits for the next flush
    assert len(CustomerState.from_bytes(tables.customers.data[b"d"]).orders) == 1


async def test_the_consumer_flushes_between_choosing_and_committing_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    consumer = MagicMock(spec=recovery.StreamerConsumer)
    consumer.app = MagicMock(before_commit=[AsyncMock(side_effect=lambda: calls.append("hook"))])
    consumer._filter_committable_offsets = MagicMock(side_effect=lambda tps: calls.append("choose") or {"tp": 5})
    consumer._handle_attached = AsyncMock(side_effect=lambda offsets: calls.append("attached"))
    consumer._commit_offsets = AsyncMock(side_effect=lambda offsets, start_new_transaction: calls.append(f"commit {offsets}") or True)
    assert await recovery.StreamerConsumer._commit_tps(consumer, ["tp"], start_new_transaction=True)
    assert calls == ["choose", "hook", "attached", "commit {'tp': 5}"]
    assert tables.store.flush in app.before_commit

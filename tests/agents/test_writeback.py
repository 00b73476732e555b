"""The state write-back: a change is readable at once, reaches the table and its changelog only
at flush, and only after the outputs queued before it are acknowledged; each write-back ends
with a flush mark per changelog partition, and the table reads back only marked write-backs
(the customers of an unmarked one are written again); a failed flush keeps the changes; the
consumer runs the flush between choosing offsets and committing them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import orjson
import pytest
from faust.types import TP

from streamer.core.state import CustomerState
from streamer.shell import recovery, tables
from streamer.shell.app import app
from streamer.shell.flush_marks import MARK_KEY, mark_value


def state(customer: str, partition: int = 0, n: int = 1) -> CustomerState:
    return CustomerState(customer=customer, partition=partition, orders={f"o{i}": [0.0, 1.0, 0.5, 0.0, 1] for i in range(n)})


@pytest.fixture
def order(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records, in order, the producer flushes and the changelog sends (marks with their
    first offset); each changelog partition's offsets count from 100."""
    seen: list[Any] = []
    next_offset: dict[int, int] = {}

    async def flush() -> None:
        seen.append("outputs flushed")

    async def send(self: Any, partition: int, key: bytes, value: bytes | None) -> asyncio.Future:
        if key == MARK_KEY:
            seen.append(("mark", partition, orjson.loads(value)["from"]))
        else:
            seen.append(("changelog", partition, key, value is not None))
        offset = next_offset[partition] = next_offset.get(partition, 99) + 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(offset=offset))
        return fut

    monkeypatch.setattr(app.producer, "flush", flush)
    monkeypatch.setattr(tables.TableStore, "_send", send)
    return seen


async def test_changes_are_read_back_at_once_and_written_after_the_outputs(order: list[Any]) -> None:
    store = tables.TableStore(tables.customers)
    store.put("a", state("a", 1, n=1))
    store.put("a", state("a", 1, n=2))  # a second change of the same customer before the flush
    store.put("b", state("b", 0))
    assert len(store.get("a").orders) == 2 and tables.customers.get(b"a") is None
    assert await store.flush() == 2
    # One changelog record per changed customer, after the outputs were acknowledged.
    # A flush mark per partition closes the write-back, naming the offset it began at.
    assert order == ["outputs flushed", ("changelog", 1, b"a", True), ("changelog", 0, b"b", True), ("mark", 1, 100), ("mark", 0, 100)]
    assert CustomerState.from_bytes(tables.customers.data[b"a"]).orders.keys() == {"o0", "o1"}
    assert not store.pending and await store.flush() == 0
    store.delete("b", 0)
    assert store.get("b") is None
    await store.flush()
    assert b"b" not in tables.customers.data and order[-2:] == [("changelog", 0, b"b", False), ("mark", 0, 102)]


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


async def test_the_write_back_waits_while_a_record_is_being_published(order: list[Any]) -> None:
    """An agent holds ``changing`` from a state change until its outputs are queued: the
    write-back may not take that state before all its outputs are on the producer."""
    store = tables.TableStore(tables.customers)
    await store.changing.acquire()  # an agent between store.put and its last send
    store.put("g", state("g", n=1))
    flushing = asyncio.create_task(store.flush())
    for _ in range(10):
        await asyncio.sleep(0)
    assert order == [] and b"g" in store.pending and not flushing.done()
    store.put("g", state("g", n=2))  # the same record's change is complete only now
    store.changing.release()
    assert await flushing == 1
    assert order[0] == "outputs flushed"
    assert len(CustomerState.from_bytes(tables.customers.data[b"g"]).orders) == 2


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


async def test_a_failed_changelog_write_keeps_the_changes_and_writes_no_mark(monkeypatch: pytest.MonkeyPatch, order: list[Any]) -> None:
    store = tables.TableStore(tables.customers)
    store.put("e", state("e", 0))
    store.put("f", state("f", 0))
    real_send = tables.TableStore._send

    async def send_then_fail(self: Any, partition: int, key: bytes, value: bytes | None) -> Any:
        if key == b"f":  # the broker stops answering halfway through the write-back
            order.append(("changelog failed", key))
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(RuntimeError("broker gone"))
            return fut
        return await real_send(self, partition, key, value)

    monkeypatch.setattr(tables.TableStore, "_send", send_then_fail)
    with pytest.raises(RuntimeError):
        await store.flush()
    assert not [o for o in order if o[0] == "mark"]  # readers will drop the half-written record of "e"
    assert b"e" not in tables.customers.data and b"f" not in tables.customers.data
    assert store.pending.keys() == {b"e", b"f"} and store.get("e") is not None
    monkeypatch.setattr(tables.TableStore, "_send", real_send)
    assert await store.flush() == 2  # the next write-back writes both, and marks them
    assert order[-1][0] == "mark" and b"e" in tables.customers.data and b"f" in tables.customers.data


def changelog_event(partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=TP("changelog", partition), partition=partition, offset=offset, key=key, value=value))


async def test_the_table_reads_back_whole_write_backs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    table = tables.customers
    applied: list[tuple[int, bytes]] = []
    unfinished: list[dict[bytes, int]] = []
    # Faust's own parts stand in: what reaches the store, and the recovery callbacks.
    monkeypatch.setattr(tables.faust.Table, "apply_changelog_batch", lambda self, batch: applied.extend((e.message.offset, e.message.key) for e in batch))
    monkeypatch.setattr(tables.faust.Table, "on_recovery_completed", AsyncMock())
    monkeypatch.setattr(table, "marks", tables.FlushMarks())
    monkeypatch.setattr(table, "on_unfinished", unfinished.append)
    # Partition 0: a whole write-back, then one a kill interrupted (a@13), which recovery ends
    # with; then the next owner's, which writes a again before its mark.
    # Partition 1: a write-back whose mark is not in when recovery ends.
    table.apply_changelog_batch([changelog_event(0, 10, b"a", b"1"), changelog_event(0, 11, b"b", b"1"), changelog_event(1, 5, b"c", b"1")])
    assert applied == []  # nothing before its mark
    table.apply_changelog_batch([changelog_event(0, 12, MARK_KEY, mark_value(10)), changelog_event(0, 13, b"a", b"2")])
    assert applied == [(10, b"a"), (11, b"b")]
    await table.on_recovery_completed({TP("changelog", 0), TP("changelog", 1)}, set())
    assert unfinished == [{b"a": 0, b"c": 1}]  # dropped, and handed over to be written again
    assert applied == [(10, b"a"), (11, b"b")]
    table.apply_changelog_batch([changelog_event(0, 14, b"a", b"1"), changelog_event(0, 15, b"b", b"2"), changelog_event(0, 16, MARK_KEY, mark_value(14))])
    table.apply_changelog_batch([changelog_event(1, 6, MARK_KEY, mark_value(6))])
    assert applied == [(10, b"a"), (11, b"b"), (14, b"a"), (15, b"b")]  # c@5 stays dropped
    assert table.marks.dropped == 2


async def test_a_mark_releases_write_backs_whose_marks_compaction_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The changelog is compacted, and every mark has the same key: the log cleaner keeps only
    a partition's newest. A reader then finds several write-backs before one mark, all whole."""
    table = tables.customers
    applied: list[tuple[int, bytes]] = []
    monkeypatch.setattr(tables.faust.Table, "apply_changelog_batch", lambda self, batch: applied.extend((e.message.offset, e.message.key) for e in batch))
    monkeypatch.setattr(table, "marks", tables.FlushMarks())
    # What is left of [a@10 mark@11] [b@20 mark@21] [a@30 c@31 mark@32] after cleaning:
    # a@10 went (a is newer at 30), and so did the marks at 11 and 21.
    table.apply_changelog_batch([changelog_event(0, 20, b"b", b"1"), changelog_event(0, 30, b"a", b"2"), changelog_event(0, 31, b"c", b"1")])
    table.apply_changelog_batch([changelog_event(0, 32, MARK_KEY, mark_value(30))])
    assert applied == [(20, b"b"), (30, b"a"), (31, b"c")]  # b, whose own mark is gone, too
    assert table.marks.dropped == 0


async def test_customers_an_unfinished_write_back_left_are_written_again(order: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    store = tables.TableStore(tables.customers)
    monkeypatch.setitem(tables.customers.data, b"g", state("g", 1).to_bytes())
    store.put("h", state("h", 0, n=3))  # changed again since: the newer change is what is written
    store.rewrite({b"g": 1, b"h": 0, b"i": 0})  # i: no recovered state (it was new)
    assert store.pending[b"g"] == (1, tables.customers.data[b"g"])
    assert len(store.get("h").orders) == 3
    assert store.pending[b"i"] == (0, None)
    assert await store.flush() == 3
    assert sorted(o[1:] for o in order if o[0] == "changelog") == [(0, b"h", True), (0, b"i", False), (1, b"g", True)]
    assert sorted(o[1] for o in order if o[0] == "mark") == [0, 1]
"""The Faust app takes the worker's consumer and producer sizes from the settings."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import AsyncMock

import pytest
from faust import Table
from faust.tables import TableManager

from streamer.settings import SETTINGS_DOC
from streamer.shell.app import StartNowTableManager, app, settings


def test_the_app_takes_the_sizes_from_the_settings() -> None:
    conf = app.conf
    assert conf.broker_max_poll_records == settings.consumer_poll_records
    assert conf.consumer_max_fetch_size == settings.consumer_fetch_bytes
    assert conf.producer_max_batch_size == settings.producer_batch_bytes
    assert conf.stream_buffer_maxsize == settings.stream_buffer_events
    # Faust's own default hands over everything fetched at once; ours is bounded.
    assert int(SETTINGS_DOC["CONSUMER_POLL_RECORDS"][0]) == settings.consumer_poll_records == 250


def test_rocksdb_databases_get_bounded_write_buffers_and_cache(tmp_path, monkeypatch) -> None:
    # Faust's defaults (3 × 64 MiB of write buffers, a 2 GiB block cache, per partition's
    # database) kept every state written in memory at bench sizes. The table passes ours.
    from faust.stores.rocksdb import RocksDBOptions

    from streamer.settings import load
    from streamer.shell.tables import rocksdb_options

    monkeypatch.setenv("ROCKSDB_WRITE_BUFFER_BYTES", "1048576")
    monkeypatch.setenv("ROCKSDB_BLOCK_CACHE_BYTES", "8388608")
    options = RocksDBOptions(**rocksdb_options(load()))
    # Unknown names would land in extra_options and be ignored silently.
    assert not options.extra_options
    assert (options.write_buffer_size, options.max_write_buffer_number, options.block_cache_size) == (1048576, 2, 8388608)
    db = options.open(tmp_path / "partition-0")
    db[b"c-1"] = b"state"
    assert db[b"c-1"] == b"state"
    db.close()
    monkeypatch.delenv("ROCKSDB_WRITE_BUFFER_BYTES")
    monkeypatch.delenv("ROCKSDB_BLOCK_CACHE_BYTES")
    defaults = load()
    assert (defaults.rocksdb_write_buffer_bytes, defaults.rocksdb_block_cache_bytes) == (4 * 1024 * 1024, 16 * 1024 * 1024)


async def test_the_table_manager_starts_its_tables_without_faust_s_one_second_sleep(monkeypatch) -> None:
    # Faust's manager sleeps 1 s before it registers the changelogs and starts recovery; every
    # table here exists once the modules are imported, so that second only delayed readiness.
    manager = app.tables
    assert type(manager) is StartNowTableManager
    calls: list[str] = []
    monkeypatch.setattr(manager, "sleep", AsyncMock(side_effect=lambda seconds: calls.append(f"sleep {seconds}")))
    monkeypatch.setattr(manager, "_update_channels", AsyncMock(side_effect=lambda: calls.append("channels")))
    recovery = SimpleNamespace(start=AsyncMock(side_effect=lambda: calls.append("recovery")))
    monkeypatch.setattr(type(manager), "recovery", recovery)

    await manager.on_start()
    assert calls == ["channels", "recovery"]

    calls.clear()
    await TableManager.on_start(manager)  # Faust's own, for comparison
    assert calls == ["sleep 1.0", "channels", "recovery"]


def test_a_table_added_after_the_tables_are_registered_is_refused() -> None:
    # What makes skipping that sleep safe: a table defined too late fails loudly rather than
    # going unrecovered.
    manager = TableManager(app)  # a fresh one: the app's own keeps its tables
    manager._tables_finalized.set()  # what registering the changelogs (_update_channels) does first
    with pytest.raises(RuntimeError, match="Too late to add tables"):
        manager.add(Table(app, name="late-table", partitions=1))  # app.Table would add it to the app's

"""The Faust app takes the worker's consumer and producer sizes from the settings."""

from __future__ import annotations

from streamer.settings import SETTINGS_DOC
from streamer.shell.app import app, settings


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

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

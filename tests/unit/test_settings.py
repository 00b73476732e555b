"""Settings come from the environment, are validated with clear messages, and are documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer import settings
from streamer.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_load() -> None:
    loaded = settings.load()
    assert loaded.partitions == 8
    assert loaded.topics["customer-scores"] == "customer-scores"
    assert loaded.limits.fx_rates == {"USD": 1.0}
    assert loaded.scoring.lapse_days == 365


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [name for name in settings.SETTINGS_DOC if f"| `{name}` |" not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STORE", "redis", "STORE='redis'"),
        ("PARTITIONS", "eight", "PARTITIONS='eight' is not a number"),
        ("PARTITIONS", "0", "must be at least 1"),
        ("FX_RATES", "EUR:1.1", "FX_RATES item 'EUR:1.1'"),
        ("AT_RISK_THRESHOLD", "1.5", "AT_RISK_THRESHOLD must be between 0 and 1"),
        ("TOPIC_SCORES", "orders", "topic names must be distinct"),
        ("STATE_COMPRESSION", "lz4", "STATE_COMPRESSION='lz4': use one of zstd, deflate, none"),
    ],
)
def test_invalid_settings_fail_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.load()


def test_fx_rates_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FX_RATES", "eur=1.08, GBP=1.27")
    assert settings.load().limits.fx_rates == {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}


def test_the_readme_example_event_is_valid() -> None:
    import json
    import re

    from streamer import contracts

    block = re.search(r"```json\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    event = json.loads(block.group(1))
    assert contracts.first_error(event) is None
    assert contracts.INPUT_TYPES[event["type"]] == "orders"

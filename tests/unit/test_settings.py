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


def test_every_setting_is_in_the_readme_table_as_documented() -> None:
    """SETTINGS_DOC is the table's source: each row is its name, default and text, word for word."""
    text = README.read_text()
    rows = {name: f"| `{name}` | {f'`{default}`' if default else '(empty)'} | {doc} |" for name, (default, doc) in settings.SETTINGS_DOC.items()}
    assert [name for name, row in rows.items() if row not in text] == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STORE", "redis", "STORE='redis'"),
        ("PARTITIONS", "eight", "PARTITIONS='eight' is not a number"),
        ("PARTITIONS", "0", "must be at least 1"),
        ("FX_RATES", "EUR:1.1", "FX_RATES item 'EUR:1.1'"),
        ("AT_RISK_THRESHOLD", "1.5", "AT_RISK_THRESHOLD='1.5': must be at most 0.999"),
        ("TOPIC_SCORES", "orders", "topic names must be distinct"),
        ("STATE_COMPRESSION", "lz4", "STATE_COMPRESSION='lz4': use one of zstd, deflate, none"),
        # Overrides get the rules file's own checks: finite, and the same bounds.
        ("DISCOUNT_RATE", "nan", "DISCOUNT_RATE='nan' must be a finite number"),
        ("LAPSE_DAYS", "inf", "LAPSE_DAYS='inf' must be a finite number"),
        ("MODEL_REFIT_SECONDS", "nan", "MODEL_REFIT_SECONDS='nan' must be a finite number"),
        ("DISCOUNT_RATE", "50", "DISCOUNT_RATE='50': must be at most 10, got 50.0 (rules file key scores.annual_discount_rate)"),
        ("VALUE_TIER_HYSTERESIS", "0.9", "VALUE_TIER_HYSTERESIS='0.9': must be at most 0.5"),
        ("AT_RISK_THRESHOLD", "0", "AT_RISK_THRESHOLD='0': must be greater than 0"),
        ("LOYAL_ORDERS", "0", "LOYAL_ORDERS='0': must be at least 1"),
        ("FX_RATES", "EUR=0", "FX_RATES item 'EUR=0': the rate must be a positive number"),
        ("FX_RATES", "GBP=-1", "FX_RATES item 'GBP=-1': the rate must be a positive number"),
        ("FX_RATES", "EUR=nan", "FX_RATES item 'EUR=nan': the rate must be a positive number"),
        ("FX_RATES", "EURO=1.1", "FX_RATES item 'EURO=1.1': 'EURO' is not an ISO 4217 code"),
        ("WEB_PORT", "70000", "WEB_PORT='70000' must be at most 65535"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL='verbose': use one of debug, info, warning, error, critical"),
        ("PURCHASE_DAY_TIMEZONE", "Eastern", "PURCHASE_DAY_TIMEZONE='Eastern': unknown time zone 'Eastern' (an IANA name such as 'Europe/Berlin') (rules file key scores.purchase_day_timezone)"),
    ],
)
def test_invalid_settings_fail_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.load()


def test_overrides_within_bounds_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"DISCOUNT_RATE": "0.2", "LOYAL_ORDERS": "4", "VALUE_TIER_HYSTERESIS": "0.1", "VALUE_RANK_EXACT_LIMIT": "1000", "PURCHASE_DAY_TIMEZONE": "America/New_York"}
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    scoring = settings.load().scoring
    assert (scoring.annual_discount_rate, scoring.loyal_orders, scoring.value_tier_hysteresis, scoring.value_rank_exact_limit) == (0.2, 4, 0.1, 1000)
    assert scoring.purchase_day_timezone == "America/New_York" and scoring.day_of(1_735_689_600.0) == 20_088.0  # 2024-12-31 there


@pytest.mark.parametrize(("value", "python", "faust"), [("warning", "warning", "warn"), ("WARN", "warning", "warn"), ("critical", "critical", "crit"), ("Debug", "debug", "debug"), ("", "info", "info")])
def test_log_levels_in_python_and_faust_spelling(monkeypatch: pytest.MonkeyPatch, value: str, python: str, faust: str) -> None:
    """The README's `warning` once reached Faust's `--loglevel` as is, which only takes
    crit/error/warn/info/debug: the worker exited at start (after waiting for the broker)."""
    from faust.cli.base import LOGLEVELS

    monkeypatch.setenv("LOG_LEVEL", value)
    loaded = settings.load().log_level
    assert loaded == python
    assert settings.LOG_LEVELS[loaded] == faust and faust.upper() in LOGLEVELS


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

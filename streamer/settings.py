"""Settings from the environment (12-factor): every knob has a default and a doc line.

:data:`SETTINGS_DOC` is the single source of the README's configuration table and of the
deploy/ checks, so a variable cannot be used somewhere without being documented here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from streamer.core.config import Limits, ScoringConfig
from streamer.errors import ConfigError

#: name -> (default, description). Defaults are strings, as in the environment.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "KAFKA_BOOTSTRAP": ("", "Kafka bootstrap servers (host:port,...). Empty: `streamer demo` starts the embedded broker."),
    "STREAMER_APP_ID": ("clv-streamer", "Faust app id: consumer group and prefix of table changelog topics."),
    "TOPIC_ORDERS": ("orders", "Input topic for Order Completed / Order Refunded."),
    "TOPIC_EMAIL": ("email-events", "Input topic for email events and Survey Answered."),
    "TOPIC_COMMUNITY": ("community-events", "Input topic for community events."),
    "TOPIC_SCORES": ("customer-scores", "Output: score updates, compacted, keyed by customer id."),
    "TOPIC_SEGMENTS": ("segment-changes", "Output: segment changes, keyed by customer id."),
    "TOPIC_TRIGGERS": ("campaign-triggers", "Output: campaign triggers (contract only so far)."),
    "TOPIC_DEAD_LETTER": ("dead-letter", "Output: rejected inputs with reason, provenance and raw bytes."),
    "TOPIC_MODELS": ("model-state", "Compacted: the fitted population parameters (and learned models), versioned; read at start."),
    "PARTITIONS": ("8", "Partitions of the input topics and the state table (must match: co-partitioned)."),
    "OUTPUT_PARTITIONS": ("8", "Partitions of the output topics, when the worker creates them."),
    "REPLICATION_FACTOR": ("1", "Replication factor of topics the worker creates (3 on a production cluster)."),
    "STORE": ("memory", "State table store: `memory` or `rocksdb` (local RocksDB files under DATA_DIR)."),
    "DATA_DIR": ("./data", "Where the worker keeps local table data (RocksDB files)."),
    "WEB_HOST": ("127.0.0.1", "Address of the worker's web server (/metrics, health)."),
    "WEB_PORT": ("6066", "Port of the worker's web server."),
    "LOG_LEVEL": ("info", "Worker log level (debug, info, warning, error)."),
    "MAX_EVENT_BYTES": ("65536", "Inputs larger than this go to dead-letter as `oversized`."),
    "MAX_FUTURE_SKEW_SECONDS": ("86400", "Event times later than now + this go to dead-letter as `absurd_value`."),
    "REPORTING_CURRENCY": ("USD", "Currency every amount is converted to."),
    "FX_RATES": ("", "Extra accepted currencies, `EUR=1.08,GBP=1.27` (reporting-currency units per unit)."),
    "DISCOUNT_RATE": ("0.10", "Annual discount rate of the formula CLV."),
    "LIFETIME_YEARS": ("3", "Expected relationship duration (years) of the formula CLV."),
    "PRIOR_INTERVAL_DAYS": ("90", "Prior days between purchases for customers with few orders."),
    "AT_RISK_THRESHOLD": ("0.6", "Churn risk at which a customer becomes `at_risk`."),
    "LAPSE_DAYS": ("365", "Days without an order after which a customer is `lapsed`."),
    "LOYAL_ORDERS": ("3", "Purchase days within LOYAL_WINDOW_DAYS that make a customer `loyal`."),
    "LOYAL_WINDOW_DAYS": ("180", "Window of the loyal rule."),
    "VALUE_TIER_MIN_POPULATION": ("50", "Scored customers a partition needs before value tiers are assigned."),
    "VALUE_TIER_HYSTERESIS": ("0.05", "Quantile margin a customer must cross beyond its tier's band before the tier changes."),
    "MODEL_REFIT_SECONDS": ("300", "Interval of the background refit of the BG/NBD and Gamma-Gamma population models."),
    "BTYD_HORIZON_DAYS": ("365", "Horizon of the buy-till-you-die predictions (expected purchases, P(no purchase), CLV)."),
    "LEARN_HORIZON_DAYS": ("90", "Horizon of the online learners' delayed labels: a prediction is labelled this long after, in event time."),
    "CONSUMER_SESSION_TIMEOUT": ("10", "Kafka consumer session timeout (s); low so a dead worker's partitions move fast."),
    "CONSUMER_HEARTBEAT_INTERVAL": ("1", "Kafka consumer heartbeat interval (s)."),
    "CONSUMER_REBALANCE_TIMEOUT": ("10", "Max time (s) a rebalance waits for members; low so startup joins fast."),
    "PRODUCER_LINGER_MS": ("5", "Producer linger: how long sends wait to batch."),
}


def _env(name: str) -> str:
    return os.environ.get(name, SETTINGS_DOC[name][0]).strip()


def _number(name: str, cast: Callable[[str], float], minimum: float | None = None) -> float:
    raw = _env(name)
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _fx_rates(reporting: str) -> dict[str, float]:
    rates = {reporting: 1.0}
    raw = _env("FX_RATES")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        code, _, rate = item.partition("=")
        try:
            rates[code.strip().upper()] = float(rate)
        except ValueError:
            raise ConfigError(f"FX_RATES item {item!r} must look like EUR=1.08") from None
    return rates


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    app_id: str
    topics: dict[str, str]  # logical role -> actual topic name
    partitions: int
    output_partitions: int
    replication_factor: int
    store: str
    data_dir: str
    web_host: str
    web_port: int
    log_level: str
    session_timeout: float
    heartbeat_interval: float
    rebalance_timeout: float
    linger_ms: int
    model_refit_seconds: float
    limits: Limits = field(default_factory=Limits)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    @property
    def input_roles(self) -> tuple[str, ...]:
        return ("orders", "email-events", "community-events")


def load() -> Settings:
    """Read and validate every setting; raises :class:`ConfigError` with a clear message."""
    store = _env("STORE").lower()
    if store not in ("memory", "rocksdb"):
        raise ConfigError(f"STORE={store!r}: use 'memory' or 'rocksdb'")
    reporting = _env("REPORTING_CURRENCY").upper()
    topics = {
        "orders": _env("TOPIC_ORDERS"),
        "email-events": _env("TOPIC_EMAIL"),
        "community-events": _env("TOPIC_COMMUNITY"),
        "customer-scores": _env("TOPIC_SCORES"),
        "segment-changes": _env("TOPIC_SEGMENTS"),
        "campaign-triggers": _env("TOPIC_TRIGGERS"),
        "dead-letter": _env("TOPIC_DEAD_LETTER"),
        "model-state": _env("TOPIC_MODELS"),
    }
    if len(set(topics.values())) != len(topics):
        raise ConfigError(f"topic names must be distinct: {topics}")
    threshold = _number("AT_RISK_THRESHOLD", float)
    if not 0 < threshold < 1:
        raise ConfigError("AT_RISK_THRESHOLD must be between 0 and 1")
    return Settings(
        kafka_bootstrap=_env("KAFKA_BOOTSTRAP"),
        app_id=_env("STREAMER_APP_ID"),
        topics=topics,
        partitions=int(_number("PARTITIONS", int, 1)),
        output_partitions=int(_number("OUTPUT_PARTITIONS", int, 1)),
        replication_factor=int(_number("REPLICATION_FACTOR", int, 1)),
        store=store,
        data_dir=_env("DATA_DIR"),
        web_host=_env("WEB_HOST"),
        web_port=int(_number("WEB_PORT", int, 0)),
        log_level=_env("LOG_LEVEL").lower(),
        session_timeout=_number("CONSUMER_SESSION_TIMEOUT", float, 1),
        heartbeat_interval=_number("CONSUMER_HEARTBEAT_INTERVAL", float, 0.1),
        rebalance_timeout=_number("CONSUMER_REBALANCE_TIMEOUT", float, 1),
        linger_ms=int(_number("PRODUCER_LINGER_MS", int, 0)),
        model_refit_seconds=_number("MODEL_REFIT_SECONDS", float, 1),
        limits=Limits(
            max_event_bytes=int(_number("MAX_EVENT_BYTES", int, 256)),
            max_future_skew_s=_number("MAX_FUTURE_SKEW_SECONDS", float, 0),
            reporting_currency=reporting,
            fx_rates=_fx_rates(reporting),
        ),
        scoring=ScoringConfig(
            annual_discount_rate=_number("DISCOUNT_RATE", float, 0),
            expected_lifetime_years=_number("LIFETIME_YEARS", float, 0),
            prior_interval_days=_number("PRIOR_INTERVAL_DAYS", float, 1),
            at_risk_threshold=threshold,
            lapse_days=_number("LAPSE_DAYS", float, 1),
            loyal_orders=int(_number("LOYAL_ORDERS", int, 1)),
            loyal_window_days=_number("LOYAL_WINDOW_DAYS", float, 1),
            value_tier_min_population=int(_number("VALUE_TIER_MIN_POPULATION", int, 1)),
            value_tier_hysteresis=_number("VALUE_TIER_HYSTERESIS", float, 0),
            btyd_horizon_days=_number("BTYD_HORIZON_DAYS", float, 1),
            learn_horizon_days=_number("LEARN_HORIZON_DAYS", float, 1),
        ),
    )

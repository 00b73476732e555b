"""Settings from the environment (12-factor): every knob has a default and a doc line.

:data:`SETTINGS_DOC` is the single source of the README's configuration table and of the
deploy/ checks, so a variable cannot be used somewhere without being documented here.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from streamer import kafka_security, rules
from streamer.kafka_security import KafkaSecurity
from streamer.core.config import Limits, ScoringConfig
from streamer.core.state import CODECS
from streamer.errors import ConfigError

#: name -> (default, description). Defaults are strings, as in the environment.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "KAFKA_BOOTSTRAP": ("", "Kafka bootstrap servers (host:port,...). Empty: `streamer demo` starts the embedded broker."),
    "KAFKA_SECURITY_PROTOCOL": ("PLAINTEXT", "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`, for every Kafka client of the service."),
    "KAFKA_SASL_MECHANISM": ("SCRAM-SHA-512", "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a SASL protocol)."),
    "KAFKA_SASL_USERNAME": ("", "SASL user name."),
    "KAFKA_SASL_PASSWORD": ("", "SASL password (never logged)."),
    "KAFKA_SSL_CAFILE": ("", "CA bundle (PEM) the brokers' certificates are checked against; empty: the system store."),
    "KAFKA_SSL_CERTFILE": ("", "Client certificate (PEM) for mutual TLS."),
    "KAFKA_SSL_KEYFILE": ("", "Its private key (PEM)."),
    "KAFKA_SSL_CHECK_HOSTNAME": ("true", "Check that the broker's certificate names the host connected to."),
    "STREAMER_APP_ID": ("clv-streamer", "Faust app id: consumer group and prefix of table changelog topics."),
    "TOPIC_ORDERS": ("orders", "Input topic for Order Completed / Order Refunded."),
    "TOPIC_EMAIL": ("email-events", "Input topic for email events and Survey Answered."),
    "TOPIC_COMMUNITY": ("community-events", "Input topic for community events."),
    "TOPIC_ERASURE": ("erasure-requests", "Input topic for Erasure Requested (right to erasure); same partitions and key as the other inputs."),
    "TOPIC_SCORES": ("customer-scores", "Output: score updates, compacted, keyed by customer id."),
    "TOPIC_SEGMENTS": ("segment-changes", "Output: segment changes, keyed by customer id."),
    "TOPIC_TRIGGERS": ("campaign-triggers", "Output: campaign triggers (onboarding, upsell, win-back...), keyed by customer id."),
    "TOPIC_AUDIT": ("audit", "Output: Customer Erased audit records, keyed by request id (no customer id)."),
    "TOPIC_DEAD_LETTER": ("dead-letter", "Output: rejected inputs with reason, provenance and raw bytes."),
    "TOPIC_MODELS": ("model-state", "Compacted: the fitted population parameters (and learned models), versioned; read at start."),
    "PARTITIONS": ("8", "Partitions of the input topics and the state table (must match: co-partitioned)."),
    "OUTPUT_PARTITIONS": ("8", "Partitions of the output topics, when the worker creates them."),
    "REPLICATION_FACTOR": ("1", "Replication factor of topics the worker creates (3 on a production cluster)."),
    "STORE": ("memory", "State table store: `memory` or `rocksdb` (local RocksDB files under DATA_DIR). With `rocksdb` the customers' due times are kept in RocksDB too, so the worker's memory does not grow with its customers."),
    "DATA_DIR": ("./data", "Where the worker keeps local table data (RocksDB files)."),
    "ROCKSDB_WRITE_BUFFER_BYTES": ("4194304", "With STORE=rocksdb: the write buffer (memtable) of each partition's database, at most two per database. Faust's own is 64 MiB, three per database: every state written stayed in memory until a partition had written 64 MiB."),
    "ROCKSDB_BLOCK_CACHE_BYTES": ("16777216", "With STORE=rocksdb: the block cache of each partition's database, for states read from disk (Faust's own: 2 GiB each)."),
    "WEB_HOST": ("127.0.0.1", "Address of the worker's web server (/metrics, health)."),
    "WEB_PORT": ("6066", "Port of the worker's web server."),
    "WEB_ADVERTISED_URL": ("", "How other workers reach this one's web server, for the query API's routing (e.g. `http://clv-streamer-0.clv-streamer:6066`). Empty: `http://WEB_HOST:WEB_PORT`, with the host name when WEB_HOST is 0.0.0.0."),
    "API_TOKEN": ("", "If set, the query API and dashboard require it (`Authorization: Bearer <token>`, or `?token=` for a browser); /metrics, /healthz and /readyz stay open."),
    "LOG_LEVEL": ("info", "Log level of the worker and the other commands: `debug`, `info`, `warning`, `error` or `critical`."),
    "STREAMER_CONFIG": ("", "Rules file (TOML): thresholds, horizons, segment families, campaign triggers. Empty: the defaults of `streamer/rules.default.toml`. The variables below marked *override* win over it."),
    "CLOCK": ("event", "`event`: timers follow each partition's newest event time (replays give the same triggers as living through them). `wall`: they also follow the wall clock, so quiet partitions fire on time."),
    "CLOCK_TICK_SECONDS": ("1", "With CLOCK=wall: how often the due-queues are checked against the wall clock."),
    "MAX_EVENT_BYTES": ("65536", "Inputs larger than this go to dead-letter as `oversized`."),
    "MAX_FUTURE_SKEW_SECONDS": ("3600", "Event times later than now + this go to dead-letter as `absurd_value`: an event from the future would move its partition's event-time clock ahead and fire the timers of every customer there early."),
    "REPORTING_CURRENCY": ("USD", "Currency every amount is converted to."),
    "FX_RATES": ("", "Extra accepted currencies, `EUR=1.08,GBP=1.27` (reporting-currency units per unit)."),
    "DISCOUNT_RATE": ("0.10", "*Override.* Annual discount rate of the formula CLV."),
    "LIFETIME_YEARS": ("3", "*Override.* Expected relationship duration (years) of the formula CLV."),
    "PRIOR_INTERVAL_DAYS": ("90", "*Override.* Prior days between purchases for customers with few orders."),
    "PURCHASE_DAY_TIMEZONE": ("UTC", "*Override.* The shop's time zone (IANA name, e.g. `America/New_York`): purchase days, which count same-day orders as one purchase, are calendar days there (daylight saving time followed)."),
    "AT_RISK_THRESHOLD": ("0.6", "*Override.* Churn risk at which a customer becomes `at_risk`."),
    "LAPSE_DAYS": ("365", "*Override.* Days without an order after which a customer is `lapsed`."),
    "LOYAL_ORDERS": ("3", "*Override.* Purchase days within LOYAL_WINDOW_DAYS that make a customer `loyal`."),
    "LOYAL_WINDOW_DAYS": ("180", "*Override.* Window of the loyal rule."),
    "VALUE_TIER_MIN_POPULATION": ("50", "*Override.* Scored customers a partition needs before value tiers are assigned."),
    "VALUE_TIER_HYSTERESIS": ("0.05", "*Override.* Quantile margin a customer must cross beyond its tier's band before the tier changes."),
    "VALUE_RANK_EXACT_LIMIT": ("25000", "*Environment only* (the rules file has no such key). Customers per partition up to which the value-tier ranking is exact; beyond, a fixed-size log-scale sketch (64 bins per doubling of CLV) whose memory and update cost do not grow with customers."),
    "REFIT_SAMPLE_PER_PARTITION": ("25000", "*Environment only* (the rules file has no such key). Most customers per partition the population refit reads: beyond, a uniform sample by hash of the customer id (the same customers whatever the order of events)."),
    "MODEL_REFIT_SECONDS": ("300", "Interval of the background refit of the BG/NBD and Gamma-Gamma population models."),
    "BTYD_HORIZON_DAYS": ("365", "*Override.* Horizon of the buy-till-you-die predictions (expected purchases, P(no purchase), CLV)."),
    "LEARN_HORIZON_DAYS": ("90", "*Override.* Horizon of the online learners' delayed labels: a prediction is labelled this long after, in event time."),
    "CONSUMER_SESSION_TIMEOUT": ("10", "Kafka consumer session timeout (s); low so a dead worker's partitions move fast."),
    "CONSUMER_HEARTBEAT_INTERVAL": ("1", "Kafka consumer heartbeat interval (s)."),
    "CONSUMER_REBALANCE_TIMEOUT": ("10", "Max time (s) a rebalance waits for members; low so startup joins fast."),
    "PRODUCER_LINGER_MS": ("5", "Producer linger: how long sends wait to batch."),
    "STATE_COMPRESSION": ("zstd", "How customer states are stored in the table and its changelog: `zstd` (~260 bytes a state instead of ~890; a worker in memory mode holds ~0.8 KB per customer instead of ~1.5 KB, and recovery reads under a third of the bytes; ~6 µs to write a state, ~3 µs to read one), `deflate` (what versions before zstd wrote: ~225 bytes, ~16 and ~5 µs) or `none` (plain JSON). All three are read back whatever a changelog holds; a worker of a version before zstd cannot read zstd states, so finish a rolling upgrade before rolling back."),
    "EVENT_LOOP": ("uvloop", "The worker's asyncio event loop: `uvloop` (faster) or `asyncio` (the standard one)."),
    "BATCH_MAX_EVENTS": ("256", "Most input records an agent takes at once (Faust `take_events`; acknowledged after the whole batch is processed, each record still on its own). 1: one at a time."),
    "BATCH_WAIT_MS": ("10", "Longest an agent waits to fill a batch before it processes what it has: at low load, at most this much is added to each record's latency."),
    "PRODUCER_BATCH_BYTES": ("262144", "Largest record batch the producer builds per partition (Faust's own is 16384). While a request is in flight a partition's open batch fills, and a full one holds up every send to that partition until the next request: a state write-back took ~14 round trips per changelog partition at the default."),
    "CONSUMER_FETCH_BYTES": ("262144", "Most input bytes one fetch returns per partition (Faust's own is 1 MiB). What a worker has fetched but not processed yet is held in memory: at Faust's sizes, tens of MB while it catches up."),
    "CONSUMER_POLL_RECORDS": ("250", "Most input records the consumer hands over per poll (Faust's own: no limit, i.e. everything fetched for every partition at once). Unlimited, a worker catching up held ~20 MB more of records it had not processed, and waited longer between polls."),
    "STREAM_BUFFER_EVENTS": ("1024", "Most input records an agent's stream holds unprocessed before fetching pauses (Faust's own is 4096): memory, not speed, while a worker catches up."),
    "CONSUMER_FETCH_MAX_WAIT_MS": ("100", "Longest a fetch waits for new input records (Faust's own is 1500); bounds the input hop's latency on a broker that does not answer a waiting fetch early (the embedded one)."),
}


def _env(name: str) -> str:
    return os.environ.get(name, SETTINGS_DOC[name][0]).strip()


def _number(name: str, cast: Callable[[str], float], minimum: float | None = None, maximum: float | None = None) -> float:
    raw = _env(name)
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):  # float("nan") and float("inf") parse, and pass any bound check
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={raw!r} must be at most {maximum}")
    return value


def _fx_rates(reporting: str) -> dict[str, float]:
    rates = {reporting: 1.0}
    raw = _env("FX_RATES")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        code, _, rate = item.partition("=")
        code = code.strip().upper()
        try:
            value = float(rate)
        except ValueError:
            raise ConfigError(f"FX_RATES item {item!r} must look like EUR=1.08") from None
        if not CURRENCY_CODE.fullmatch(code):
            raise ConfigError(f"FX_RATES item {item!r}: {code!r} is not an ISO 4217 code (three letters)")
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"FX_RATES item {item!r}: the rate must be a positive number")
        rates[code] = value
    return rates


CURRENCY_CODE = re.compile(r"[A-Z]{3}")

#: Python's level names, and Faust's (its ``--loglevel`` takes only these spellings).
LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "warn": "warn", "error": "error", "critical": "crit", "crit": "crit"}


def log_level(raw: str | None) -> str:
    """``LOG_LEVEL`` as a Python level name (``debug`` ... ``critical``); ConfigError otherwise."""
    name = (raw or SETTINGS_DOC["LOG_LEVEL"][0]).strip().lower()
    if name not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={raw!r}: use one of debug, info, warning, error, critical")
    return {"warn": "warning", "crit": "critical"}.get(name, name)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    security: KafkaSecurity
    app_id: str
    topics: dict[str, str]  # logical role -> actual topic name
    partitions: int
    output_partitions: int
    replication_factor: int
    store: str
    data_dir: str
    web_host: str
    web_port: int
    advertised_url: str
    api_token: str
    log_level: str
    session_timeout: float
    heartbeat_interval: float
    rebalance_timeout: float
    linger_ms: int
    model_refit_seconds: float
    fetch_max_wait_ms: int = 100
    batch_max_events: int = 256
    batch_wait_ms: float = 10.0
    producer_batch_bytes: int = 262_144
    consumer_fetch_bytes: int = 262_144
    stream_buffer_events: int = 1024
    consumer_poll_records: int = 250
    rocksdb_write_buffer_bytes: int = 4 * 1024 * 1024
    rocksdb_block_cache_bytes: int = 16 * 1024 * 1024
    event_loop: str = "uvloop"
    state_compression: str = "zstd"
    clock: str = "event"
    clock_tick_seconds: float = 1.0
    limits: Limits = field(default_factory=Limits)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    @property
    def input_roles(self) -> tuple[str, ...]:
        return ("orders", "email-events", "community-events", "erasure-requests")


#: Variables that override a key of the rules file: name -> (section, key, cast). The value is
#: checked by the rules file's own checks (finite, the same bounds), so a setting cannot be
#: given in the environment that the file would refuse.
OVERRIDES: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "DISCOUNT_RATE": ("scores", "annual_discount_rate", float),
    "LIFETIME_YEARS": ("scores", "expected_lifetime_years", float),
    "PRIOR_INTERVAL_DAYS": ("scores", "prior_interval_days", float),
    "PURCHASE_DAY_TIMEZONE": ("scores", "purchase_day_timezone", str),
    "BTYD_HORIZON_DAYS": ("scores", "btyd_horizon_days", float),
    "LEARN_HORIZON_DAYS": ("scores", "learn_horizon_days", float),
    "AT_RISK_THRESHOLD": ("segments.lifecycle", "at_risk_threshold", float),
    "LAPSE_DAYS": ("segments.lifecycle", "lapse_days", float),
    "LOYAL_ORDERS": ("segments.lifecycle", "loyal_orders", int),
    "LOYAL_WINDOW_DAYS": ("segments.lifecycle", "loyal_window_days", float),
    "VALUE_TIER_MIN_POPULATION": ("segments.value_tier", "min_population", int),
    "VALUE_TIER_HYSTERESIS": ("segments.value_tier", "hysteresis", float),
}
#: Overrides of keys the rules file does not have: name -> (ScoringConfig field, minimum).
ENV_ONLY_OVERRIDES: dict[str, tuple[str, int]] = {
    "VALUE_RANK_EXACT_LIMIT": ("value_rank_exact_limit", 1),
    "REFIT_SAMPLE_PER_PARTITION": ("refit_sample_per_partition", 1),
}


def _scoring() -> ScoringConfig:
    """The rules file (or the defaults), then the override variables that are set."""
    path = _env("STREAMER_CONFIG")
    config = rules.load(path) if path else ScoringConfig()
    for name, (section, key, cast) in OVERRIDES.items():
        if os.environ.get(name, "").strip():
            doc: dict = {}
            inner = doc
            for part in section.split("."):
                inner = inner.setdefault(part, {})
            inner[key] = _env(name) if cast is str else cast(_number(name, cast))
            try:
                config = rules.parse(doc, base=config)
            except ConfigError as exc:
                problem = str(exc).rsplit(": ", 1)[-1]  # "invalid rules:\n  section.key: problem"
                raise ConfigError(f"{name}={_env(name)!r}: {problem} (rules file key {section}.{key})") from None
    changes = {}
    for name, (field_name, minimum) in ENV_ONLY_OVERRIDES.items():
        if os.environ.get(name, "").strip():
            changes[field_name] = int(_number(name, int, minimum))
    return replace(config, **changes)


def _default_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()  # bound to every interface: the name others can resolve
    return f"http://{host}:{port}"


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
        "erasure-requests": _env("TOPIC_ERASURE"),
        "customer-scores": _env("TOPIC_SCORES"),
        "segment-changes": _env("TOPIC_SEGMENTS"),
        "campaign-triggers": _env("TOPIC_TRIGGERS"),
        "dead-letter": _env("TOPIC_DEAD_LETTER"),
        "audit": _env("TOPIC_AUDIT"),
        "model-state": _env("TOPIC_MODELS"),
    }
    if len(set(topics.values())) != len(topics):
        raise ConfigError(f"topic names must be distinct: {topics}")
    web_port = int(_number("WEB_PORT", int, 0, 65535))
    clock = _env("CLOCK").lower()
    if clock not in ("event", "wall"):
        raise ConfigError(f"CLOCK={clock!r}: use 'event' or 'wall'")
    state_compression = _env("STATE_COMPRESSION").lower()
    if state_compression not in CODECS:
        raise ConfigError(f"STATE_COMPRESSION={state_compression!r}: use one of {', '.join(CODECS)}")
    event_loop = _env("EVENT_LOOP").lower()
    if event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(f"EVENT_LOOP={event_loop!r}: use 'uvloop' or 'asyncio'")
    return Settings(
        kafka_bootstrap=_env("KAFKA_BOOTSTRAP"),
        security=kafka_security.from_env(_env),
        app_id=_env("STREAMER_APP_ID"),
        topics=topics,
        partitions=int(_number("PARTITIONS", int, 1)),
        output_partitions=int(_number("OUTPUT_PARTITIONS", int, 1)),
        replication_factor=int(_number("REPLICATION_FACTOR", int, 1)),
        store=store,
        data_dir=_env("DATA_DIR"),
        web_host=_env("WEB_HOST"),
        web_port=web_port,
        advertised_url=_env("WEB_ADVERTISED_URL") or _default_url(_env("WEB_HOST"), web_port),
        api_token=_env("API_TOKEN"),
        log_level=log_level(_env("LOG_LEVEL")),
        session_timeout=_number("CONSUMER_SESSION_TIMEOUT", float, 1),
        heartbeat_interval=_number("CONSUMER_HEARTBEAT_INTERVAL", float, 0.1),
        rebalance_timeout=_number("CONSUMER_REBALANCE_TIMEOUT", float, 1),
        linger_ms=int(_number("PRODUCER_LINGER_MS", int, 0)),
        fetch_max_wait_ms=int(_number("CONSUMER_FETCH_MAX_WAIT_MS", int, 1)),
        batch_max_events=int(_number("BATCH_MAX_EVENTS", int, 1)),
        batch_wait_ms=_number("BATCH_WAIT_MS", float, 0.1),
        producer_batch_bytes=int(_number("PRODUCER_BATCH_BYTES", int, 1024)),
        consumer_fetch_bytes=int(_number("CONSUMER_FETCH_BYTES", int, 1024)),
        stream_buffer_events=int(_number("STREAM_BUFFER_EVENTS", int, 1)),
        consumer_poll_records=int(_number("CONSUMER_POLL_RECORDS", int, 1)),
        rocksdb_write_buffer_bytes=int(_number("ROCKSDB_WRITE_BUFFER_BYTES", int, 65536)),
        rocksdb_block_cache_bytes=int(_number("ROCKSDB_BLOCK_CACHE_BYTES", int, 0)),
        event_loop=event_loop,
        state_compression=state_compression,
        model_refit_seconds=_number("MODEL_REFIT_SECONDS", float, 1),
        limits=Limits(
            max_event_bytes=int(_number("MAX_EVENT_BYTES", int, 256)),
            max_future_skew_s=_number("MAX_FUTURE_SKEW_SECONDS", float, 0),
            reporting_currency=reporting,
            fx_rates=_fx_rates(reporting),
        ),
        scoring=_scoring(),
        clock=clock,
        clock_tick_seconds=_number("CLOCK_TICK_SECONDS", float, 0.05),
    )

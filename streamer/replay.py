"""``streamer replay FILE``: load a history of orders into the orders topic, in event-time order.

Each row of a CSV, JSON-lines or CDNOW file becomes one ``Order Completed`` event, built and
validated by :mod:`streamer.producer`, keyed by the customer id and sent to ``TOPIC_ORDERS``.
The whole file is read and sorted by event time first (stable: ties keep the file order), so
it must fit in memory; each partition then receives its customers' orders in event-time order,
which is what the worker's event-time clocks expect.

Ids are deterministic, so replaying the same file twice changes nothing: the event id is a hash
of the row's content (column -> value, plus the how-many-th identical row it is, so repeated
identical rows stay distinct orders), and without an order-id column the order id is derived
from the same hash. The worker de-duplicates a customer's orders by order id.

Rows that cannot be mapped are counted by reason and not sent (reasons: ``malformed_row``,
``missing_customer``, ``bad_id`` (a JSON id neither text nor a whole number), ``bad_time``, ``time_out_of_range``, ``bad_total``,
``total_out_of_range``, ``bad_currency``, ``bad_margin``, ``margin_exceeds_total``,
``duplicate_order_id`` — the earliest row of a customer's order id is kept —, or the contract's
``schema_violation``).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "orders.csv"
>>> _ = path.write_text("customer_id,time,total\\nc-2,2024-02-01,20\\nc-1,2024-01-05T10:00:00Z,10.5\\nc-3,someday,5\\n")
>>> plan = prepare(path)
>>> [(r.event["subject"], r.event["time"]) for r in plan.records]
[('c-1', '2024-01-05T10:00:00Z'), ('c-2', '2024-02-01T00:00:00Z')]
>>> plan.rows_read, dict(plan.skipped)
(3, {'bad_time': 1})
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import math
import re
import sys
import time as time_module
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from streamer.core.config import Limits
from streamer.errors import ConfigError, InvalidEvent, StreamerError
from streamer.producer import ClvProducer, Outgoing, order_completed, product, rfc3339

__all__ = ["CDNOW", "CDNOW_COLUMNS", "FORMATS", "RowMapping", "Plan", "detect_format", "prepare", "send", "summary_lines"]

FORMATS = ("csv", "tsv", "jsonl", "cdnow")
CDNOW_COLUMNS = ("customer_full_id", "customer_id", "date", "cds", "value")
"""Column names given to the five whitespace-separated CDNOW columns (see tests/data/README.md)."""

DEFAULT_ORDER_ID_COL = "order_id"
MAX_TOTAL = 10_000_000.0  # the contract's maximum
_CURRENCY = re.compile(r"[A-Z]{3}\Z")


@dataclass(frozen=True)
class RowMapping:
    """How a row becomes an ``Order Completed``: column names (CSV header / JSON keys) and defaults."""

    customer_col: str = "customer_id"
    time_col: str = "time"
    total_col: str = "total"
    #: None: ``order_id`` when the row has it, else derived from the row's content.
    order_id_col: str | None = None
    currency: str = "USD"
    #: Per-row currency; an empty cell falls back to ``currency``.
    currency_col: str | None = None
    #: None / "iso": ISO 8601 (naive = UTC); "epoch" / "epoch_ms"; or a strptime pattern ("%Y%m%d").
    time_format: str | None = None
    margin_col: str | None = None
    cost_col: str | None = None
    #: Without a margin or cost column: margin = total × margin_rate (1.0: CLV on revenue).
    margin_rate: float = 1.0
    #: The single order line the contract requires (price = total, quantity 1, tier basic).
    product_id: str = "unknown"
    source: str = "/replay"

    def columns(self) -> list[str]:
        """Columns the file must have (the order-id column only when named explicitly)."""
        named = [self.customer_col, self.time_col, self.total_col, self.order_id_col, self.currency_col, self.margin_col, self.cost_col]
        return [col for col in named if col]


CDNOW = RowMapping(customer_col="customer_id", time_col="date", total_col="value", time_format="%Y%m%d", product_id="cd", source="/cdnow")
"""The CDNOW sample: customer = the sample id (as ``streamer evaluate``), date YYYYMMDD, dollar value."""


class Unmappable(StreamerError):
    """A row that cannot become a valid event; ``reason`` is the code it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Plan:
    """A file read and mapped: the valid rows as events in event-time order, and what was skipped."""

    path: Path
    format: str
    records: list[Outgoing] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # event times (epoch s) of ``records``
    rows_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: The first skipped rows by line: "line 7: bad_time: ...".
    examples: list[str] = field(default_factory=list)
    order_ids_derived: int = 0
    seconds: float = 0.0  # reading, mapping and sorting

    @property
    def customers(self) -> int:
        return len({record.key for record in self.records})


def detect_format(path: Path) -> str:
    """The format from the file name (``.gz`` is looked through).

    >>> detect_format(Path("history.csv.gz")), detect_format(Path("orders.ndjson"))
    ('csv', 'jsonl')
    """
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    found = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}.get(ext)
    if found is None:
        raise ConfigError(f"{path.name}: cannot tell the format from {ext or 'no extension'!r}; pass --format ({', '.join(FORMATS)})")
    return found


def _open(path: Path) -> io.TextIOBase:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8-sig", newline="")


def _rows(path: Path, fmt: str, delimiter: str | None, mapping: RowMapping) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, fields or None, why not) per data row; blank lines are not rows."""
    with _open(path) as fh:
        if fmt == "jsonl":
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield line_no, None, f"not valid JSON: {exc}"
                    continue
                yield (line_no, doc, "") if isinstance(doc, dict) else (line_no, None, f"expected a JSON object, got {type(doc).__name__}")
        elif fmt == "cdnow":
            for line_no, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != len(CDNOW_COLUMNS):
                    yield line_no, None, f"expected {len(CDNOW_COLUMNS)} columns, got {len(parts)}"
                else:
                    yield line_no, dict(zip(CDNOW_COLUMNS, parts)), ""
        else:
            reader = csv.reader(fh, delimiter=delimiter or ("\t" if fmt == "tsv" else ","))
            header = next(reader, None)
            if header is None:
                return
            header = [name.strip() for name in header]
            missing = [col for col in mapping.columns() if col not in header]
            if missing:
                raise ConfigError(
                    f"{path.name}: no column {', '.join(map(repr, missing))}; the header has {', '.join(map(repr, header))} "
                    "(map them with --customer-col, --time-col, --total-col, ...)"
                )
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if len(cells) != len(header):
                    yield reader.line_num, None, f"expected {len(header)} fields, got {len(cells)}"
                else:
                    yield reader.line_num, dict(zip(header, cells)), ""


def _cell(fields: dict[str, Any], col: str | None) -> Any:
    """The value of ``col``, stripped; None when absent or empty."""
    if col is None:
        return None
    value = fields.get(col)
    if isinstance(value, str):
        value = value.strip()
    return None if value == "" else value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def parse_time(value: Any, time_format: str | None) -> datetime:
    """A cell as an aware UTC datetime; naive times are taken as UTC.

    >>> parse_time("19970101", "%Y%m%d"), parse_time("2024-01-05T10:00:00+02:00", None).hour
    (datetime.datetime(1997, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), 8)
    """
    if value is None:
        raise ValueError("empty")
    try:
        if time_format in ("epoch", "epoch_ms"):
            seconds = _number(value) / (1000.0 if time_format == "epoch_ms" else 1.0)
            return datetime.fromtimestamp(seconds, timezone.utc)
        if isinstance(value, int) and not isinstance(value, bool) and time_format not in (None, "iso"):
            value = str(value)  # e.g. 19970101 in a JSON line, with --time-format %Y%m%d
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string (epoch numbers need --time-format epoch)")
        if time_format in (None, "iso"):
            moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "Zz" else value)
        else:
            moment = datetime.strptime(value, time_format)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _id_cell(fields: dict[str, Any], col: str | None) -> str | None:
    """An id cell as text: JSON lines may hold a whole number for an id (``"customer_id": 17``),
    never an object, a list, a boolean or a fraction, whose Python spelling would become an id
    no producer sends."""
    value = _cell(fields, col)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = {bool: "a boolean", float: "a fractional number", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)
    raise Unmappable("bad_id", f"{col} is {kind}, not a text or whole-number id")


def _row_hash(fields: dict[str, Any], seen: Counter[bytes]) -> str:
    """Hash of the row's content and of how many identical rows came before it in the file."""
    content = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    nth = seen[content]
    seen[content] += 1
    return hashlib.sha256(content + b"#%d" % nth).hexdigest()


def map_row(
    fields: dict[str, Any], digest: str, mapping: RowMapping, earliest: float, latest: float, currencies: Collection[str] | None = None
) -> tuple[float, Outgoing, bool]:
    """(event time, event, order id derived?) for one row; raises :class:`Unmappable`.
    ``currencies``: those the worker accepts (its reporting currency and FX_RATES; None: any)."""
    customer = _id_cell(fields, mapping.customer_col)
    if customer is None:
        raise Unmappable("missing_customer", f"no {mapping.customer_col!r}")
    raw_time = _cell(fields, mapping.time_col)
    try:
        moment = parse_time(raw_time, mapping.time_format)
    except ValueError as exc:
        hint = f"time format {mapping.time_format!r}" if mapping.time_format not in (None, "iso") else "ISO 8601 (else use --time-format)"
        raise Unmappable("bad_time", f"{mapping.time_col} {raw_time!r}: expected {hint}: {exc}") from None
    t = moment.timestamp()
    if not earliest <= t <= latest:
        raise Unmappable(
            "time_out_of_range",
            f"{mapping.time_col} {raw_time!r} is outside the worker's accepted range (from 1990 to now + MAX_FUTURE_SKEW_SECONDS)",
        )
    raw_total = _cell(fields, mapping.total_col)
    try:
        total = _number(raw_total)
    except (TypeError, ValueError):
        raise Unmappable("bad_total", f"{mapping.total_col} {raw_total!r} is not a number") from None
    if not 0 <= total <= MAX_TOTAL:
        raise Unmappable("total_out_of_range", f"{mapping.total_col} {raw_total!r} is not within 0..{MAX_TOTAL:,.0f}")
    currency = str(_cell(fields, mapping.currency_col) or mapping.currency).upper()
    if not _CURRENCY.match(currency):
        raise Unmappable("bad_currency", f"currency {currency!r} is not an ISO 4217 code")
    if currencies is not None and currency not in currencies:
        # The worker would dead-letter it (no rate to convert it with).
        raise Unmappable("bad_currency", f"currency {currency!r} is not accepted by the worker: {', '.join(sorted(currencies))} (REPORTING_CURRENCY, FX_RATES)")
    money: dict[str, float] = {}
    for name, col in (("margin", mapping.margin_col), ("cost", mapping.cost_col)):
        raw = _cell(fields, col)
        if raw is not None:
            try:
                money[name] = _number(raw)
            except ValueError:
                raise Unmappable("bad_margin", f"{col} {raw!r} is not a number") from None
    if not money:
        if mapping.margin_col or mapping.cost_col:
            raise Unmappable("bad_margin", f"no {' or '.join(repr(c) for c in (mapping.margin_col, mapping.cost_col) if c)}")
        money["margin"] = round(total * mapping.margin_rate, 6)
    margin = money["margin"] if "margin" in money else total - money["cost"]
    if margin > total + 1e-6:
        raise Unmappable("margin_exceeds_total", f"margin {margin:g} exceeds the total {total:g}")
    order_id = _id_cell(fields, mapping.order_id_col or DEFAULT_ORDER_ID_COL)
    derived = order_id is None
    try:
        record = order_completed(
            customer,
            f"row-{digest[:24]}" if derived else order_id,
            total,
            products=[product(mapping.product_id, total)],
            time=rfc3339(moment),
            currency=currency,
            id=f"replay-{digest[:32]}",
            source=mapping.source,
            **money,
        )
    except InvalidEvent as exc:
        raise Unmappable(exc.reason, exc.detail) from None
    return t, record, derived


def prepare(
    path: Path | str,
    fmt: str | None = None,
    mapping: RowMapping | None = None,
    delimiter: str | None = None,
    limits: Limits | None = None,
    now: float | None = None,
    max_examples: int = 5,
) -> Plan:
    """Read ``path``, map every row, sort the valid ones by event time; nothing is sent.

    ``fmt`` None: from the extension; ``mapping`` None: the defaults (:data:`CDNOW` for cdnow);
    ``limits``: the worker's time range (default: its defaults).
    """
    began = time_module.perf_counter()
    path = Path(path)
    if delimiter in ("\\t", "tab"):  # as typed on a command line
        delimiter = "\t"
    if delimiter is not None and len(delimiter) != 1:
        raise ConfigError(f"the delimiter must be one character (or \\t for a tab), not {delimiter!r}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    mapping = mapping or (CDNOW if fmt == "cdnow" else RowMapping())
    if mapping.margin_rate > 1:
        raise ConfigError(f"margin rate {mapping.margin_rate} is above 1: the margin cannot exceed the total")
    limits = limits or Limits()
    latest = (time_module.time() if now is None else now) + limits.max_future_skew_s
    plan = Plan(path, fmt)
    rows: list[tuple[float, int, Outgoing, bool]] = []
    problems: list[tuple[int, str, str]] = []
    seen: Counter[bytes] = Counter()
    for line_no, fields, why in _rows(path, fmt, delimiter, mapping):
        plan.rows_read += 1
        try:
            if fields is None:
                raise Unmappable("malformed_row", why)
            t, record, derived = map_row(fields, _row_hash(fields, seen), mapping, limits.min_event_time, latest, limits.fx_rates)
        except Unmappable as exc:
            plan.skipped[exc.reason] += 1
            if len(problems) < max_examples:
                problems.append((line_no, exc.reason, exc.detail))
            continue
        rows.append((t, line_no, record, derived))
    rows.sort(key=lambda row: (row[0], row[1]))
    # Per customer, as the worker de-duplicates: two customers' orders may share an id.
    order_ids: set[tuple[str, str]] = set()
    for t, line_no, record, derived in rows:
        order_id = record.event["data"]["order_id"]
        customer_order = (record.event["subject"], order_id)
        if customer_order in order_ids:
            plan.skipped["duplicate_order_id"] += 1
            if plan.skipped["duplicate_order_id"] <= max_examples:
                problems.append((line_no, "duplicate_order_id", f"the customer's order id {order_id!r} is already on an earlier row (kept)"))
            continue
        order_ids.add(customer_order)
        plan.records.append(record)
        plan.times.append(t)
        plan.order_ids_derived += derived
    problems.sort()
    plan.examples = [f"line {line}: {reason}: {detail}" for line, reason, detail in problems[:max_examples]]
    plan.seconds = time_module.perf_counter() - began
    return plan


async def send(plan: Plan, producer: ClvProducer, progress: bool = True, every: int = 500, window: int = 5000) -> float:
    """Send the plan's records in order; returns the seconds it took until all were acknowledged."""
    draw = None
    if progress:
        from streamer.evaluate import _progress as draw  # the project's progress bar (stderr)
    total = len(plan.records)
    started = time_module.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    for done, record in enumerate(plan.records, 1):
        pending.append(await producer.enqueue(record))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
        if draw is not None and (done % every == 0 or done == total):
            draw(done, total, started)
    await asyncio.gather(*pending)
    return time_module.perf_counter() - started


def summary_lines(plan: Plan, topic: str | None, seconds: float | None) -> list[str]:
    """The end-of-run summary; ``topic`` None means a dry run."""
    skipped = sum(plan.skipped.values())
    lines = [f"rows read {plan.rows_read:,} from {plan.path} ({plan.format}), mapped and sorted in {plan.seconds:.2f} s"]
    if topic is None:
        lines.append(f"dry run: {len(plan.records):,} events would be sent")
    else:
        lines.append(f"sent {len(plan.records):,} events to topic {topic}")
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(plan.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    lines.append(f"skipped {skipped:,} rows" + (f": {reasons}" if skipped else ""))
    lines += [f"  {example}" for example in plan.examples]
    if plan.records:
        lines.append(f"customers {plan.customers:,}, event time {rfc3339(plan.times[0])} .. {rfc3339(plan.times[-1])}")
    if plan.order_ids_derived:
        lines.append(f"order ids derived from the row content for {plan.order_ids_derived:,} rows (no order-id column or empty)")
    if seconds is not None:
        lines.append(f"{len(plan.records):,} events in {seconds:.2f} s: {len(plan.records) / max(seconds, 1e-9):,.0f} events/s")
    return lines


def run_cli(args: Any) -> int:
    """``streamer replay``: the options of :func:`streamer.cli.main` to a replay."""
    from aiokafka.errors import KafkaError

    from streamer import settings as settings_module
    from streamer.topics import ensure_topics

    try:
        settings = settings_module.load()
        if args.bootstrap:
            settings = replace(settings, kafka_bootstrap=args.bootstrap)
        base = CDNOW if args.format == "cdnow" else RowMapping()
        given = {
            name: getattr(args, name)
            for name in ("customer_col", "time_col", "total_col", "order_id_col", "currency", "currency_col", "time_format",
                         "margin_col", "cost_col", "margin_rate", "product_id", "source")
            if getattr(args, name) is not None
        }
        if args.currency is None and base is not CDNOW:  # CDNOW's amounts are dollars
            # Amounts without a currency are in the worker's reporting currency, not USD.
            given["currency"] = settings.limits.reporting_currency
        mapping = replace(base, **given)
        plan = prepare(Path(args.file), args.format, mapping, args.delimiter, settings.limits)
        if args.dry_run:
            print("\n".join(summary_lines(plan, None, None)))
            return 0
        if not settings.kafka_bootstrap:
            raise ConfigError("KAFKA_BOOTSTRAP is not set: export it or pass --bootstrap host:port")
        topic = settings.topics["orders"]

        async def go() -> float:
            await ensure_topics(settings, attempts=5)
            async with ClvProducer(settings.kafka_bootstrap, topics=settings.topics, linger_ms=20, max_batch_size=256 * 1024, **settings.security.client_options()) as producer:
                return await send(plan, producer, progress=not args.quiet)

        seconds = asyncio.run(go())
    except (StreamerError, OSError) as exc:
        print(f"streamer replay: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"streamer replay: Kafka at {settings.kafka_bootstrap}: {exc!r}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(plan, topic, seconds)))
    return 0

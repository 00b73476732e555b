"""``streamer replay`` without Kafka (streamer/replay.py): reading, mapping, skipped rows and
their reasons, event-time order, deterministic ids, the CDNOW format, the CLI's dry run."""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer import cli, contracts
from streamer.core.config import Limits
from streamer.core.events import decode
from streamer.errors import ConfigError
from streamer.replay import CDNOW, RowMapping, Plan, detect_format, parse_time, prepare, summary_lines

CDNOW_FILE = Path(__file__).resolve().parents[1] / "data" / "CDNOW_sample.txt"
NOW = 1_900_000_000.0  # 2030: fixed, so "the future" does not move


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_valid(plan: Plan, limits: Limits | None = None) -> None:
    """Every event is valid against the contract and accepted by the worker's decoder."""
    for record in plan.records:
        assert contracts.first_error(record.event) is None
        assert record.role == "orders" and record.key == record.event["subject"].encode()
        decode(record.value, "orders", record.key, limits or Limits(), NOW)


def test_csv_rows_become_order_completed_events_in_event_time_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "orders.csv",
        "order_id,customer_id,time,total\n"
        "O-3,c-1,2024-03-01T10:00:00Z,30\n"
        "O-1,c-2,2024-01-01,10.50\n"
        "O-2,c-1,2024-02-01 12:00:00+01:00,20\n",
    )
    plan = prepare(path, now=NOW)
    assert plan.format == "csv" and plan.rows_read == 3 and not plan.skipped
    events = [r.event for r in plan.records]
    assert [e["data"]["order_id"] for e in events] == ["O-1", "O-2", "O-3"]
    assert [e["time"] for e in events] == ["2024-01-01T00:00:00Z", "2024-02-01T11:00:00Z", "2024-03-01T10:00:00Z"]
    first = events[0]
    assert first["type"] == "Order Completed" and first["subject"] == "c-2" and first["source"] == "/replay"
    assert first["data"] == {
        "order_id": "O-1", "total": 10.5, "currency": "USD", "margin": 10.5,
        "products": [{"product_id": "unknown", "price": 10.5, "quantity": 1, "tier": "basic"}],
    }
    assert plan.customers == 2 and plan.order_ids_derived == 0
    assert plan.times == sorted(plan.times)
    assert_valid(plan)


def test_ties_keep_the_file_order(tmp_path: Path) -> None:
    rows = "".join(f"c-{n},2024-01-01T00:00:00Z,{n}\n" for n in (5, 3, 9, 1))
    plan = prepare(write(tmp_path, "o.csv", "customer_id,time,total\n" + rows), now=NOW)
    assert [r.event["subject"] for r in plan.records] == ["c-5", "c-3", "c-9", "c-1"]


BAD = {
    "malformed_row": "c-1,2024-01-01,5,extra",
    "missing_customer": ",2024-01-01,5",
    "bad_time": "c-1,2024-02-30,5",
    "time_out_of_range": "c-1,1985-01-01,5",
    "bad_total": "c-1,2024-01-01,12;50",
    "total_out_of_range": "c-1,2024-01-01,-3",
}


def test_unmappable_rows_are_counted_by_reason_with_the_first_examples(tmp_path: Path) -> None:
    good = ["c-1,2024-01-02,5", "c-2,2024-01-03,7"]
    lines = [good[0], *BAD.values(), "c-1,2999-01-01,5", "c-1,2024-01-01,nan", good[1]]
    plan = prepare(write(tmp_path, "o.csv", "customer_id,time,total\n" + "\n".join(lines) + "\n"), now=NOW)
    assert plan.rows_read == len(lines)
    assert len(plan.records) == 2
    expected = Counter(list(BAD))
    expected["time_out_of_range"] += 1
    expected["bad_total"] += 1
    assert plan.skipped == expected
    assert len(plan.examples) == 5
    assert plan.examples[0].startswith("line 3: malformed_row: expected 3 fields, got 4")
    assert plan.examples[1].startswith("line 4: missing_customer")
    assert "'2024-02-30'" in plan.examples[2]
    text = "\n".join(summary_lines(plan, "orders", 0.5))
    assert "skipped 8 rows: bad_total 2, time_out_of_range 2, bad_time 1, malformed_row 1, missing_customer 1, total_out_of_range 1" in text
    assert "sent 2 events to topic orders" in text and "customers 2" in text
    assert "2024-01-02T00:00:00Z .. 2024-01-03T00:00:00Z" in text
    assert_valid(plan)


def test_money_columns_currency_and_margins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "o.csv",
        "customer_id,time,total,cur,margin,cost\n"
        "c-1,2024-01-01,100,eur,30,\n"  # margin column, per-row currency (upper-cased)
        "c-2,2024-01-02,100,,,60\n"  # cost only, default currency
        "c-3,2024-01-03,100,USD,,\n"  # neither: bad_margin
        "c-4,2024-01-04,100,US,30,\n"  # bad currency
        "c-5,2024-01-05,100,USD,130,\n"  # margin above the total
        "c-6,2024-01-06,100,USD,x,\n",
    )
    mapping = RowMapping(currency_col="cur", margin_col="margin", cost_col="cost", currency="GBP")
    fx = Limits(fx_rates={"USD": 1.0, "EUR": 1.1, "GBP": 1.3})
    plan = prepare(path, mapping=mapping, now=NOW, limits=fx)
    assert [(r.event["data"]["currency"], r.event["data"].get("margin"), r.event["data"].get("cost")) for r in plan.records] == [
        ("EUR", 30.0, None),
        ("GBP", None, 60.0),
    ]
    assert plan.skipped == Counter(bad_margin=2, bad_currency=1, margin_exceeds_total=1)
    assert_valid(plan, fx)
    # A currency the worker has no rate for would be dead-lettered there: skipped here.
    usd_only = prepare(path, mapping=mapping, now=NOW, limits=Limits())
    assert usd_only.records == [] and usd_only.skipped == Counter(bad_margin=2, bad_currency=3, margin_exceeds_total=1)
    rate = prepare(write(tmp_path, "r.csv", "customer_id,time,total\nc,2024-01-01,29.33\n"), mapping=RowMapping(margin_rate=0.4), now=NOW)
    assert rate.records[0].event["data"]["margin"] == pytest.approx(11.732)
    with pytest.raises(ConfigError, match="above 1"):
        prepare(path, mapping=RowMapping(margin_rate=1.5), now=NOW)


def test_missing_columns_are_a_config_error_naming_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "cust,when,amount\nc,2024-01-01,5\n")
    with pytest.raises(ConfigError, match="no column 'customer_id', 'time', 'total'; the header has 'cust', 'when', 'amount'"):
        prepare(path, now=NOW)
    with pytest.raises(ConfigError, match="'oid'"):
        prepare(path, mapping=RowMapping(customer_col="cust", time_col="when", total_col="amount", order_id_col="oid"), now=NOW)
    plan = prepare(path, mapping=RowMapping(customer_col="cust", time_col="when", total_col="amount"), now=NOW)
    assert len(plan.records) == 1 and plan.order_ids_derived == 1


def test_ids_are_deterministic_and_identical_rows_stay_distinct_orders(tmp_path: Path) -> None:
    text = "customer_id,time,total\nc-1,2024-01-01,5\nc-1,2024-01-01,5\nc-2,2024-01-02,7\n"
    a = prepare(write(tmp_path, "a.csv", text), now=NOW)
    b = prepare(write(tmp_path, "b.csv", text), now=NOW)
    ids = [r.event["id"] for r in a.records]
    assert ids == [r.event["id"] for r in b.records]
    assert len(set(ids)) == 3 and all(i.startswith("replay-") for i in ids)
    order_ids = [r.event["data"]["order_id"] for r in a.records]
    assert len(set(order_ids)) == 3 and a.order_ids_derived == 3
    # Same content with the columns reordered: same ids. One changed cell: only that row's id changes.
    swapped = prepare(write(tmp_path, "c.csv", "total,time,customer_id\n5,2024-01-01,c-1\n5,2024-01-01,c-1\n7,2024-01-02,c-2\n"), now=NOW)
    assert [r.event["id"] for r in swapped.records] == ids
    changed = prepare(write(tmp_path, "d.csv", text.replace("c-2,2024-01-02,7", "c-2,2024-01-02,8")), now=NOW)
    assert [r.event["id"] for r in changed.records][:2] == ids[:2] and changed.records[2].event["id"] != ids[2]


def test_order_id_column_and_duplicates_keep_the_earliest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "o.csv",
        "order_id,customer_id,time,total\nO-1,c-1,2024-02-01,5\nO-1,c-1,2024-01-01,6\n,c-2,2024-01-03,7\nO-2,c-2,2024-01-04,8\n",
    )
    plan = prepare(path, now=NOW)
    assert [(r.event["data"]["order_id"], r.event["data"]["total"]) for r in plan.records[:1]] == [("O-1", 6.0)]
    assert plan.records[1].event["data"]["order_id"].startswith("row-")
    assert plan.records[2].event["data"]["order_id"] == "O-2"
    assert plan.skipped == Counter(duplicate_order_id=1) and plan.order_ids_derived == 1
    assert plan.examples == ["line 2: duplicate_order_id: the customer's order id 'O-1' is already on an earlier row (kept)"]


def test_two_customers_may_have_the_same_order_id(tmp_path: Path) -> None:
    """The worker de-duplicates orders per customer; a shop whose order numbers restart per
    customer (or two shops in one file) loses nothing in a replay either."""
    path = write(tmp_path, "s.csv", "order_id,customer_id,time,total\n1,c-1,2024-01-01,5\n1,c-2,2024-01-02,6\n1,c-1,2024-01-03,7\n")
    plan = prepare(path, now=NOW)
    assert [(r.event["subject"], r.event["data"]["total"]) for r in plan.records] == [("c-1", 5.0), ("c-2", 6.0)]
    assert plan.skipped == Counter(duplicate_order_id=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False))
def test_shuffled_files_give_the_same_events_in_event_time_order(tmp_path: Path, rnd: random.Random) -> None:
    rows = [f"c-{i % 5},2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z,{i}.25" for i in range(40)]
    rows += ["c-1,2024-01-05T05:00:00Z,3"] * 2  # identical rows
    base = prepare(write(tmp_path, "base.csv", "customer_id,time,total\n" + "\n".join(rows) + "\n"), now=NOW)
    rnd.shuffle(rows)
    shuffled = prepare(write(tmp_path, "shuffled.csv", "customer_id,time,total\n" + "\n".join(rows) + "\n"), now=NOW)
    assert shuffled.times == sorted(shuffled.times)
    key = lambda r: (r.event["time"], r.event["id"])  # noqa: E731
    assert sorted(map(key, shuffled.records)) == sorted(map(key, base.records))
    assert len({r.event["id"] for r in base.records}) == 42


def test_json_lines_with_numbers_epoch_times_and_bad_lines(tmp_path: Path) -> None:
    lines = [
        {"customer": 17, "ts": 1704067200, "amount": 12.5, "order": "A"},
        {"customer": "c-2", "ts": 1704153600000 / 1000, "amount": "3", "order": "B"},
        [1, 2],
        {"customer": "c-3", "ts": "yesterday", "amount": 1, "order": "C"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{broken\n\n"
    mapping = RowMapping(customer_col="customer", time_col="ts", total_col="amount", order_id_col="order", time_format="epoch")
    plan = prepare(write(tmp_path, "o.jsonl", text), mapping=mapping, now=NOW)
    assert [(r.event["subject"], r.event["time"], r.event["data"]["order_id"]) for r in plan.records] == [
        ("17", "2024-01-01T00:00:00Z", "A"),
        ("c-2", "2024-01-02T00:00:00Z", "B"),
    ]
    assert plan.rows_read == 5 and plan.skipped == Counter(malformed_row=2, bad_time=1)
    assert_valid(plan)


def test_gzip_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "o.tsv.gz"
    path.write_bytes(gzip.compress(b"customer_id\ttime\ttotal\nc-1\t2024-01-01\t5\n"))
    plan = prepare(path, now=NOW)
    assert plan.format == "tsv" and len(plan.records) == 1


def test_format_detection() -> None:
    names = ("a.CSV", "a.tsv", "a.jsonl", "a.json.gz", "a.ndjson")
    assert [detect_format(Path(n)) for n in names] == ["csv", "tsv", "jsonl", "jsonl", "jsonl"]
    with pytest.raises(ConfigError, match="--format"):
        detect_format(Path("CDNOW_sample.txt"))


def test_time_formats() -> None:
    assert parse_time("2024-01-05T10:00:00z", None).isoformat() == "2024-01-05T10:00:00+00:00"
    assert parse_time(1704067200000, "epoch_ms").isoformat() == "2024-01-01T00:00:00+00:00"
    assert parse_time(19970101, "%Y%m%d").isoformat() == "1997-01-01T00:00:00+00:00"
    for bad, fmt in ((None, None), (12, None), ("2024-01-01", "%Y%m%d"), ("1e300", "epoch"), (True, "epoch")):
        with pytest.raises(ValueError):
            parse_time(bad, fmt)


def test_cdnow_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cdnow.txt",
        " 00004 0001 19970118  2   29.73\n 00004 0001 19970101  2   29.33\n 00021 0002 19970101  3   63.34\n"
        " 00021 0002 19970101  3   63.34\n 00022 0003 19971301  1   1.00\n 00023 0004 19970101 1\n",
    )
    plan = prepare(path, "cdnow", now=NOW)
    assert [(r.event["subject"], r.event["time"][:10], r.event["data"]["total"]) for r in plan.records] == [
        ("0001", "1997-01-01", 29.33), ("0002", "1997-01-01", 63.34), ("0002", "1997-01-01", 63.34), ("0001", "1997-01-18", 29.73),
    ]
    assert len({r.event["data"]["order_id"] for r in plan.records}) == 4  # identical rows: two orders
    assert plan.skipped == Counter(bad_time=1, malformed_row=1)
    assert plan.records[0].event["source"] == CDNOW.source and plan.records[0].event["data"]["products"][0]["product_id"] == "cd"
    assert_valid(plan)


def test_the_cdnow_sample_maps_completely() -> None:
    plan = prepare(CDNOW_FILE, "cdnow")
    assert (plan.rows_read, len(plan.records), plan.customers, sum(plan.skipped.values())) == (6919, 6919, 2357, 0)
    assert len({r.event["id"] for r in plan.records}) == 6919
    assert plan.records[0].event["time"] == "1997-01-01T00:00:00Z" and plan.records[-1].event["time"] == "1998-06-30T00:00:00Z"
    assert round(sum(r.event["data"]["total"] for r in plan.records), 2) == pytest.approx(
        sum(float(line.split()[4]) for line in CDNOW_FILE.read_text().splitlines() if line.strip()), abs=0.01
    )


def test_cli_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "history.txt", "cust;day;amount\nc-1;20240105;5\nc-2;20241301;6\n")
    argv = ["replay", str(path), "--format", "csv", "--delimiter", ";", "--customer-col", "cust", "--time-col", "day",
            "--time-format", "%Y%m%d", "--total-col", "amount", "--currency", "EUR", "--dry-run"]
    monkeypatch.setenv("FX_RATES", "EUR=1.08")  # the worker's: EUR is accepted
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "rows read 2 from" in out and "dry run: 1 events would be sent" in out and "skipped 1 rows: bad_time 1" in out
    assert "line 3: bad_time: day '20241301': expected time format '%Y%m%d'" in out
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "")
    assert cli.main(argv[:-1]) == 2
    assert "KAFKA_BOOTSTRAP is not set" in capsys.readouterr().err
    assert cli.main(["replay", str(path)]) == 2
    assert "--format" in capsys.readouterr().err


def test_cli_amounts_without_a_currency_are_in_the_reporting_currency(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A shop reporting in euros replays its euro history without --currency (USD, which the
    worker has no rate for, skipped every row)."""
    path = write(tmp_path, "eur.csv", "customer_id,time,total\nc-1,2024-01-05,5\n")
    monkeypatch.setenv("REPORTING_CURRENCY", "EUR")
    monkeypatch.delenv("FX_RATES", raising=False)
    assert cli.main(["replay", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 1 events would be sent" in out and "bad_currency" not in out


def test_future_limit_follows_the_worker_setting(tmp_path: Path) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    path = write(tmp_path, "o.csv", f"customer_id,time,total\nc-1,{soon},5\n")
    assert len(prepare(path).records) == 1
    assert prepare(path, limits=Limits(max_future_skew_s=0)).skipped == Counter(time_out_of_range=1)


def test_a_tab_delimiter_as_typed_on_a_command_line_and_a_bad_one(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", "customer_id\ttime\ttotal\nc-1\t2024-01-01\t5\n")
    assert len(prepare(path, fmt="csv", delimiter="\\t", now=NOW).records) == 1
    with pytest.raises(ConfigError, match="one character"):
        prepare(path, fmt="csv", delimiter=";;", now=NOW)


def test_json_ids_are_text_or_whole_numbers(tmp_path: Path) -> None:
    lines = [
        {"customer_id": 17, "order_id": 3, "time": "2024-01-01", "total": 5},
        {"customer_id": {"a": 1}, "time": "2024-01-02", "total": 5},
        {"customer_id": True, "time": "2024-01-03", "total": 5},
        {"customer_id": "c-2", "order_id": 12.5, "time": "2024-01-04", "total": 5},
    ]
    path = write(tmp_path, "j.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    plan = prepare(path, now=NOW)
    assert [(r.event["subject"], r.event["data"]["order_id"]) for r in plan.records] == [("17", "3")]
    assert plan.skipped == Counter(bad_id=3)

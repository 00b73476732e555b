"""`make bench BENCH_ARGS="--set NAME=VALUE"`: a worker setting other than its default reaches
the worker's environment and is named under the bench's table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.report import table
from bench.run import parse_args, worker_setting
from bench.worker import worker_env


def test_a_documented_setting_is_taken_and_anything_else_refused() -> None:
    assert worker_setting("ROCKSDB_WRITE_BUFFER_BYTES=1048576") == ("ROCKSDB_WRITE_BUFFER_BYTES", "1048576")
    for bad in ("NOT_A_SETTING=1", "CONSUMER_POLL_RECORDS", "KAFKA_BOOTSTRAP=elsewhere:9092", "STORE=rocksdb"):
        with pytest.raises(argparse.ArgumentTypeError):
            worker_setting(bad)
    args = parse_args(["--set", "CONSUMER_POLL_RECORDS=100", "--set", "BATCH_MAX_EVENTS=64"])
    assert args.set == [("CONSUMER_POLL_RECORDS", "100"), ("BATCH_MAX_EVENTS", "64")]


def test_the_worker_gets_the_settings_given_and_no_other_from_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_MAX_EVENTS", "1")  # set here, not given: dropped
    env = worker_env("r1", "127.0.0.1:9092", 6070, Path("/tmp/d"), "rocksdb", {"ROCKSDB_BLOCK_CACHE_BYTES": "1048576"})
    assert env["ROCKSDB_BLOCK_CACHE_BYTES"] == "1048576" and env["STORE"] == "rocksdb"
    assert "BATCH_MAX_EVENTS" not in env
    assert "ROCKSDB_BLOCK_CACHE_BYTES" not in worker_env("r1", "127.0.0.1:9092", 6070, Path("/tmp/d"))


def test_the_table_names_the_settings_that_differ() -> None:
    result = {
        "workload": {"customers": 10, "events": 40, "mix": {}, "partitions": 8},
        "config": {"latency_seconds": 30, "refit_customers": 1000, "store": "rocksdb", "set": [["ROCKSDB_WRITE_BUFFER_BYTES", "262144"]]},
        "host": {"cpus": 2, "loadavg_start": [0.1, 0.1, 0.1]},
        "runs": [{}],
        "summary": {},
    }
    assert "worker settings other than the defaults: STORE=rocksdb, ROCKSDB_WRITE_BUFFER_BYTES=262144" in table(result)
    result["config"].update(store="memory", set=[])
    assert "other than the defaults" not in table(result)

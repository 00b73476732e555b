"""Quix Streams on the bench's input topics: the peer the throughput target is named after.

Two kinds of work, each a Quix Streams application as one would write it — one
``StreamingDataFrame`` over the three input topics (``concat``), an ``apply``, ``to_topic``:

- ``ceiling``: the ceiling's work (``bench.ceiling``) — decode (orjson + the project's
  validation), state update (``streamer.core.state.apply``), one output record per event — with
  each customer's state in Quix's own state store (RocksDB, changelogged: its default), kept in
  the project's state codec (``CustomerState.to_bytes``) as the worker's table keeps it.
- ``engine``: the worker's work — every record through the scoring engine
  (``Engine.process``: all models, segments, triggers, explanations), every outgoing record
  produced to its own topic, the engine's states in Quix's state store as above.

Quix Streams runs its own blocking loop and signal handlers, so the bench starts it as a
child process (``python -m bench.quix ...``) that prints one JSON line; ``run_quix`` is the
bench's side. Quix Streams is a bench-only dependency (the project's ``bench`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ceiling import output, update
from streamer.core.config import Limits, ScoringConfig
from streamer.core.engine import AUDIT, DEAD_LETTER, SCORES, SEGMENT_CHANGES, TRIGGERS, Engine, Record
from streamer.core.events import decode
from streamer.core.state import CustomerState
from streamer.errors import InvalidEvent

ROOT = Path(__file__).resolve().parent.parent
WORKS = ("ceiling", "engine")
#: The worker's session timeout in the bench (bench.worker), for a like-for-like start: the
#: embedded broker holds a new group's first join for half of it (librdkafka's default, 45 s,
#: would hold it 22 s).
SESSION_TIMEOUT_MS = 6000
#: Longest wait for the first record (the group join and the changelog topic come first).
STARTUP_TIMEOUT_S = 60.0


async def run_quix(
    bootstrap: str,
    roles: dict[str, str],
    out_topic: str,
    expected: int,
    work: str = "ceiling",
    quiet_s: float = 15.0,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """Run a Quix Streams application doing ``work`` over the input topics (``roles``: topic
    -> role) from the start until ``expected`` records were handled; returns its report:
    events, seconds from the first record taken to the last output acknowledged, events/s.

    ``out_topic``: the output topic (``ceiling``; it must exist), or the prefix of one topic
    per output kind (``engine``; Quix creates them)."""
    command = [sys.executable, "-m", "bench.quix", "--bootstrap", bootstrap, "--out", out_topic, "--work", work,
               "--expected", str(expected), "--quiet-timeout", str(quiet_s)]
    for topic, role in roles.items():
        command += ["--input", f"{topic}={role}"]
    log = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL
    try:
        process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
        stdout, _ = await process.communicate()
    finally:
        if log_path is not None:
            log.close()  # type: ignore[union-attr]
    lines = stdout.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the Quix Streams run ({work}) failed with exit code {process.returncode}; log: {log_path}")
    return json.loads(lines[-1])


class _Run:
    """What the steps count; the clock of the run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.handled = self.invalid = self.duplicates = self.outputs = 0
        self.first: float | None = None
        self.last_seen = time.monotonic()


def _identity(value: Any) -> Any:
    return value


def _ceiling_step(roles: dict[str, str], run: _Run) -> Callable[..., bytes | None]:
    """The ceiling's work on one record (``bench.ceiling``), its state in Quix's state (a
    stateful ``apply``)."""
    from quixstreams import message_context

    limits, config = Limits(), ScoringConfig()
    state_key = b"s"  # one value per customer (Quix prefixes it with the record's key)

    def step(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> bytes | None:
        context = message_context()
        try:
            event = decode(value, roles[context.topic], key, limits, time.time())
        except InvalidEvent:
            run.invalid += 1
            return None
        raw = state.get(state_key)
        current = update(None if raw is None else CustomerState.from_bytes(raw), event, context.partition, config)
        if current is None:
            run.duplicates += 1
            return None
        state.set(state_key, current.to_bytes())
        run.outputs += 1
        return output(event, current)

    return step


class _QuixStore:
    """The engine's state store over Quix's state: each customer's state under its own key
    (Quix's prefix: the record key), in the project's state codec, in the transaction of the
    record's partition — where the timers' customers are too (same partition, same clock).

    Quix hands a step the state of the record's key only; the engine re-scores other customers
    of the partition when their timers fall due, so this reads and writes through that state's
    transaction (``TransactionState._transaction``, internal to Quix Streams 3.x)."""

    KEY = b"s"

    def __init__(self) -> None:
        self.transaction: Any = None

    def get(self, customer: str) -> CustomerState | None:
        raw = self.transaction.get(self.KEY, prefix=customer.encode())
        return None if raw is None else CustomerState.from_bytes(raw)

    def put(self, customer: str, state: CustomerState) -> None:
        self.transaction.set(self.KEY, state.to_bytes(), prefix=customer.encode())

    def delete(self, customer: str, partition: int) -> None:
        self.transaction.delete(self.KEY, prefix=customer.encode())

    def mark_erased(self, digest: str, partition: int, at: float) -> None:
        # The bench's load has no erasure requests; kept for the engine's store protocol.
        self.transaction.set(b"erased", at, prefix=digest.encode())


def _engine_step(roles: dict[str, str], run: _Run) -> Callable[..., list[Any]]:
    """The worker's work on one record: its outgoing records, for an ``expand`` apply."""
    from quixstreams import message_context

    engine, store = Engine(), _QuixStore()

    def step(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> list[Any]:
        context = message_context()
        topic = context.topic
        store.transaction = state._transaction
        record = Record(roles[topic], topic, context.partition, context.offset, key, value, timestamp)
        result = engine.process(record, store)
        if result.rejected:
            run.invalid += 1
        elif result.duplicate:
            run.duplicates += 1
        run.outputs += len(result.outgoing)
        return result.outgoing

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quix", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", action="append", required=True, help="TOPIC=ROLE, one per input topic")
    p.add_argument("--out", required=True, help="output topic (ceiling), or prefix of the output topics (engine)")
    p.add_argument("--work", choices=WORKS, default="ceiling")
    p.add_argument("--expected", type=int, required=True, help="stop after this many input records")
    p.add_argument("--quiet-timeout", type=float, default=15.0)
    args = p.parse_args(argv)

    from quixstreams import Application
    from quixstreams.models.serializers.base import Serializer
    from quixstreams.models.topics import TopicConfig
    from quixstreams.state.rocksdb import RocksDBOptions

    class OutgoingValue(Serializer):
        """An engine's ``Outgoing`` record -> its value (the bytes the worker would send)."""

        def __call__(self, value: Any, ctx: Any) -> bytes:
            return value.value

    roles = dict(item.split("=", 1) for item in args.input)
    run = _Run(args.expected)
    state_dir = tempfile.mkdtemp(prefix="clv-bench-quix-")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        # The stored values are already bytes (the project's state codec): no JSON around them.
        rocksdb_options=RocksDBOptions(dumps=_identity, loads=_identity),
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": SESSION_TIMEOUT_MS},
    )
    inputs = [app.topic(name, key_deserializer="bytes", value_deserializer="bytes") for name in roles]
    for topic in inputs:
        # Quix sizes the state changelog from its inputs' "retention.ms", which Kafka always
        # reports and the embedded broker does not; set as Kafka says it when it is unset.
        topic.broker_config.extra_config.setdefault("retention.ms", "-1")
    sdf = app.dataframe(inputs[0])
    for topic in inputs[1:]:
        sdf = sdf.concat(app.dataframe(topic))

    def counted(handle: Callable[..., Any]) -> Callable[..., Any]:
        """``handle`` with the count, the clock, and the stop after the last expected record."""

        def step(*step_args: Any) -> Any:
            now = time.monotonic()
            if run.first is None:
                run.first = now
            run.handled += 1
            run.last_seen = now
            try:
                return handle(*step_args)
            finally:
                if run.handled >= run.expected:
                    app.stop()

        return step

    if args.work == "ceiling":
        sdf = sdf.apply(counted(_ceiling_step(roles, run)), stateful=True, metadata=True)
        sdf = sdf.filter(lambda out: out is not None)
        sdf.to_topic(app.topic(args.out, key_serializer="bytes", value_serializer="bytes"))
    else:
        partitions = inputs[0].broker_config.num_partitions
        outputs = {
            role: app.topic(f"{args.out}-{role}", key_serializer="bytes", value_serializer=OutgoingValue(),
                            config=TopicConfig(num_partitions=partitions, replication_factor=1))
            for role in (SCORES, SEGMENT_CHANGES, TRIGGERS, DEAD_LETTER, AUDIT)
        }
        sdf = sdf.apply(counted(_engine_step(roles, run)), stateful=True, metadata=True, expand=True)
        sdf.to_topic(lambda out, key, timestamp, headers: outputs[out.topic_role], key=lambda out: out.key)

    def watchdog() -> None:
        """A run that stalls gives up instead of hanging the bench."""
        while True:
            time.sleep(1.0)
            # Counted from the first record: joining the group and recovery come before it.
            limit = args.quiet_timeout if run.first is not None else STARTUP_TIMEOUT_S
            if time.monotonic() - run.last_seen > limit:
                print(f"quix: nothing new for {limit:.0f}s at {run.handled:,}/{run.expected:,}; giving up", file=sys.stderr)
                app.stop()
                return

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        app.run()
        ended = time.monotonic()  # after the final checkpoint: outputs flushed, offsets committed
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    seconds = ended - run.first if run.first is not None else 0.0
    print(
        json.dumps(
            {
                "work": args.work,
                "events": run.handled,
                "invalid": run.invalid,
                "duplicates": run.duplicates,
                "outputs": run.outputs,
                "seconds": round(seconds, 3),
                "events_per_s": round(run.handled / seconds, 1) if seconds > 0 else 0.0,
                "complete": run.handled >= run.expected,
                "quixstreams": _version(),
            }
        ),
        flush=True,
    )
    return 0


def _version() -> str:
    from importlib.metadata import version

    return version("quixstreams")


if __name__ == "__main__":
    sys.exit(main())

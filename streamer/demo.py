"""``streamer demo``: broker + worker + shop simulator + a live terminal view.

Without ``KAFKA_BOOTSTRAP`` it starts the embedded broker (Tansu) on a free loopback port;
with it, everything runs against that cluster. The worker runs as a child process — exactly
what ``streamer worker`` runs in production — and Ctrl-C stops everything the demo started.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer import settings as settings_module
from streamer.broker import EmbeddedBroker, free_port, stop_process
from streamer.core.views import quantile_from_buckets
from streamer.simulator import ShopSimulator
from streamer.topics import ensure_topics

TICK_S = 0.1


@dataclass
class ViewState:
    """What the live view shows, folded from the output topics."""

    populations: dict[str, Counter[str]] = field(default_factory=dict)
    latest_changes: deque[str] = field(default_factory=lambda: deque(maxlen=10))
    clv: dict[str, float] = field(default_factory=dict)
    dead_letter: Counter[str] = field(default_factory=Counter)
    segment_changes: int = 0
    scores: int = 0
    produced: int = 0
    sim_time: datetime | None = None
    worker_consumed: float = 0.0
    rate_history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=6))
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    started: float = field(default_factory=time.monotonic)
    first_change_after_s: float | None = None
    model_version: str = "-"
    triggers: Counter[str] = field(default_factory=Counter)
    latest_triggers: deque[str] = field(default_factory=lambda: deque(maxlen=6))

    def on_trigger(self, data: dict) -> None:
        self.triggers[data["trigger"]] += 1
        step = f" #{data['step']}" if data.get("step") else ""
        self.latest_triggers.appendleft(f"{data['at'][:10]}  {data['customer']:<12} {data['trigger'] + step:<22} {data['reason'][:70]}")

    def on_segment_change(self, data: dict) -> None:
        family, old, new = data["family"], data["from"], data["to"]
        pops = self.populations.setdefault(family, Counter())
        if old is not None:
            pops[old] -= 1
        if new is not None:
            pops[new] += 1
        self.segment_changes += 1
        if self.first_change_after_s is None:
            self.first_change_after_s = time.monotonic() - self.started
        who = data["customer"]
        self.latest_changes.appendleft(f"{data['at'][:10]}  {who:<12} {family:<10} {old or '-':>11} → {new or '-':<11} {data['reason'][:60]}")

    @property
    def events_per_s(self) -> float:
        if len(self.rate_history) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.rate_history[0], self.rate_history[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def render(state: ViewState, metrics_url: str, log_path: Path) -> str:
    lines = [
        "\x1b[1mclv-streamer demo\x1b[0m — live scores and segments from simulated shop events   (Ctrl-C stops)",
        f"simulated time {state.sim_time:%Y-%m-%d} · produced {state.produced:,} events · worker {state.events_per_s:,.0f} events/s"
        if state.sim_time
        else "starting…",
        f"latency p50 {state.latency_p50_ms or 0:.1f} ms · p99 {state.latency_p99_ms or 0:.1f} ms · "
        f"score updates {state.scores:,} · segment changes {state.segment_changes:,} · dead-letter {sum(state.dead_letter.values()):,}",
        f"models {state.model_version}",
        f"dashboard {metrics_url.replace('/metrics', '/dashboard')} · metrics {metrics_url} · worker log {log_path}",
        "",
        "\x1b[1msegment populations\x1b[0m",
    ]
    for family in sorted(state.populations):
        pops = state.populations[family]
        parts = "  ".join(f"{seg} {n:,}" for seg, n in sorted(pops.items(), key=lambda kv: -kv[1]) if n > 0)
        lines.append(f"  {family:<11} {parts}")
    lines += ["", "\x1b[1mlatest segment changes\x1b[0m"]
    lines += [f"  {line}" for line in state.latest_changes]
    lines += ["", "\x1b[1mcampaign triggers\x1b[0m  " + "  ".join(f"{t} {n:,}" for t, n in state.triggers.most_common())]
    lines += [f"  {line}" for line in state.latest_triggers]
    lines += ["", "\x1b[1mtop customers by predicted CLV (BG/NBD + Gamma-Gamma, next year, margin, discounted)\x1b[0m"]
    for customer, clv in heapq.nlargest(5, state.clv.items(), key=lambda kv: kv[1]):
        lines.append(f"  {customer:<12} {clv:>10,.2f}")
    if state.dead_letter:
        lines += ["", "\x1b[1mdead-letter by reason\x1b[0m", "  " + "  ".join(f"{r} {n}" for r, n in state.dead_letter.most_common())]
    return "\x1b[H\x1b[2J" + "\n".join(lines) + "\n"


def summary_line(state: ViewState) -> str:
    pops = state.populations.get("lifecycle", Counter())
    lifecycle = " ".join(f"{k}={v}" for k, v in sorted(pops.items()) if v > 0)
    sim = f"{state.sim_time:%Y-%m-%d}" if state.sim_time else "-"
    return (
        f"sim {sim} produced={state.produced} worker={state.events_per_s:.0f}/s scores={state.scores} "
        f"segment_changes={state.segment_changes} dead_letter={sum(state.dead_letter.values())} lifecycle[{lifecycle}]"
    )


async def produce(
    bootstrap: str, topics: dict[str, str], sim: ShopSimulator, start: datetime, days_per_second: float, state: ViewState, **client_options: object
) -> None:
    """Publish simulated events, event time running ``days_per_second`` faster than real time
    until it reaches the present, then in real time (the worker rejects future events)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=2 * 1024 * 1024, **client_options)
    await producer.start()
    try:
        sim_time = start
        while True:
            now = datetime.now(timezone.utc)
            step = timedelta(days=days_per_second * TICK_S) if sim_time < now else timedelta(seconds=TICK_S)
            sim_time = min(sim_time + step, now) if sim_time < now else sim_time + step
            batch = []
            for role, key, value in sim.raw_events(until=sim_time):
                batch.append(await producer.send(topics[role], value=value, key=key))
            if batch:
                await asyncio.gather(*batch)
            state.produced += len(batch)
            state.sim_time = sim_time
            await asyncio.sleep(TICK_S)
    finally:
        await producer.stop()


async def consume_outputs(bootstrap: str, topics: dict[str, str], state: ViewState, **client_options: object) -> None:
    consumer = AIOKafkaConsumer(
        topics["segment-changes"], topics["customer-scores"], topics["dead-letter"], topics["campaign-triggers"], bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", **client_options
    )
    await consumer.start()
    try:
        async for message in consumer:
            doc = orjson.loads(message.value)
            data = doc["data"]
            if message.topic == topics["segment-changes"]:
                state.on_segment_change(data)
            elif message.topic == topics["customer-scores"]:
                state.scores += 1
                scores = data["scores"]
                state.clv[data["customer"]] = scores.get("predicted_clv", scores["formula_clv"])
                state.model_version = data["model_version"]
            elif message.topic == topics["campaign-triggers"]:
                state.on_trigger(data)
            else:
                state.dead_letter[data["reason"]] += 1
    finally:
        await consumer.stop()


async def scrape_metrics(url: str, state: ViewState) -> None:
    """Read the worker's own /metrics: throughput and latency come from the worker."""
    loop = asyncio.get_running_loop()
    while True:
        with contextlib.suppress(OSError):
            text = await loop.run_in_executor(None, lambda: urllib.request.urlopen(url, timeout=2).read().decode())
            consumed = 0.0
            buckets: list[tuple[float, float]] = []
            for line in text.splitlines():
                if line.startswith("clv_events_consumed_total{"):
                    consumed += float(line.rsplit(" ", 1)[1])
                elif line.startswith("clv_processing_latency_seconds_bucket{"):
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
            state.worker_consumed = consumed
            state.rate_history.append((time.monotonic(), consumed))
            p50, p99 = quantile_from_buckets(buckets, 0.5), quantile_from_buckets(buckets, 0.99)
            state.latency_p50_ms = p50 * 1000 if p50 not in (None, float("inf")) else None
            state.latency_p99_ms = p99 * 1000 if p99 not in (None, float("inf")) else None
        await asyncio.sleep(1.0)


async def show(state: ViewState, metrics_url: str, log_path: Path, view: bool, duration_s: float, stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set() and (duration_s <= 0 or time.monotonic() - started < duration_s):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if view:
            sys.stdout.write(render(state, metrics_url, log_path))
        else:
            print(summary_line(state), flush=True)


def start_worker(bootstrap: str, web_port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / "worker.log"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "WEB_PORT": str(web_port),
        "DATA_DIR": str(workdir / "data"),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "info"),
        # Refit often, so the demo shows the population models learning the simulated shop.
        "MODEL_REFIT_SECONDS": os.environ.get("MODEL_REFIT_SECONDS", "20"),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return process, log_path


async def _run(bootstrap: str, settings: settings_module.Settings, customers: int, days_per_second: float, duration_s: float, view: bool, seed: int, workdir: Path) -> ViewState:
    await ensure_topics(settings)
    start = (datetime.now(timezone.utc) - timedelta(days=3 * 365)).replace(hour=0, minute=0, second=0, microsecond=0)
    sim = ShopSimulator(customers, start, seed=seed, invalid_fraction=0.005)  # before the worker: it may refuse
    web_port = free_port()
    worker, log_path = start_worker(bootstrap, web_port, workdir)
    metrics_url = f"http://127.0.0.1:{web_port}/metrics"
    if not view:
        print(f"dashboard {metrics_url.replace('/metrics', '/dashboard')} · worker metrics {metrics_url} · worker log {log_path}", flush=True)
    state = ViewState()
    tasks = [
        asyncio.create_task(produce(bootstrap, settings.topics, sim, start, days_per_second, state, **settings.security.client_options())),
        asyncio.create_task(consume_outputs(bootstrap, settings.topics, state, **settings.security.client_options())),
        asyncio.create_task(scrape_metrics(metrics_url, state)),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)  # Ctrl-C: stop in order, then summarise
    try:
        shower = asyncio.create_task(show(state, metrics_url, log_path, view, duration_s, stop))
        while not shower.done():
            await asyncio.wait([shower, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with code {worker.returncode}; see {log_path}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_process(worker)
    return state


DEMO_NAMES = {
    "STREAMER_APP_ID": "clv-demo",
    "TOPIC_ORDERS": "demo-orders",
    "TOPIC_EMAIL": "demo-email-events",
    "TOPIC_COMMUNITY": "demo-community-events",
    "TOPIC_SCORES": "demo-customer-scores",
    "TOPIC_SEGMENTS": "demo-segment-changes",
    "TOPIC_TRIGGERS": "demo-campaign-triggers",
    "TOPIC_DEAD_LETTER": "demo-dead-letter",
    "TOPIC_MODELS": "demo-model-state",
    "TOPIC_ERASURE": "demo-erasure-requests",
    "TOPIC_AUDIT": "demo-audit",
}


def run_demo(customers: int = 2000, days_per_second: float = 3.0, duration_s: float = 0, view: bool = True, seed: int = 7) -> int:
    settings = settings_module.load()
    workdir = Path(tempfile.mkdtemp(prefix="clv-demo-"))
    broker = None
    bootstrap = settings.kafka_bootstrap
    if bootstrap:
        # On a real cluster the demo must not write simulated events into production topics
        # or join the production workers' group: it uses demo names unless told otherwise.
        for name, value in DEMO_NAMES.items():
            os.environ.setdefault(name, value)
        settings = settings_module.load()
        print(f"using Kafka at {bootstrap}: app id {settings.app_id}, topics {', '.join(sorted(settings.topics.values()))}", flush=True)
    else:
        broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
        bootstrap = broker.bootstrap
        os.environ["KAFKA_BOOTSTRAP"] = bootstrap
        settings = settings_module.load()
        print(f"embedded broker (Tansu) on {bootstrap}", flush=True)
    view = view and sys.stdout.isatty()
    state: ViewState | None = None
    try:
        state = asyncio.run(_run(bootstrap, settings, customers, days_per_second, duration_s, view, seed, workdir))
    except KeyboardInterrupt:
        pass
    finally:
        if broker is not None:
            broker.stop()
    if state is None:
        return 0
    if view:  # without the view the last summary line is already on screen
        print(summary_line(state))
    if state.first_change_after_s is not None:
        print(f"first segment change seen {state.first_change_after_s:.1f}s after start")
    if state.segment_changes == 0:
        print(f"no segment change seen: the worker's and the broker's logs are kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)  # worker log and RocksDB files of this run
    return 0

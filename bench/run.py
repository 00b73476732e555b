"""``python -m bench.run`` (``make bench``): broker, worker, ceiling, refit; a table on stdout,
the JSON in bench/results/. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import measure
from bench.ceiling import run_ceiling
from bench.load import Workload, generate
from bench.progress import say
from bench.quix import run_quix
from bench.refit import measure_refit
from bench.report import summarise, table, write_json
from bench.scores import ScoreWatcher
from bench.worker import TOPIC_VARS, WorkerProcess, topic_names
from streamer.broker import EmbeddedBroker
from streamer.settings import SETTINGS_DOC

INPUT_ROLES = ("orders", "email-events", "community-events")
PARTITIONS = int(SETTINGS_DOC["PARTITIONS"][0])  # the worker runs with the default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--customers", type=int, default=100_000, help="customers in the load (default 100,000)")
    p.add_argument("--days", type=float, default=28, help="days of shop life simulated for the load (default 28)")
    p.add_argument("--acquisition-days", type=float, default=21, help="first orders spread over this many days (default 21)")
    p.add_argument("--repeat", type=int, default=1, help="runs (fresh broker and worker each); the table shows ranges")
    p.add_argument("--latency-seconds", type=float, default=30, help="duration of the half-load latency phase (default 30)")
    p.add_argument(
        "--refit-customers", type=int, default=1_000_000, help="synthetic customers of the refit timing (default 1,000,000)"
    )
    p.add_argument("--quiet-timeout", type=float, default=30, help="give a phase up after this many seconds without progress")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--store", choices=("memory", "rocksdb"), default="memory", help="the worker's state store (default memory)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=worker_setting,
        help="a worker setting (README, Configuration) other than its default; repeatable",
    )
    p.add_argument(
        "--quix",
        choices=QUIX_CHOICES,
        default="all",
        help="Quix Streams phases after the ceiling: its ceiling's work and the full scorer (all, the default), "
        "the ceiling's work only, or none",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="JSON and logs go here")
    args = p.parse_args(argv)
    if args.quix != "none" and importlib.util.find_spec("quixstreams") is None:
        p.error("--quix needs Quix Streams, the bench extra: pip install -e '.[bench]' (make bench installs it), or --quix none")
    return args


#: --quix: which Quix Streams works run (bench.quix), in order.
QUIX_CHOICES = {"all": ("ceiling", "engine"), "ceiling": ("ceiling",), "none": ()}


def worker_setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of a documented worker setting (not one the bench sets itself)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in SETTINGS_DOC:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE with NAME a worker setting (README, Configuration)")
    if name in BENCH_OWNED:
        raise argparse.ArgumentTypeError(f"{name} is set by the bench itself")
    return name, value


#: Settings the bench sets for each run (unique names, the broker, the port, the store).
BENCH_OWNED = {"STREAMER_APP_ID", "KAFKA_BOOTSTRAP", "WEB_PORT", "DATA_DIR", "STORE", *TOPIC_VARS.values()}


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def run_once(index: int, workload: Workload, args: argparse.Namespace, logdir: Path, started: list[Any]) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    topics = topic_names(run_id)
    say(f"run {index + 1}/{args.repeat} (id {run_id}): starting the embedded broker")
    broker = EmbeddedBroker(log_path=logdir / f"run{index + 1}-tansu.log")
    started.append(broker)
    worker: WorkerProcess | None = None
    result: dict[str, Any] = {"run": index + 1, "run_id": run_id}
    try:
        broker.start()
        worker = WorkerProcess(run_id, broker.bootstrap, logdir / f"run{index + 1}-worker", args.store, dict(args.set))
        started.append(worker)
        worker.start()
        ready_s = worker.wait_ready()
        say(f"worker pid {worker.pid} ready in {ready_s:.2f}s (log {worker.log_path})")
        await asyncio.sleep(1.0)
        rss_before = worker.rss()
        watcher = await ScoreWatcher(broker.bootstrap, topics["customer-scores"]).start()
        try:
            samples: list[tuple[float, float, int]] = [(0.0, 0.0, rss_before)]
            thr = await measure.throughput(
                worker, watcher, broker.bootstrap, topics, workload, args.quiet_timeout, broker.process.pid, samples
            )
            mem = await measure.memory(worker, rss_before, workload.distinct_customers(), samples)
            rate = thr["events_per_s"] / 2
            lat = await measure.latency(
                worker, watcher, broker.bootstrap, topics, workload, rate, args.latency_seconds, args.quiet_timeout
            )
        finally:
            await watcher.stop()
        refits = worker.metric("clv_model_refits_total")
        worker.stop()
        say("worker stopped; running the ceiling on the same input topics")
        result["worker"] = {
            "pid": worker.pid,
            "ready_s": round(ready_s, 3),
            "throughput": thr,
            "memory": mem,
            "latency": lat,
            "background_refits": refits,
        }
        roles = {topics[role]: role for role in INPUT_ROLES}
        out_topic = f"bench-{run_id}-ceiling-out"
        await create_topic(broker.bootstrap, out_topic, PARTITIONS)
        # Everything the worker was offered: the main load, the latency phase's warm-up and its timed events.
        offered = len(workload.main) + lat.get("warmup_events", 0) + lat["events"]
        ceiling = await run_ceiling(broker.bootstrap, roles, out_topic, offered, args.quiet_timeout)
        say(f"ceiling: {ceiling['events']:,} events in {ceiling['seconds']:.1f}s: {ceiling['events_per_s']:,.0f} events/s")
        result["ceiling"] = ceiling
        result["ratio"] = round(thr["events_per_s"] / ceiling["events_per_s"], 4) if ceiling["events_per_s"] else None
        for work in QUIX_CHOICES[args.quix]:
            log_path = logdir / f"run{index + 1}-quix-{work}.log"
            try:
                quix = await run_quix_phase(broker.bootstrap, roles, run_id, work, offered, args, log_path)
            except RuntimeError as exc:  # the worker's figures are kept; the table shows "-"
                say(f"Quix Streams ({work} work) failed: {exc}")
                result.setdefault("quix", {})[work] = {"work": work, "error": str(exc)}
                continue
            result.setdefault("quix", {})[work] = quix
            quix["ratio"] = round(quix["events_per_s"] / ceiling["events_per_s"], 4) if ceiling["events_per_s"] else None
            if work == "engine":
                # The worker's work, each in its own framework.
                quix["worker_ratio"] = round(thr["events_per_s"] / quix["events_per_s"], 4) if quix["events_per_s"] else None
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    say(f"broker stopped; refit over {args.refit_customers:,} synthetic customers")
    measure_refit(10_000)  # warm-up: the worker's refits run in a warm process
    result["refit"] = measure_refit(args.refit_customers)
    say(f"refit: {result['refit']['seconds']:.2f}s")
    return result


async def run_quix_phase(
    bootstrap: str, roles: dict[str, str], run_id: str, work: str, expected: int, args: argparse.Namespace, log_path: Path
) -> dict[str, Any]:
    """Quix Streams doing ``work`` (bench.quix) over the same input topics as the ceiling."""
    out = f"bench-{run_id}-quix-{work}-out"
    if work == "ceiling":
        await create_topic(bootstrap, out, PARTITIONS)
    say(f"Quix Streams ({work} work) on the same input topics")
    quix = await run_quix(bootstrap, roles, out, expected, work, args.quiet_timeout, log_path)
    say(f"Quix Streams ({work} work): {quix['events']:,} events in {quix['seconds']:.1f}s: {quix['events_per_s']:,.0f} events/s")
    return quix


def host_info() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "streamer"], capture_output=True, text=True, check=False
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "streamer_modified": dirty,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logdir = args.out / f"logs-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "bench": "clv-streamer",
        "format": 1,
        "started_at": datetime.now(timezone.utc).isoformat(),
        "host": host_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    started: list[Any] = []
    workload = generate(args.customers, args.days, args.acquisition_days, args.seed)
    result["workload"] = {
        "customers": workload.distinct_customers(),
        "events": len(workload.main),
        "events_per_customer": round(len(workload.main) / max(workload.distinct_customers(), 1), 2),
        "mix": workload.mix(),
        "mean_event_bytes": round(workload.mean_value_bytes(), 1),
        "days": args.days,
        "acquisition_days": args.acquisition_days,
        "partitions": PARTITIONS,
        "generate_s": round(workload.generate_s, 3),
    }
    runs = []
    try:
        for i in range(args.repeat):
            runs.append(asyncio.run(run_once(i, workload, args, logdir, started)))
    finally:
        for process in reversed(started):  # whatever happened, nothing is left running
            process.stop()
    result["runs"] = runs
    result["summary"] = summarise(runs)
    result["finished_at"] = datetime.now(timezone.utc).isoformat()
    result["logs"] = str(logdir)
    path = write_json(result, args.out, stamp)
    result["json_path"] = str(path)
    print(table(result))
    print(f"\nJSON: {path}")
    return result


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; broker and worker stopped", file=sys.stderr)
        sys.exit(130)

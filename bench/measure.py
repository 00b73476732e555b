"""The worker phases of one run: throughput on a backlog, resident memory per customer, and
latency at a fixed offered load of half the measured maximum."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.load import Workload, event_id, new_producer, publish_all, publish_paced
from bench.progress import say
from bench.scores import ScoreWatcher, percentile
from bench.worker import WorkerProcess, cpu_seconds

#: The worker's own histogram: a record reached the agent -> its score update acknowledged.
AGENT_LATENCY = "clv_processing_latency_seconds"
GC_PAUSE = "clv_gc_pause_seconds"
#: Seconds of offered load sent (untimed) before the latency phase, to bring event time to now.
WARMUP_S = 3.0


async def throughput(
    worker: WorkerProcess,
    watcher: ScoreWatcher,
    bootstrap: str,
    topics: dict[str, str],
    workload: Workload,
    quiet_s: float,
    broker_pid: int,
    rss_samples: list[tuple[float, float, int]],
) -> dict[str, Any]:
    """Publish the whole load while the worker runs, then time it through the backlog. The
    rate is taken from the end of publishing (the publisher no longer competes for the CPU)
    to the last event score, unless that window holds under half of the events (tiny loads),
    then from the first event score to the last; a score's time is its record timestamp (when
    the worker produced it), so a late or restarted consumer does not skew it. CPU shares
    (1.0 = one core) are over the span from the end of publishing to the end of the wait.
    Meanwhile (customers in state, VmRSS) is sampled into ``rss_samples``.

    Events are counted as their scores arrive on the scores topic. If the embedded broker
    stops serving that topic (seen from ~30k records per partition on: the records are
    acknowledged, but fetches return nothing), the count falls back to the worker's own count
    of event scores the broker acknowledged (``clv_processing_latency_seconds_count``)."""
    expected = len(workload.main)
    acked: list[tuple[float, float]] = []  # (monotonic s, event scores acknowledged)
    sampler = asyncio.create_task(sample_rss(worker, rss_samples, acked))
    say(f"publishing {expected:,} events to the worker's input topics")
    try:
        published = await publish_all(bootstrap, topics, workload.main)
        t_pub, epoch_pub, count_pub, acked_pub = time.monotonic(), time.time(), watcher.event_scores, acked_count(worker)
        cpu_pub = {"worker": cpu_seconds(worker.pid), "broker": cpu_seconds(broker_pid)}
        say(
            f"published in {published['seconds']:.1f}s ({published['events_per_s']:,.0f} events/s); {count_pub:,} scored meanwhile"
        )
        complete = await watcher.wait_for(expected, worker.check_alive, quiet_s, "worker")
        acked_complete = complete or await wait_acked(worker, expected, quiet_s, acked)
        acked.append((time.monotonic(), acked_count(worker)))  # the sampler may not have seen the end
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    count = watcher.event_scores
    first = watcher.first_ts_ms / 1000 if watcher.first_ts_ms is not None else None
    last = watcher.last_ts_ms / 1000 if watcher.last_ts_ms is not None else None
    span = time.monotonic() - t_pub
    cpu = {
        name: round((cpu_seconds(pid) - cpu_pub[name]) / span, 3) if span > 0 else None
        for name, pid in (("worker", worker.pid), ("broker", broker_pid))
    }
    after = count - count_pub
    acked_end = next(((t, n) for t, n in acked if n >= expected), None)
    acked_rate = (expected - acked_pub) / (acked_end[0] - t_pub) if acked_end and acked_end[0] > t_pub else None
    if complete:
        source = "scores topic"
        if last is not None and last > epoch_pub and after >= count / 2:
            window, seconds, events = "after publishing", last - epoch_pub, after
        else:
            window, seconds, events = "first to last score", (last or 0.0) - (first or 0.0), count
    else:
        source = "worker acknowledgements"
        window, seconds, events = "after publishing", (acked_end[0] - t_pub) if acked_end else 0.0, expected - acked_pub
        say(
            f"worker: the scores topic stopped serving records at {count:,} event scores; timing by the worker's acknowledged scores"
        )
    rate = events / seconds if seconds > 0 else 0.0
    counters = worker_counters(worker)
    if not (complete or acked_complete):
        say(f"worker's own counters: {counters}")
    say(f"worker: {rate:,.0f} events/s ({window}, counted on the {source}); CPU worker {cpu['worker']}, broker {cpu['broker']}")
    return {
        "events": expected,
        "scored": count,
        "timer_scores": watcher.timer_scores,
        "complete": complete or acked_complete,
        "count_source": source,
        "scores_topic_complete": complete,
        "window": window,
        "window_events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(rate, 1),
        "events_per_s_by_acks": None if acked_rate is None else round(acked_rate, 1),
        "cpu_share_after_publishing": cpu,
        "worker_counters": counters,
        "scores_consumer_restarts": watcher.restarts,
        "publish": published,
    }


def acked_count(worker: WorkerProcess) -> float:
    """Event scores the broker acknowledged, by the worker's latency histogram's count."""
    return worker.metric(f"{AGENT_LATENCY}_count") or 0.0


async def wait_acked(worker: WorkerProcess, expected: int, quiet_s: float, acked: list[tuple[float, float]]) -> bool:
    """Wait until the worker's acknowledged event scores reach ``expected``; False if they
    stop growing for ``quiet_s``."""
    last_change = time.monotonic()
    last = -1.0
    while True:
        worker.check_alive()
        n = acked_count(worker)
        now = time.monotonic()
        acked.append((now, n))
        if n >= expected:
            return True
        if n != last:
            last, last_change = n, now
        elif now - last_change > quiet_s:
            return False
        await asyncio.sleep(0.5)


def worker_counters(worker: WorkerProcess) -> dict[str, float | None]:
    """What the worker says it did (to tell a stalled worker from a stalled count)."""
    return {
        "consumed": worker.metric("clv_events_consumed_total"),
        "scores_published": worker.metric("clv_events_published_total", topic="customer-scores"),
        "timers_fired": worker.metric("clv_timers_fired_total"),
        "invalid": worker.metric("clv_events_invalid_total"),
        "publish_errors": worker.metric("clv_publish_errors_total"),
    }


async def sample_rss(
    worker: WorkerProcess, samples: list[tuple[float, float, int]], acked: list[tuple[float, float]], every_s: float = 2.0
) -> None:
    """(seconds, customers in state, VmRSS) into ``samples`` and (monotonic s, acknowledged
    event scores) into ``acked``, every ``every_s`` while the load goes in."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        try:
            customers = worker.metric("clv_customers_in_state")
            samples.append((round(time.monotonic() - started, 2), customers or 0.0, worker.rss()))
            acked.append((time.monotonic(), acked_count(worker)))
        except (OSError, RuntimeError):
            pass


def slope(samples: list[tuple[float, float, int]], customers: int) -> float | None:
    """Least-squares bytes per customer over the samples taken between 20 % and 95 % of the
    customers loaded: the growth with customers, without the fixed costs that come with the
    first records (fetch and producer buffers, first-use allocations)."""
    points = [(c, r) for _, c, r in samples if 0.2 * customers <= c <= 0.95 * customers]
    if len({c for c, _ in points}) < 3:
        return None
    mean_c = sum(c for c, _ in points) / len(points)
    mean_r = sum(r for _, r in points) / len(points)
    var = sum((c - mean_c) ** 2 for c, _ in points)
    return sum((c - mean_c) * (r - mean_r) for c, r in points) / var


async def memory(
    worker: WorkerProcess, rss_before: int, customers: int, samples: list[tuple[float, float, int]], wait_s: float = 15.0
) -> dict[str, Any]:
    """RSS after the load, once the worker's customers gauge (updated every 5 s) shows them all."""
    deadline = time.monotonic() + wait_s
    in_state = None
    while time.monotonic() < deadline:
        in_state = worker.metric("clv_customers_in_state")
        if in_state is not None and in_state >= customers:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    rss_after = worker.rss()
    per_customer = (rss_after - rss_before) / customers if customers else 0.0
    say(
        f"memory: VmRSS {rss_before / 2**20:,.1f} MiB -> {rss_after / 2**20:,.1f} MiB over {customers:,} customers: {per_customer:,.0f} bytes each"
    )
    samples.append((samples[-1][0] if samples else 0.0, in_state or 0.0, rss_after))
    return {
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "customers": customers,
        "customers_in_state_metric": in_state,
        "bytes_per_customer": round(per_customer, 1),
        "bytes_per_customer_slope": None if (b := slope(samples, customers)) is None else round(b, 1),
        "rss_samples": samples,
    }


async def latency(
    worker: WorkerProcess,
    watcher: ScoreWatcher,
    bootstrap: str,
    topics: dict[str, str],
    workload: Workload,
    rate: float,
    seconds: float,
    quiet_s: float,
) -> dict[str, Any]:
    """Offer new events of the same customers at ``rate`` for ``seconds``; time each one from
    its send to the moment the score it caused is seen on the scores topic (and, second
    figure, from the input record's timestamp to the score record's).

    The events are live: stamped with the moment they are sent, so event time moves at wall
    speed and timers fall due at their real rate. (Sent with their simulated times, 30 s of
    offering covered ~3 simulated days, whose timers all fired within those 30 s: ~10,000x
    the real rate.) A warm-up of ``WARMUP_S`` worth of events first moves every partition's
    clock from the end of the main load to now, and the timers due in that gap fire there,
    untimed; the phase starts once the worker is quiet."""
    warmup = workload.more(max(1, int(rate * WARMUP_S)))
    records = workload.more(len(warmup) + max(1, int(rate * seconds)))[len(warmup):]
    producer = new_producer(bootstrap, linger_ms=0)
    await producer.start()
    try:
        base, base_timers = watcher.event_scores, watcher.timer_scores
        await publish_paced(producer, topics, warmup, rate, lambda i, now: None, live=True)
        await watcher.wait_for(base + len(warmup), worker.check_alive, quiet_s, "latency warm-up")
        timers_in_warmup = await wait_quiet(watcher, base_timers=base_timers, quiet_s=2.0, timeout_s=quiet_s * 4)
        say(f"latency: warm-up of {len(warmup):,} live events done ({timers_in_warmup:,} timer scores since the main load)")

        ids = [event_id(value) for _, _, value in records]
        say(f"latency: offering {len(records):,} live events at {rate:,.0f} events/s")
        base, base_timers = watcher.event_scores, watcher.timer_scores
        timed_from = len(watcher.timings)
        agent_before = worker.histogram(AGENT_LATENCY)
        gc_before = worker.histogram(GC_PAUSE, generation="2")

        def on_send(i: int, now: float) -> None:
            watcher.sent[ids[i]] = (now, int(now * 1000))

        offered_s = await publish_paced(producer, topics, records, rate, on_send, live=True)
    finally:
        await producer.stop()
    await watcher.wait_for(base + len(records), worker.check_alive, quiet_s, "latency")
    timings = sorted(watcher.timings[timed_from:])  # in send order
    e2e = [t[1] * 1000 for t in timings]
    ts = [t[2] * 1000 for t in timings]
    thirds = [e2e[i * len(e2e) // 3 : (i + 1) * len(e2e) // 3] for i in range(3)]
    agent = bucket_quantiles(agent_before, worker.histogram(AGENT_LATENCY))
    gc_full = gc_pauses(gc_before, worker.histogram(GC_PAUSE, generation="2"))
    watcher.sent.clear()
    result = {
        "offered_events_per_s": round(rate, 1),
        "events": len(records),
        "offered_seconds": round(offered_s, 3),
        "achieved_events_per_s": round(len(records) / offered_s, 1) if offered_s else 0.0,
        "matched": len(e2e),
        "missing": len(records) - len(e2e),
        "timer_scores": watcher.timer_scores - base_timers,
        "warmup_events": len(warmup),
        "warmup_timer_scores": timers_in_warmup,
        "scores_consumer_restarts": watcher.restarts,
        "e2e_p50_ms": _round(percentile(e2e, 50)),
        "e2e_p99_ms": _round(percentile(e2e, 99)),
        "e2e_max_ms": _round(max(e2e) if e2e else None),
        "record_ts_p50_ms": _round(percentile(ts, 50)),
        "record_ts_p99_ms": _round(percentile(ts, 99)),
        "e2e_p50_ms_by_third": [_round(percentile(third, 50)) for third in thirds],
        "worker_histogram_p50_le_ms": agent[50],
        "worker_histogram_p99_le_ms": agent[99],
        # Full collections of Python's garbage collector in the phase: each stops the worker.
        "gc_full_collections": gc_full[0],
        "gc_full_longest_le_ms": gc_full[1],
    }
    result["complete"] = result["missing"] <= 0.01 * len(records)
    if not result["complete"]:
        # The scores topic stopped serving (see throughput): what did arrive came late through
        # consumer restarts, so these figures would measure the bench, not the worker.
        for key in [k for k in result if k.startswith(("e2e_", "record_ts_"))]:
            result[f"partial_{key}"], result[key] = result[key], None if key != "e2e_p50_ms_by_third" else [None] * 3
    say(
        f"latency: {len(e2e):,}/{len(records):,} matched, p50 {result['e2e_p50_ms']} ms, p99 {result['e2e_p99_ms']} ms (send -> score seen)"
    )
    return result


async def wait_quiet(watcher: ScoreWatcher, base_timers: int, quiet_s: float, timeout_s: float) -> int:
    """Wait until no score record arrived for ``quiet_s`` (or ``timeout_s``); returns the timer
    scores seen since ``base_timers``."""
    deadline = time.monotonic() + timeout_s
    last, last_change = watcher.records, time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if watcher.records != last:
            last, last_change = watcher.records, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            break
    return watcher.timer_scores - base_timers


def gc_pauses(before: dict[float, float], after: dict[float, float]) -> tuple[int, float | None]:
    """(collections, upper bound in ms of the bucket of the longest) between two readings of
    the worker's ``clv_gc_pause_seconds`` histogram for one generation (None: no collection,
    or the longest was beyond the last bucket)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = int(delta.get(float("inf"), 0.0))
    longest = min((le for le, n in delta.items() if n >= total), default=None) if total else None
    return total, None if longest is None or longest == float("inf") else round(longest * 1000, 2)


def bucket_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[int, float | str | None]:
    """p50 and p99 of the observations between two readings of a cumulative histogram, as the
    upper bound (ms) of the bucket they fall in ("+Inf": beyond the last bucket)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    out: dict[int, float | str | None] = {}
    for q in (50, 99):
        bound = next((le for le, n in delta.items() if total and n >= total * q / 100), None)
        out[q] = None if bound is None else (round(bound * 1000, 2) if bound != float("inf") else "+Inf")
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

"""The agents: one per input topic, all feeding the same core engine and state table.

Errors are contained per event: an exception while processing one record sends that record
to dead-letter and the agent carries on. (A Faust agent that raises is restarted and the
records it crashed on are acked — lost — so nothing may escape this loop.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator


from aiokafka.admin import NewTopic

from streamer.core.engine import SCORES, Engine, Record, Result
from streamer.core.views import RecentActivity
from streamer.core.state import CustomerState
from streamer.core.timers import DiskTimers
from streamer.metrics import Metrics
from streamer.models.scorer import fit_population
from streamer.shell.app import app, settings
from streamer.shell.broker_watch import BrokerWatch
from streamer.shell.channels import inputs, outputs
from streamer.shell.model_state import read_latest
from streamer.shell.tables import ERASED_PREFIX, customers, erasure_entry, partition_context, store
from streamer.topics import COMPACTED

log = logging.getLogger(__name__)



def disk_timers(partition: int) -> DiskTimers:
    """STORE=rocksdb: a partition's due times in a RocksDB database of their own, next to the
    table's (rebuilt from the states whenever the partition is assigned)."""
    return DiskTimers(Path(settings.data_dir) / f"{settings.app_id}-timers" / f"p{partition}")


engine = Engine(settings.scoring, settings.limits, clock=settings.clock, disk_timers=disk_timers if settings.store == "rocksdb" else None)
metrics = Metrics(input_topics=settings.input_roles)
metrics.track_gc_pauses()
#: The changelog must stay co-partitioned with the inputs too; Faust declares it once per process.
broker_watch = BrokerWatch(
    settings,
    [NewTopic(customers.changelog_topic.get_topic_name(), settings.partitions, settings.replication_factor, topic_configs=COMPACTED)],
)
#: Segment flows and latest triggers, for the dashboard.
activity = RecentActivity()


def to_record(role: str, message: Any) -> Record:
    timestamp = getattr(message, "timestamp", None)
    return Record(
        topic_role=role,
        topic=message.topic,
        partition=message.partition if message.partition is not None else 0,
        offset=message.offset,
        key=message.key,
        value=message.value,
        # Kafka says -1 when a record has no timestamp.
        timestamp_ms=int(timestamp * 1000) if timestamp and timestamp > 0 else None,
    )


async def handle(role: str, event: Any, taken: float | None = None) -> Result:
    """Process one Faust event end to end; never raises for a bad or unlucky record.
    ``taken``: when the agent took the record (its batch), for the latency metric, which
    then includes the wait behind the batch's earlier records."""
    started = time.perf_counter() if taken is None else taken
    record = to_record(role, event.message)
    # Held from the state change until its outputs are queued on the producer: another agent
    # (the same customer's other topics) or the write-back must not come in between.
    async with store.changing:
        try:
            result = engine.process(record, store)
        except Exception as exc:  # noqa: BLE001 - containment is the point
            # No customer id above debug: name the position and the exception type only.
            log.error("processing failed at %s[%d]@%d: %s", record.topic, record.partition, record.offset, type(exc).__name__)
            log.debug("processing failure detail", exc_info=True)
            result = engine.reject(record, "processing_error", f"{type(exc).__name__}: {exc}")
        try:
            await publish(result, started)
        except Exception as exc:  # noqa: BLE001 - nothing may escape the agent loop
            metrics.publish_errors.inc()
            log.error("publishing results failed at %s[%d]@%d: %s", record.topic, record.partition, record.offset, type(exc).__name__)
    if result.drifts:
        log.warning("drift detected (ADWIN) in the online purchase model's error; it keeps learning from new labels")
    try:
        metrics.record(role, record.partition, result, result.event_time)
        activity.record(result)
    except Exception as exc:  # noqa: BLE001 - a metrics bug must not crash the agent
        log.error("metrics update failed: %s", type(exc).__name__)
    return result


#: logical output role -> topic name, for the direct sends below.
output_topics = {role: topic.get_topic_name() for role, topic in outputs.items()}


def _delivered(topic_role: str, delivery: asyncio.Future, started: float | None = None) -> None:
    """An outgoing record's delivery is settled: count it as published, or as failed after
    the producer took it (retries and timeout spent); if it is a record's score update
    (``started`` set), observe the record's processing latency, from taking it to the score
    acknowledged."""
    if delivery.cancelled():
        return
    if delivery.exception() is not None:
        metrics.publish_errors.inc()
        log.error("an outgoing record was not delivered: %s", type(delivery.exception()).__name__)
        return
    metrics.delivered(topic_role)
    if started is not None:
        metrics.latency.observe(time.perf_counter() - started)


#: output role -> its delivery callback (one partial per role, not one per record).
_DELIVERED = {role: partial(_delivered, role) for role in outputs}


async def publish(result: Result, started: float | None) -> None:
    """Queue every outgoing record on the Kafka client, in order; the event's own score update
    also measures latency (on its delivery).

    Straight to the client (Faust's ``Producer.send``), not ``Topic.send_soon``: Faust's
    per-message futures and producer buffer cost ~65 µs a record, at ~3 outputs an event.
    The caller holds ``store.changing``, so no other agent changes the same customer's state
    and queues its outputs in between (three agents share the table), even when a send waits
    for room in the client's buffer; and the write-back that runs before each offset commit
    takes the changed states under the same lock, then waits for every output queued so far
    to be acknowledged before it writes them (see ``tables.TableStore.flush``).
    """
    send = app.producer.send
    last_score = None
    if started is not None:  # a record's processing latency (not a wall-clock tick's)
        last_score = max((i for i, out in enumerate(result.outgoing) if out.topic_role == SCORES), default=None)
    for i, out in enumerate(result.outgoing):
        try:
            delivery = await send(output_topics[out.topic_role], out.key, out.value, None, None, None)
        except Exception as exc:  # noqa: BLE001 - one refused record (too large, ...) must not drop the others
            metrics.publish_errors.inc()
            log.error("the producer refused an outgoing %s record: %s", out.topic_role, type(exc).__name__)
            continue
        delivery.add_done_callback(partial(_delivered, out.topic_role, started=started) if i == last_score else _DELIVERED[out.topic_role])


def _agent_for(role: str) -> Any:
    async def process(stream: AsyncIterator[Any]) -> None:
        if settings.batch_max_events == 1:
            async for event in stream.events():  # type: ignore[attr-defined]
                await handle(role, event)
            return
        # In batches: Faust acknowledges a batch's records after this loop body is done
        # with all of them (so an offset is committed only for processed records), and
        # per-record awaits and acks give way to one per batch. Each record is still
        # processed, and its errors contained, on its own, in the partition's order.
        batches = stream.take_events(settings.batch_max_events, within=settings.batch_wait_ms / 1000)  # type: ignore[attr-defined]
        async for events in batches:
            taken = time.perf_counter()
            for event in events:
                await handle(role, event, taken)

    process.__name__ = f"score_{role.replace('-', '_')}"
    return app.agent(inputs[role], name=f"streamer.score-{role}")(process)


score_orders = _agent_for("orders")
score_email_events = _agent_for("email-events")
score_community_events = _agent_for("community-events")
erase_customers = _agent_for("erasure-requests")


#: States rebuilt between two pauses of ``rebuild_partitions`` (~60 ms of work here).
REBUILD_PAUSE_EVERY = 2_000


@customers.on_recover
async def rebuild_partitions() -> None:
    """After recovery, rebuild each active partition's clock, due-queue and ranking."""
    changelog = customers.changelog_topic.get_topic_name()
    assigned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}
    for partition in list(engine.partitions):
        if partition not in assigned:
            engine.forget_partition(partition)
    # One state at a time, straight from the table (with RocksDB, from disk). Faust resumes
    # the input partitions only after this returns, so nothing writes the table meanwhile;
    # the pauses let the rest of the loop run: at ~35,000 states/s, millions of customers
    # would otherwise hold /healthz (the liveness probe), /metrics and the consumer's
    # heartbeats for minutes.
    restore = engine.begin_restore(assigned)
    try:
        for n, (key, raw) in enumerate(customers.items(), start=1):
            if key.startswith(ERASED_PREFIX):
                restore.add_erasure(*erasure_entry(key, raw))
            else:
                restore.add(CustomerState.from_bytes(raw))
            if n % REBUILD_PAUSE_EVERY == 0:
                await asyncio.sleep(0)
        restored = restore.finish()
    except RuntimeError:  # the table changed during a pause after all: once more, without
        log.warning("the state table changed while partitions were rebuilt; rebuilding again in one pass")
        restored = engine.restore_partitions(
            assigned,
            (CustomerState.from_bytes(raw) for key, raw in customers.items() if not key.startswith(ERASED_PREFIX)),
            (erasure_entry(key, raw) for key, raw in customers.items() if key.startswith(ERASED_PREFIX)),
        )
    erasures = sum(len(engine.partitions[p].erasures) for p in assigned if p in engine.partitions)
    log.info("state ready: %d customers on %d partitions (%d erased customers remembered)", restored, len(assigned), erasures)
    await load_models()


async def load_models() -> None:
    """Take the latest persisted models (population parameters, online learners) that are
    newer than the ones this worker has."""
    latest = await read_latest(settings.kafka_bootstrap, settings.topics["model-state"], **settings.security.client_options())
    taken = engine.import_models({key.decode(): value for key, value in latest.items()})
    if taken:
        log.info("models loaded from %s: %s; now %s", settings.topics["model-state"], ", ".join(taken), engine.model_version)


def persist_models() -> None:
    """Write the current models to the compacted model-state topic (latest per key)."""
    for key, value in engine.export_models().items():
        outputs["model-state"].send_soon(key=key.encode(), value=value)


async def advance_wall_clock() -> int:
    """CLOCK=wall: move every partition's clock to now and fire the timers it passes, so a
    quiet partition's customers still lapse, and get their triggers, on time. Returns the
    timers fired."""
    if app.rebalancing or not app.tables.recovery.completed.is_set():
        return 0  # partitions are moving: only an owner that has recovered may write
    now = time.time()
    fired = 0
    for partition in list(engine.partitions):
        try:
            async with store.changing:
                with partition_context(partition):
                    result = engine.advance_clock(partition, now, store)
                await publish(result, None)
            metrics.record_evaluations(result, partition, None)  # wall time is no event time
            activity.record(result)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again; agents go on
            log.error("wall-clock tick failed on partition %d: %s", partition, type(exc).__name__)
            continue
        fired += result.timers_fired
    return fired


if settings.clock == "wall":
    app.timer(interval=settings.clock_tick_seconds, name="streamer.wall-clock")(advance_wall_clock)


@app.task
async def freeze_startup_heap() -> None:
    """Exempt what the imports and Faust's start-up built from garbage collection.

    ~150,000 long-lived objects (modules, classes, Faust's services) that every full
    collection would otherwise walk again while the worker stands still; they are never
    garbage. Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


@app.task
async def watch_broker() -> None:
    """Readiness follows the broker; topics it lost (a restart without its data) are recreated."""
    while True:
        await asyncio.sleep(broker_watch.interval)
        await broker_watch.probe()


#: input topic name -> its role (the label of the lag series).
_INPUT_ROLE_OF = {settings.topics[role]: role for role in settings.input_roles}
#: How long one lag sample may wait for the broker's end offsets.
LAG_TIMEOUT_S = 4.0


async def consumer_lags() -> dict[tuple[str, int], int]:
    """(input role, partition) -> records not processed and committed yet, for the input
    partitions assigned to this worker: end offsets asked of the broker (so a consumer that
    stopped fetching still shows its lag), minus the offsets the group committed.

    A partition this worker has not committed since the last rebalance (Faust's monitor
    forgets committed offsets at every rebalance) is measured from the group's offset read at
    that assignment, or from its earliest offset if the group never committed one: a worker
    stuck from its first record on shows its lag too."""
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic in _INPUT_ROLE_OF]
    if not tps:
        return {}
    ends = await asyncio.wait_for(consumer.highwaters(*tps), LAG_TIMEOUT_S)
    committed = app.monitor.tp_committed_offsets
    at_assignment = getattr(consumer, "assigned_committed", {})
    positions: dict[Any, int | None] = {tp: committed.get(tp) or at_assignment.get(tp) for tp in tps}
    never = [tp for tp, position in positions.items() if not position]
    if never:
        positions.update(await asyncio.wait_for(consumer.earliest_offsets(*never), LAG_TIMEOUT_S))
    lags = {}
    for tp in tps:
        end, position = ends.get(tp), positions.get(tp)
        if end is None or position is None:
            continue  # the broker did not answer for it: no lag to report
        # max(): the embedded broker's end offsets can miss the newest batch.
        lags[(_INPUT_ROLE_OF[tp.topic], tp.partition)] = max(end - position, 0)
    return lags


@app.timer(interval=5.0)
async def report_consumer_lag() -> None:
    if app.rebalancing:
        return  # the assignment is changing
    try:
        metrics.set_consumer_lag(await consumer_lags())
    except Exception as exc:  # noqa: BLE001 - a metric must not take the worker down; next tick tries again
        log.debug("consumer lag not sampled: %s", type(exc).__name__)  # an outage: the broker watch says so


@app.timer(interval=5.0)
async def report_state_size() -> None:
    # From the engine's counts: len() of a RocksDB-backed table scans every key.
    metrics.customers.set(engine.customers)
    metrics.sample_rate(time.monotonic())
    if engine.online is not None:
        metrics.set_online_quality(engine.online.learner.quality.snapshot())


@app.timer(interval=settings.model_refit_seconds)
async def refit_population() -> None:
    """Refit BG/NBD and Gamma-Gamma on this worker's customers without pausing the stream.

    The summaries are snapshotted on the event loop (a consistent view, no table scan); the
    fit runs in a thread and the new parameters are swapped in whole when it is done.
    """
    scorer = engine.btyd
    if scorer is None:
        return
    x, t_x, T, m, now = engine.population_summaries()
    if len(x) == 0:
        return
    started = time.perf_counter()
    try:
        model = await asyncio.get_running_loop().run_in_executor(None, fit_population, x, t_x, T, m, now, scorer.model)
    except Exception as exc:  # noqa: BLE001 - keep scoring with the parameters in force
        log.error("population refit failed: %s", type(exc).__name__)
        return
    elapsed = time.perf_counter() - started
    metrics.observe_refit(elapsed)
    persist_models()  # the online learners have moved on since the last refit too
    if model.version != scorer.model.version:
        scorer.model = model
        log.info("population models refitted over %d customers in %.2fs: version %s", len(x), elapsed, model.version)

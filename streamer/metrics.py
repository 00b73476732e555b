"""Prometheus metrics — the only module that imports ``prometheus_client``.

Labels are bounded sets (topic, event type, reason, family, segment, partition); never a
customer id, so cardinality stays fixed however many customers there are.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streamer.core.config import TRIGGER_NAMES
from streamer.core.engine import Result
from streamer.core.triggers import CONSENT, COOLDOWN, FIRED

TRIGGER_STATUSES = (FIRED, COOLDOWN, CONSENT)

ONLINE_QUALITY_METRICS = ("roc_auc", "log_loss", "mae", "mae_btyd", "roc_auc_btyd", "labels", "drifts")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)

#: Name and help of the two gauges a worker shows from its start, also while it waits for the
#: broker (``waiting_for_broker_page``): an outage is then an alert of its own, not a scrape
#: that fails as if the worker were down.
READY = ("clv_worker_ready", "1 while the worker is ready (/readyz answers 200): table recovered, no rebalance in progress, broker reachable with its topics co-partitioned.")
BROKER_REACHABLE = ("clv_broker_reachable", "1 while the worker's last probe of the Kafka broker was answered (every 5 s; every 1 s while it is not).")


def waiting_for_broker_page() -> tuple[bytes, str]:
    """The /metrics page of a starting worker that waits for its broker: not ready, broker
    not reachable (the worker's own metrics exist only once it runs)."""
    registry = CollectorRegistry()
    Gauge(*READY, registry=registry).set(0)
    Gauge(*BROKER_REACHABLE, registry=registry).set(0)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class Metrics:
    """The worker's metrics; one instance per process (it registers collectors)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, input_topics: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self._rate_samples: deque[tuple[float, float]] = deque(maxlen=7)
        #: (metric, label values) -> child, see _child.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.consumed = Counter(
            "clv_events_consumed_total", "Input records consumed, by topic and event type.", ["topic", "type"], registry=registry
        )
        self.invalid = Counter(
            "clv_events_invalid_total", "Input records sent to dead-letter, by topic and reason.", ["topic", "reason"], registry=registry
        )
        self.duplicates = Counter(
            "clv_events_duplicate_total", "Valid events ignored because they were already applied.", ["topic"], registry=registry
        )
        self.latency = Histogram(
            "clv_processing_latency_seconds",
            "Time from a record reaching the agent (the batch it came in) to its score update being acknowledged by the broker.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.gc_pause = Histogram(
            "clv_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation: the whole process stops "
            "while it runs, so a full (generation 2) collection delays every event in flight.",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=registry,
        )
        self._gc_started: float | None = None
        self._gc_tracked = False
        self.transitions = Counter(
            "clv_segment_transitions_total", "Segment changes published, by family and from/to segment.", ["family", "from_segment", "to_segment"], registry=registry
        )
        self.triggers = Counter(
            "clv_campaign_triggers_total",
            "Campaign triggers that came due, by trigger and status: fired, or suppressed by cooldown or consent.",
            ["trigger", "status"],
            registry=registry,
        )
        self.erasures = Counter(
            "clv_erasures_total", "Erasure requests carried out, by whether the customer was found.", ["found"], registry=registry
        )
        self.before_erasure = Counter(
            "clv_events_before_erasure_total",
            "Valid events of an erased customer dated at or before their erasure, read after it: dropped, not applied.",
            ["topic"],
            registry=registry,
        )
        # Every series of these bounded label sets exists from the start (at 0), so rates and
        # alerts see a 0 -> n increase and dashboards show them before the first occurrence.
        for trigger in TRIGGER_NAMES:
            for status in TRIGGER_STATUSES:
                self.triggers.labels(trigger, status)
        for found in ("true", "false"):
            self.erasures.labels(found)
        # A processing error is a bug, usually a rare one: its alert needs the 0 before the 1.
        for topic in input_topics:
            self.invalid.labels(topic, "processing_error")
            self.before_erasure.labels(topic)  # rare: a rate needs the 0 before the 1
        self.published = Counter(
            "clv_events_published_total",
            "Records produced (acknowledged by the broker), by output topic; failed ones count in clv_publish_errors_total.",
            ["topic"],
            registry=registry,
        )
        self.publish_errors = Counter(
            "clv_publish_errors_total", "Outgoing records the producer refused or could not deliver.", registry=registry
        )
        self.timers = Counter("clv_timers_fired_total", "Due-queue timers fired (segment changes and campaign triggers with no new event, delayed labels).", registry=registry)
        self.timer_errors = Counter("clv_timer_errors_total", "Timers whose re-evaluation failed (the customer is skipped).", registry=registry)
        self.online_quality = Gauge(
            "clv_online_quality",
            "Progressive validation of the online learners on delayed labels: roc_auc, log_loss, mae (learned), "
            "mae_btyd and roc_auc_btyd (BG/NBD alone on the same labels), labels.",
            ["metric"],
            registry=registry,
        )
        self.labels = Counter("clv_online_labels_total", "Delayed labels learned by the online models.", registry=registry)
        self.drifts = Counter("clv_drift_detected_total", "Drifts detected by ADWIN in the online purchase model's error.", registry=registry)
        self.refits = Counter("clv_model_refits_total", "Background refits of the population models.", registry=registry)
        self.refit_seconds = Gauge("clv_model_refit_duration_seconds", "Duration of the last population refit.", registry=registry)
        self.ready = Gauge(*READY, registry=registry)
        self.broker_reachable = Gauge(*BROKER_REACHABLE, registry=registry)
        self.broker_reachable.set(1)  # a worker runs only once it has reached the broker
        self.customers = Gauge("clv_customers_in_state", "Customers held in this worker's state table.", registry=registry)
        self.event_time = Gauge(
            "clv_partition_event_time_seconds",
            "Newest event time (epoch s) among the valid events consumed from each input partition (never the wall clock).",
            ["partition"],
            registry=registry,
        )
        self._newest_event_time: dict[int, float] = {}
        self.consumer_lag = Gauge(
            "clv_consumer_lag_records",
            "Records of an input partition this worker owns that are not processed and committed yet: "
            "the partition's end offset minus the group's committed offset (sampled every 5 s).",
            ["topic", "partition"],
            registry=registry,
        )
        self._lag_series: set[tuple[str, str]] = set()

    def set_online_quality(self, quality: dict[str, float]) -> None:
        """Progressive-validation quality of the online learners (and of BTYD on the same labels)."""
        for name, value in quality.items():
            if name in ONLINE_QUALITY_METRICS and value == value:  # skip NaN (no labels yet)
                self.online_quality.labels(name).set(value)

    def observe_refit(self, seconds: float) -> None:
        self.refits.inc()
        self.refit_seconds.set(seconds)

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: the lookup (validation, a lock) cost more
        than the increment, several times per record. Label values are bounded sets (topics,
        event types, reasons, segments, partitions), never ids."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def record(self, topic: str, partition: int, result: Result, event_time: float | None) -> None:
        """Count one processed record (latency is observed when the score is acknowledged)."""
        child = self._child
        if result.rejected is not None:
            child(self.consumed, topic, "invalid").inc()
            child(self.invalid, topic, result.rejected).inc()
        else:
            child(self.consumed, topic, result.event_type or "unknown").inc()
            if result.duplicate:
                child(self.duplicates, topic).inc()
            if result.before_erasure:
                child(self.before_erasure, topic).inc()
            if result.erased is not None:
                child(self.erasures, str(result.erased).lower()).inc()
        self.record_evaluations(result, partition, event_time)

    def record_evaluations(self, result: Result, partition: int, event_time: float | None) -> None:
        """What evaluating customers produced, with or without an input record (a wall-clock tick)."""
        child = self._child
        for t in result.transitions:
            child(self.transitions, t.family, t.old or "none", t.new or "none").inc()
        for outcome in result.triggers:
            child(self.triggers, outcome.trigger, outcome.status).inc()
        if result.timers_fired:
            self.timers.inc(result.timers_fired)
        if result.labels_learned:
            self.labels.inc(result.labels_learned)
        if result.drifts:
            self.drifts.inc(result.drifts)
        if result.timer_errors:
            self.timer_errors.inc(result.timer_errors)
        if event_time is not None and event_time > self._newest_event_time.get(partition, float("-inf")):
            self._newest_event_time[partition] = event_time
            child(self.event_time, str(partition)).set(event_time)

    def set_consumer_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """The lag of each (input topic, partition) this worker owns now; the series of
        partitions it no longer owns go (their new owner reports them)."""
        current = set()
        for (topic, partition), lag in lags.items():
            labels = (topic, str(partition))
            current.add(labels)
            self.consumer_lag.labels(*labels).set(lag)
        for labels in self._lag_series - current:
            self.consumer_lag.remove(*labels)
        self._lag_series = current

    def delivered(self, topic_role: str) -> None:
        """One outgoing record acknowledged by the broker."""
        self._child(self.published, topic_role).inc()

    def consumed_total(self) -> float:
        return sum(s.value for m in self.consumed.collect() for s in m.samples if s.name.endswith("_total"))

    def sample_rate(self, now: float) -> None:
        """Remember the consumed count now (called every few seconds), for events_per_s."""
        self._rate_samples.append((now, self.consumed_total()))

    def events_per_s(self) -> float:
        """Records consumed per second over the last ~30 s of samples."""
        if len(self._rate_samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._rate_samples[0], self._rate_samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def snapshot(self) -> dict[str, object]:
        """Consumed records, their rate and the latency histogram's cumulative buckets, as
        plain JSON (for the dashboard, which adds several workers' snapshots up)."""
        consumed = self.consumed_total()
        buckets = [
            # Bounds stay strings ("+Inf"): JSON has no infinity.
            [s.labels["le"], s.value] for m in self.latency.collect() for s in m.samples if s.name.endswith("_bucket")
        ]
        return {"consumed": consumed, "events_per_s": self.events_per_s(), "latency_buckets": buckets}

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for the /metrics page."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def track_gc_pauses(self) -> None:
        """Time every collection of the cyclic garbage collector into ``clv_gc_pause_seconds``
        (once per process; the callback costs two clock reads per collection)."""
        if self._gc_tracked:
            return
        self._gc_tracked = True
        histograms = [self.gc_pause.labels(generation=str(g)) for g in range(3)]

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                self._gc_started = time.perf_counter()
            elif self._gc_started is not None:
                histograms[info["generation"]].observe(time.perf_counter() - self._gc_started)
                self._gc_started = None

        gc.callbacks.append(on_gc)

"""The engine: one record in, state updated, outgoing records out — per partition, in order.

The Faust shell, the replay tool and the benchmarks all drive this same class; only where
state lives (a Faust table, a dict) and where outgoing records go differ.

Time is *event time*: each partition keeps a clock at the newest event time it has seen.
Changes that happen with no new event from a customer (at risk, lapsed, loyalty ending) are
kept in timers per partition (`timers.MemoryTimers`, or `timers.DiskTimers` on disk) and fired when the partition clock passes them,
at exactly their due time — so replaying a year of history gives the same segment changes,
with the same timestamps and ids, as living through it.
"""

from __future__ import annotations

from array import array
from collections import Counter

import numpy as np
import orjson
import time as _time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from streamer.core import features as features_mod
from streamer.core import families, outputs, segments, triggers
from streamer.core.config import DAY, Limits, ScoringConfig
from streamer.core.events import Event, decode
from streamer.core.explain import explain
from streamer.core.features import Features
from streamer.core.scoring import FormulaScorer, Scorer, model_version, score
from streamer.models.learned import LearnedScorer
from streamer.models.online import DelayedLabelLearner
from streamer.models.scorer import BTYDScorer, PopulationModel, fit_population
from streamer.core.partition_columns import PartitionColumns
from streamer.core.timers import MemoryTimers, Timers
from streamer.core.value_ranks import PartitionRanks
from streamer.core.state import CustomerState, apply, is_duplicate
from streamer.errors import InvalidEvent

SCORES, SEGMENT_CHANGES, TRIGGERS, DEAD_LETTER, AUDIT = "customer-scores", "segment-changes", "campaign-triggers", "dead-letter", "audit"
ERASURE = "Erasure Requested"
#: Keys of the persisted model state (the compacted model-state topic).
POPULATION_KEY, ONLINE_KEY = "population", "online"


def default_scorers(config: ScoringConfig) -> list[Scorer]:
    """Formula scores, buy-till-you-die (BG/NBD + Gamma-Gamma) over the configured horizon, then
    the online learners that correct it with delayed labels."""
    btyd = BTYDScorer(config.btyd_horizon_days, config.annual_discount_rate)
    return [FormulaScorer(config), btyd, LearnedScorer(btyd, config.learn_horizon_days, day_of=config.day_of)]


@dataclass(slots=True)
class Record:
    """One consumed Kafka record, as the shell hands it over."""

    topic_role: str  # logical input topic: "orders", "email-events", "community-events", "erasure-requests"
    topic: str  # actual topic name (for dead-letter provenance)
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(slots=True)
class Outgoing:
    topic_role: str  # "customer-scores", "segment-changes", "campaign-triggers", "dead-letter", "audit"
    key: bytes
    value: bytes | None  # None: a tombstone (erasure, on the compacted customer-scores)


@dataclass(slots=True)
class Transition:
    family: str
    old: str | None
    new: str | None


@dataclass(slots=True)
class Result:
    """What processing one record produced; the shell sends ``outgoing`` and records metrics."""

    outgoing: list[Outgoing] = field(default_factory=list)
    event_type: str | None = None
    event_time: float | None = None  # of a valid event (its own time, not the partition clock)
    rejected: str | None = None  # dead-letter reason
    duplicate: bool = False
    transitions: list[Transition] = field(default_factory=list)
    #: Campaign triggers that came due: fired, or suppressed (cooldown, consent).
    triggers: list[triggers.Outcome] = field(default_factory=list)
    new_customer: bool = False
    erased: bool | None = None  # an erasure request: whether the customer was found
    #: A valid event of an erased customer dated at or before the erasure: dropped.
    before_erasure: bool = False
    timers_fired: int = 0
    timer_errors: int = 0
    labels_learned: int = 0
    drifts: int = 0

    def absorb(self, part: "Result") -> None:
        """Take over what evaluating one customer produced."""
        self.outgoing.extend(part.outgoing)
        self.transitions.extend(part.transitions)
        self.triggers.extend(part.triggers)
        self.labels_learned += part.labels_learned
        self.drifts += part.drifts


class StateStore(Protocol):
    def get(self, customer: str) -> CustomerState | None: ...

    def put(self, customer: str, state: CustomerState) -> None: ...

    def delete(self, customer: str, partition: int) -> None: ...

    def mark_erased(self, digest: str, partition: int, at: float) -> None:
        """Keep, under the id's digest only, that the customer is erased up to event time
        ``at`` (read back into ``PartitionClock.erasures`` when partitions are restored)."""
        ...


class DictStore:
    """A plain dict as state store, for tests, replays and benchmarks."""

    def __init__(self) -> None:
        self.data: dict[str, CustomerState] = {}
        self.erasures: dict[str, tuple[int, float]] = {}  # id digest -> (partition, erased up to)

    def get(self, customer: str) -> CustomerState | None:
        return self.data.get(customer)

    def put(self, customer: str, state: CustomerState) -> None:
        self.data[customer] = state

    def delete(self, customer: str, partition: int) -> None:
        self.data.pop(customer, None)

    def mark_erased(self, digest: str, partition: int, at: float) -> None:
        self.erasures[digest] = (partition, at)


RISK_BUCKETS = 10


def risk_bucket(risk: float) -> int:
    """Index of a churn risk in ten equal buckets over [0, 1]."""
    return min(max(int(risk * RISK_BUCKETS), 0), RISK_BUCKETS - 1)


@dataclass
class PartitionClock:
    """Event-time clock, timers and value ranking of one partition."""

    now: float = 0.0
    #: Per customer, without reading the table: what a population refit needs (repeat
    #: purchase days, first and last order time, mean repeat value; a bounded sample), and
    #: the due time while the timers are in memory.
    columns: PartitionColumns = field(default_factory=PartitionColumns)
    #: Customers by due time (in memory, or on disk: see streamer.core.timers).
    timers: Timers = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    ranks: PartitionRanks = field(default_factory=PartitionRanks)
    #: Customers in this partition's state (kept here so the gauge needs no table scan).
    customers: int = 0
    #: Customers per (family, segment), and per churn-risk bucket: what /segments and the
    #: dashboard show, kept up to date on every change instead of scanning the table.
    populations: Counter[tuple[str, str]] = field(default_factory=Counter)
    risk_histogram: list[int] = field(default_factory=lambda: [0] * RISK_BUCKETS)
    #: Erased customers, by the SHA-256 (hex) of their id -> the event time their erasure
    #: covers. Few (erasures are rare) and kept for good, like the store's markers: a replay
    #: of the inputs from the start must not bring anyone back.
    erasures: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timers is None:
            self.timers = MemoryTimers(self.columns)

    def count_segment(self, family: str, old: str | None, new: str | None) -> None:
        if old is not None:
            self.populations[(family, old)] -= 1
            if self.populations[(family, old)] <= 0:
                del self.populations[(family, old)]
        if new is not None:
            self.populations[(family, new)] += 1

    def count_risk(self, old: float | None, new: float | None) -> None:
        if old is not None:
            self.risk_histogram[risk_bucket(old)] -= 1
        if new is not None:
            self.risk_histogram[risk_bucket(new)] += 1

    def schedule(self, customer: str, due: float | None) -> None:
        """Set (or clear) a customer's due time, with no scan of other customers."""
        self.timers.set(customer, due)

    def forget(self, state: CustomerState) -> None:
        """Remove a customer from every structure of the partition (erasure)."""
        customer = state.customer
        self.ranks.replace(state.value, None)
        self.timers.set(customer, None)
        self.columns.release(customer)
        for family, segment in state.segments.items():
            self.count_segment(family, segment, None)
        self.count_risk(state.risk, None)
        self.customers -= 1

    def erased_before(self, customer: str, time: float) -> bool:
        """Whether an event of ``customer`` at ``time`` is covered by their erasure."""
        covered = self.erasures.get(outputs.customer_digest(customer))
        return covered is not None and time <= covered

    def pop_due(self) -> tuple[float, str] | None:
        """The next current (due, customer) at or before ``now``, or None."""
        return self.timers.pop(self.now)


class _Restore:
    """One partition's clock being rebuilt from its states (``Engine.restore_partitions``)."""

    #: Due times and CLVs are handed over in chunks of this many: bounded memory on restore
    #: (all of a partition's CLVs gathered first took 8 bytes a customer, 80 MB at 10M).
    CHUNK = 10_000

    def __init__(self, clock: PartitionClock, config: ScoringConfig) -> None:
        self.clock, self.config = clock, config
        self.values = array("d")  # CLVs, ranked a chunk at a time (one sort per chunk)
        self.due_times: list[tuple[str, float]] = []
        self.count = 0

    def add(self, state: CustomerState) -> None:
        clock = self.clock
        self.count += 1
        clock.now = max(clock.now, state.last_event_at)
        if state.value is not None:
            self.values.append(state.value)
            if len(self.values) >= self.CHUNK:
                clock.ranks.extend(self.values)
                self.values = array("d")
        for family, segment in state.segments.items():
            clock.count_segment(family, None, segment)
        clock.count_risk(None, state.risk)
        if state.next_due is not None:
            self.due_times.append((state.customer, state.next_due))
            if len(self.due_times) >= self.CHUNK:
                clock.timers.load(self.due_times)
                self.due_times = []
        # Features only for a customer the refit sample may take: past its limit, most are not.
        if (state.orders or state.archive[0]) and clock.columns.may_take(state.customer):
            f = features_mod.compute(state, clock.now, self.config)
            if f.first_order_at is not None and f.last_order_at is not None:  # always, with orders
                clock.columns.set_refit(state.customer, f.repeat_transactions, f.first_order_at, f.last_order_at, f.repeat_mean_value)

    def finish(self) -> int:
        clock = self.clock
        clock.timers.load(self.due_times)
        clock.ranks.extend(self.values)
        clock.customers = self.count
        return self.count


class PartitionsRestore:
    """The clocks of several partitions being rebuilt (``Engine.begin_restore``)."""

    def __init__(self, restoring: dict[int, _Restore]) -> None:
        self.restoring = restoring

    def add(self, state: CustomerState) -> None:
        restore = self.restoring.get(state.partition)
        if restore is not None:
            restore.add(state)

    def add_erasure(self, digest: str, partition: int, at: float) -> None:
        """An erasure marker the store kept (``StateStore.mark_erased``)."""
        restore = self.restoring.get(partition)
        if restore is not None:
            erasures = restore.clock.erasures
            erasures[digest] = max(at, erasures.get(digest, at))

    def finish(self) -> int:
        """Completes every partition's clock; returns the customers restored."""
        return sum(restore.finish() for restore in self.restoring.values())


class Engine:
    """Turns records into state updates and outgoing events. Not thread-safe; one per worker."""

    def __init__(
        self,
        config: ScoringConfig | None = None,
        limits: Limits | None = None,
        scorers: list[Scorer] | None = None,
        wall_clock: Callable[[], float] = _time.time,
        clock: str = "event",
        disk_timers: Callable[[int], Timers] | None = None,
    ) -> None:
        self.config = config or ScoringConfig()
        self.limits = limits or Limits()
        self.scorers: list[Scorer] = scorers if scorers is not None else default_scorers(self.config)
        self._explained_scorers = [s for s in self.scorers if not isinstance(s, LearnedScorer)]
        # Looked up once: every evaluation asks (the scorer list is fixed; a refit swaps the
        # BTYD scorer's model, not the scorer).
        self._btyd = next((s for s in self.scorers if isinstance(s, BTYDScorer)), None)
        self._online = next((s for s in self.scorers if isinstance(s, LearnedScorer)), None)
        self.wall_clock = wall_clock
        #: "event": a partition's clock is its newest event time (replays = live); "wall":
        #: also the wall clock, so timers fire on time in quiet partitions (see advance_clock).
        self.clock_mode = clock
        #: partition -> fresh timers on disk (None: in memory, with the partition's columns).
        self.disk_timers = disk_timers
        self.partitions: dict[int, PartitionClock] = {}

    @property
    def model_version(self) -> str:
        """Names every scorer and its parameter version (changes when a refit is swapped in)."""
        return model_version(self.scorers)

    @property
    def btyd(self) -> BTYDScorer | None:
        return self._btyd

    @property
    def online(self) -> LearnedScorer | None:
        return self._online

    def population_summaries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """(x, t_x, T, mean repeat value, now) over every customer with orders, in days.

        T runs to each partition's own event-time clock, which is where that partition's
        customers are scored.
        """
        parts = []
        for clock in self.partitions.values():
            x, first, last, m = clock.columns.refit_columns()
            parts.append((x, (last - first) / DAY, (clock.now - first) / DAY, m))
        now = max((clock.now for clock in self.partitions.values()), default=0.0)
        if not parts:
            empty = np.zeros(0)
            return empty, empty, empty, empty, now
        x, t_x, T, m = (np.concatenate(column) for column in zip(*parts))
        return x, t_x, np.maximum(T, t_x), m, now

    def export_models(self) -> dict[str, bytes]:
        """The learned model state to persist (population parameters, online learners):
        small, versioned, no training data. Key -> bytes, as kept in the model-state topic."""
        out: dict[str, bytes] = {}
        if self.btyd is not None:
            out[POPULATION_KEY] = orjson.dumps(self.btyd.model.to_dict())
        if self.online is not None:
            out[ONLINE_KEY] = self.online.learner.to_bytes()
        return out

    def import_models(self, stored: dict[str, bytes]) -> list[str]:
        """Take persisted models that are newer than the ones in use; returns the keys taken."""
        taken = []
        btyd, online = self.btyd, self.online
        if btyd is not None and POPULATION_KEY in stored:
            model = PopulationModel.from_dict(orjson.loads(stored[POPULATION_KEY]))
            if (model.fitted_at or 0.0) > (btyd.model.fitted_at or 0.0):
                btyd.model = model
                taken.append(POPULATION_KEY)
        if online is not None and ONLINE_KEY in stored:
            learner = DelayedLabelLearner.from_bytes(stored[ONLINE_KEY])
            # A learner trained on labels of another horizon (the rules file changed
            # learn_horizon_days) would correct offsets it never learned: start afresh.
            if learner.version > online.learner.version and learner.horizon_s == online.learner.horizon_s:
                online.learner = learner
                taken.append(ONLINE_KEY)
        return taken

    def refit_population(self) -> PopulationModel | None:
        """Fit BG/NBD and Gamma-Gamma on this engine's customers and swap them in."""
        scorer = self.btyd
        if scorer is None:
            return None
        x, t_x, T, m, now = self.population_summaries()
        scorer.model = fit_population(x, t_x, T, m, fitted_at=now, previous=scorer.model)
        return scorer.model

    # -- partition lifecycle ---------------------------------------------------------------

    def _new_clock(self, partition: int) -> PartitionClock:
        old = self.partitions.pop(partition, None)
        if old is not None:
            old.timers.close()
        columns = PartitionColumns(self.config.refit_sample_per_partition)
        timers = self.disk_timers(partition) if self.disk_timers is not None else MemoryTimers(columns)
        clock = PartitionClock(columns=columns, timers=timers, ranks=PartitionRanks(self.config.value_rank_exact_limit))
        self.partitions[partition] = clock
        return clock

    def clock(self, partition: int) -> PartitionClock:
        clock = self.partitions.get(partition)
        if clock is None:
            clock = self._new_clock(partition)
        return clock

    def restore_partition(self, partition: int, states: Iterable[CustomerState]) -> int:
        """Rebuild a partition's clock, timers and ranking from its recovered states."""
        return self.restore_partitions([partition], states)

    def restore_partitions(
        self, partitions: Iterable[int], states: Iterable[CustomerState], erasures: Iterable[tuple[str, int, float]] = ()
    ) -> int:
        """Rebuild the clocks, timers and rankings of ``partitions`` from their recovered
        states, in one pass over ``states`` (those of other partitions are skipped), and their
        erased customers from the store's markers (``(digest, partition, at)``); returns the
        customers restored.

        The pass holds one state at a time: with STORE=rocksdb the states come off disk one by
        one, and millions of them must not all be in memory at once. (A refit row depends on
        the orders only, not on the time features are computed at, so it is set as its state
        passes, before the partition's clock has reached its newest event.)
        """
        restore = self.begin_restore(partitions)
        for state in states:
            restore.add(state)
        for digest, partition, at in erasures:
            restore.add_erasure(digest, partition, at)
        return restore.finish()

    def begin_restore(self, partitions: Iterable[int]) -> PartitionsRestore:
        """``restore_partitions`` a state at a time: ``add`` each recovered state (those of
        other partitions are skipped), then ``finish``. For a caller that must pause in
        between (the worker's event loop serves its health checks while millions of states
        are read)."""
        return PartitionsRestore({partition: _Restore(self._new_clock(partition), self.config) for partition in partitions})

    @property
    def customers(self) -> int:
        """Customers in the state of the partitions this engine holds."""
        return sum(clock.customers for clock in self.partitions.values())

    def forget_partition(self, partition: int) -> None:
        clock = self.partitions.pop(partition, None)
        if clock is not None:
            clock.timers.close()

    # -- the data path ---------------------------------------------------------------------

    def process(self, record: Record, store: StateStore) -> Result:
        """Decode, fire due timers, apply, score, segment; never raises for bad input."""
        result = Result()
        wall_now = self.wall_clock()
        try:
            event = decode(record.value, record.topic_role, record.key, self.limits, wall_now)
        except InvalidEvent as exc:
            return self._reject(record, exc.reason, exc.detail, result)
        result.event_type, result.event_time = event.type, event.time
        clock = self.clock(record.partition)
        moment = max(event.time, wall_now) if self.clock_mode == "wall" else event.time
        if moment > clock.now:
            clock.now = moment
            self.fire_due(record.partition, store, result)
        if event.type == ERASURE:
            return self._erase(event, record.partition, store, wall_now, result)
        if clock.erasures and clock.erased_before(event.customer, event.time):
            # Dated before the customer's erasure, read after it (the inputs are read side by
            # side; a replay reads them all again): it must not bring them back.
            result.before_erasure = True
            return result
        # Contained here, not only in the shell, so the timer outputs above (whose states are
        # already written) are still published when this one event fails.
        try:
            state = store.get(event.customer)
            if state is None:
                state = CustomerState(customer=event.customer, partition=record.partition)
                result.new_customer = True
                clock.customers += 1
            if is_duplicate(state, event):
                result.duplicate = True
                return result
            before = state
            try:
                state = apply(state, event, self.config)
            except InvalidEvent as exc:  # valid alone, refused by the customer's state (limits)
                return self._reject(record, exc.reason, exc.detail, result)
            pending = Result()
            self._evaluate(state, clock.now, {"event_id": event.id, "event_type": event.type}, clock, pending, before)
            store.put(event.customer, state)
        except Exception as exc:  # noqa: BLE001 - one bad event must not take the others down
            return self._reject(record, "processing_error", f"{type(exc).__name__}: {exc}", result)
        result.absorb(pending)
        return result

    def _erase(self, event: Event, partition: int, store: StateStore, wall_now: float, result: Result) -> Result:
        """Remove a customer: state (the store writes a changelog tombstone), timers, rankings
        and counts; a tombstone on the compacted scores topic; an audit record that names the
        customer only by hash. Erasing an unknown customer is recorded too (found = false).

        The partition (and the store, for restarts) keeps an erasure marker under the id's
        SHA-256: the customer's events dated up to the request, or up to the newest event the
        erasure removed, are dropped when they are read later (``Result.before_erasure``);
        later ones start a new customer. A request dated within what a marker covers removes
        nothing (see below); a later one erases the customer who came back.
        """
        customer, request_id = event.customer, event.data["request_id"]
        clock = self.clock(partition)
        digest = outputs.customer_digest(customer)
        key = customer.encode()
        previous = clock.erasures.get(digest)
        if previous is not None and event.time <= previous:
            # A request the marker already covers: the same one read again (a restart before
            # the commit, a replay of the inputs, a producer's retry) or an older one. A state
            # held now is a relationship that began after that erasure: not this request's to
            # remove. Audited again (same id: downstream de-duplicates), nothing removed.
            result.erased = False
            if store.get(customer) is None:
                result.outgoing.append(Outgoing(SCORES, key, None))
            result.outgoing.append(Outgoing(AUDIT, request_id.encode(), outputs.customer_erased(request_id, customer, False, [], wall_now)))
            return result
        state = store.get(customer)
        covered = event.time
        removed = []
        if state is not None:
            store.delete(customer, partition)
            clock.forget(state)
            removed = ["state", "timers", "scores", "changelog"]
            covered = max(covered, state.last_event_at)
        clock.erasures[digest] = covered
        store.mark_erased(digest, partition, covered)
        result.erased = state is not None
        result.outgoing.append(Outgoing(SCORES, key, None))
        result.outgoing.append(Outgoing(AUDIT, request_id.encode(), outputs.customer_erased(request_id, customer, state is not None, removed, wall_now)))
        return result

    def reject(self, record: Record, reason: str, detail: str) -> Result:
        """Dead-letter a record the shell could not process (e.g. an unexpected exception)."""
        return self._reject(record, reason, detail, Result())

    def _reject(self, record: Record, reason: str, detail: str, result: Result) -> Result:
        result.rejected = reason
        payload = outputs.event_rejected(
            reason,
            detail,
            record.value,
            record.topic,
            record.partition,
            record.offset,
            record.timestamp_ms,
            record.key,
            self.wall_clock(),
        )
        # Keyed like the input (so one producer's rejects stay together), but cut: a huge
        # garbage key must not make the dead-letter record itself too large to produce.
        key = (record.key or b"")[: outputs.MAX_KEY_BYTES]
        result.outgoing.append(Outgoing(DEAD_LETTER, key, payload))
        return result

    def _explain(self, state: CustomerState, before: CustomerState | None, feats: Features, scores: dict[str, float]) -> list[dict]:
        if before is not None:
            is_new = not (before.orders or before.archive[0] or before.seen or before.refunds)
            prior = None if is_new else features_mod.compute(before, feats.now, self.config)
        else:
            prior = features_mod.compute(state, state.scored_at, self.config) if state.scored_at is not None else None
        # The scores before are computed by explain() only if some input group changed.
        drivers = explain(prior, feats, None, scores, self._rescore_explained, top=3)
        return [d.to_dict() for d in drivers]

    def _rescore_explained(self, features: Features) -> dict[str, float]:
        """The scores an explanation compares. The explained (headline) scores — churn risk,
        CLV — come before the online learners, whose own outputs (``*_learned``) nothing
        explained reads: re-scoring leaves them out."""
        return score(features, self._explained_scorers)

    def advance_clock(self, partition: int, now: float, store: StateStore) -> Result:
        """Move a partition's event-time clock forward with no event (end of a replay, or a
        wall clock), firing the timers it passes."""
        result = Result()
        clock = self.clock(partition)
        if now > clock.now:
            clock.now = now
            self.fire_due(partition, store, result)
        return result

    def fire_due(self, partition: int, store: StateStore, result: Result) -> None:
        """Re-evaluate every customer whose due time the partition clock has passed."""
        clock = self.clock(partition)
        while (item := clock.pop_due()) is not None:
            due, customer = item
            try:
                state = store.get(customer)
                if state is None or state.next_due != due:
                    continue  # state moved on without the queue knowing (should not happen)
                pending = Result()
                self._evaluate(state, due, {"timer": f"due@{outputs.rfc3339(due)}"}, clock, pending)
                store.put(customer, state)
            except Exception:  # noqa: BLE001 - one customer's failure must not stop the others' timers
                result.timer_errors += 1
                continue
            result.timers_fired += 1
            result.absorb(pending)

    def _evaluate(
        self,
        state: CustomerState,
        now: float,
        cause: dict[str, str],
        clock: PartitionClock,
        result: Result,
        before: CustomerState | None = None,
    ) -> None:
        """Score ``state`` at ``now``, update its segments in place, emit outgoing events.

        ``before`` is the state before the event being applied (None for a timer); the
        explanation compares with it at the same moment, so the event is the one thing that
        changed, or — for a timer — with the same state when it was last scored.
        """
        online = self.online
        if online is not None:
            drifted = online.learn_if_due(state, now)
            if drifted is not None:
                result.labels_learned += 1
                result.drifts += int(drifted)
        feats = features_mod.compute(state, now, self.config)
        scores = score(feats, self.scorers)
        drivers = self._explain(state, before, feats, scores)
        state.scored_at = now
        if online is not None:
            online.remember(state, feats, now)
        clv = scores["formula_clv"] if feats.orders else None
        if feats.orders and feats.first_order_at is not None and feats.last_order_at is not None:
            clock.columns.set_refit(state.customer, feats.repeat_transactions, feats.first_order_at, feats.last_order_at, feats.repeat_mean_value)
        elif not feats.orders:
            clock.columns.clear_refit(state.customer)  # its orders were all refunded since
        clock.ranks.replace(state.value, clv)  # state.value: the CLV it was ranked by so far
        config = self.config
        assigned = {segments.LIFECYCLE: segments.lifecycle(feats, scores, config)}
        if clv is not None:
            assigned[segments.VALUE_TIER] = segments.value_tier(clv, clock.ranks, config, state.segments.get(segments.VALUE_TIER))
        elif state.segments.get(segments.VALUE_TIER) is not None:
            # Every order refunded: no value left to rank, as the lifecycle has no segment left
            # (and a VIP who comes back is welcomed again when re-entering the top tier).
            assigned[segments.VALUE_TIER] = segments.Assignment(None, "no orders")
        wake_at = [segments.next_change_at(feats, scores, config)]
        for family in config.families:
            decision = families.FAMILIES[family](state, feats, scores, config, state.segments.get(family))
            assigned[family] = decision.assignment
            wake_at.append(decision.next_change_at)
        old_segments = dict(state.segments)
        key = state.customer.encode()
        for family, assignment in assigned.items():
            old = old_segments.get(family)
            if assignment.segment != old:
                state.segments[family] = assignment.segment
                clock.count_segment(family, old, assignment.segment)
                result.transitions.append(Transition(family, old, assignment.segment))
                result.outgoing.append(
                    Outgoing(
                        SEGMENT_CHANGES,
                        key,
                        outputs.segment_changed(state.customer, family, old, assignment.segment, now, assignment.reason, scores),
                    )
                )
        state.value = clv
        risk = next((scores[name] for name in config.churn_band.scores if name in scores), None) if feats.orders else None
        clock.count_risk(state.risk, risk)
        state.risk = risk
        outcomes, trigger_due = triggers.evaluate(state, feats, old_segments, cause.get("event_type"), config)
        for outcome in outcomes:
            result.triggers.append(outcome)
            if outcome.status == triggers.FIRED:
                payload = outputs.campaign_triggered(
                    state.customer, outcome.trigger, outcome.at, outcome.step, outcome.reason, outcome.channel, scores, dict(state.segments)
                )
                result.outgoing.append(Outgoing(TRIGGERS, key, payload))
        wake_at.append(trigger_due)
        if online is not None and (label_due := online.label_due(state)) is not None:
            wake_at.append(label_due + segments.TIMER_SLACK_S)
        state.next_due = families.earliest(*wake_at)
        clock.schedule(state.customer, state.next_due)
        result.outgoing.append(
            Outgoing(
                SCORES,
                key,
                outputs.customer_scored(
                    state.customer, now, cause, scores, feats.summary(), dict(state.segments), self.model_version, drivers
                ),
            )
        )

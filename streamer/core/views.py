"""What the query API and the dashboard show, computed from the engine without a table scan.

* :func:`customer_view` — one customer's scores, segments and drivers as of the partition clock.
* :func:`partition_summary` — segment populations, CLV and churn-risk distributions of the
  partitions an engine holds (kept current by the engine on every change).
* :class:`RecentActivity` — the flows between segments over a sliding wall-clock window and
  the latest campaign triggers, folded from processing results.
* :func:`merge_summaries` — one summary from several workers' (each holds some partitions).

Plain Python, so tests call it without Faust; the web pages in the shell only serialise it.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable

from streamer.core import features as features_mod
from streamer.core import outputs
from streamer.core.explain import explain
from streamer.core.scoring import score
from streamer.core.state import CustomerState
from streamer.core.value_ranks import PartitionRanks

#: Flows are kept per minute; older minutes than the window are dropped.
FLOW_WINDOW_S = 24 * 3600.0
LATEST_TRIGGERS = 20
CLV_BUCKETS = 12


def customer_view(engine: Any, state: CustomerState) -> dict[str, Any]:
    """Scores at the customer's partition clock, current segments, and the drivers behind the
    score levels (which inputs make the CLV and churn risk what they are)."""
    clock = engine.partitions.get(state.partition)
    now = max(clock.now if clock is not None else 0.0, state.last_event_at)
    feats = features_mod.compute(state, now, engine.config)
    scores = score(feats, engine.scorers)
    drivers = explain(None, feats, None, scores, lambda f: score(f, engine.scorers), top=3) if feats.orders else []
    return {
        "customer": state.customer,
        "as_of": outputs.rfc3339(now),
        "model_version": engine.model_version,
        "scores": outputs.rounded(scores),
        "segments": dict(state.segments),
        "drivers": [d.to_dict() for d in drivers],
        "inputs": feats.summary(),
        "next_change_at": outputs.rfc3339(state.next_due) if state.next_due is not None else None,
    }


#: Log-spaced CLV buckets (CLV spans orders of magnitude): bucket i holds edges[i] <= CLV <
#: edges[i + 1], the first also anything lower, the last anything higher.
CLV_EDGES = [0.0] + [10.0 * 2**i for i in range(CLV_BUCKETS - 1)]


def _clv_counts(ranks: PartitionRanks) -> list[int]:
    """A partition's ranked CLVs counted in the CLV_EDGES buckets (exact from a sketch too:
    the edges fall on its bin edges)."""
    below = [round(ranks.count_below(edge)) for edge in CLV_EDGES[1:]]
    return [b - a for a, b in zip([0, *below], below)] + [len(ranks) - below[-1]]


def partition_summary(engine: Any) -> dict[str, Any]:
    """Populations per family and segment, CLV and churn-risk histograms, over the engine's
    partitions. Values are plain JSON so summaries from several workers can be merged."""
    populations: dict[str, dict[str, int]] = {}
    risk = [0] * 10
    clv_counts = [0] * CLV_BUCKETS
    customers = 0
    for clock in engine.partitions.values():
        customers += clock.customers
        for (family, segment), count in clock.populations.items():
            family_counts = populations.setdefault(family, {})
            family_counts[segment] = family_counts.get(segment, 0) + count
        risk = [a + b for a, b in zip(risk, clock.risk_histogram)]
        clv_counts = [a + b for a, b in zip(clv_counts, _clv_counts(clock.ranks))]
    return {
        "customers": customers,
        "partitions": sorted(engine.partitions),
        "populations": populations,
        "churn_risk_histogram": {"edges": [i / 10 for i in range(11)], "counts": risk},
        "clv_histogram": {"edges": CLV_EDGES, "counts": clv_counts},
    }


def merge_summaries(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up summaries of disjoint partition sets (one per worker)."""
    merged: dict[str, Any] = {"customers": 0, "partitions": [], "populations": {}}
    risk: list[int] | None = None
    clv: list[int] | None = None
    for part in parts:
        merged["customers"] += part["customers"]
        merged["partitions"] = sorted(set(merged["partitions"]) | set(part["partitions"]))
        for family, counts in part["populations"].items():
            target = merged["populations"].setdefault(family, {})
            for segment, count in counts.items():
                target[segment] = target.get(segment, 0) + count
        r, c = part["churn_risk_histogram"], part["clv_histogram"]
        risk = r["counts"] if risk is None else [a + b for a, b in zip(risk, r["counts"])]
        clv = c["counts"] if clv is None else [a + b for a, b in zip(clv, c["counts"])]
        merged["churn_risk_histogram"] = {"edges": r["edges"], "counts": risk}
        merged["clv_histogram"] = {"edges": c["edges"], "counts": clv}
    return merged


class RecentActivity:
    """Segment flows over a sliding wall-clock window, and the latest triggers.

    Flows are counted per minute bucket, so memory is bounded by the window (1,440 buckets of
    at most families × segments² entries), whatever the event rate.
    """

    def __init__(self, window_s: float = FLOW_WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._minutes: deque[tuple[int, Counter[tuple[str, str, str]]]] = deque()
        self.triggers: deque[dict[str, Any]] = deque(maxlen=LATEST_TRIGGERS)

    def record(self, result: Any) -> None:
        """Fold one processing result (its transitions and fired triggers)."""
        if not result.transitions and not result.triggers:
            return
        minute = int(self.clock() // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, Counter()))
            self._expire(minute)
        bucket = self._minutes[-1][1]
        for t in result.transitions:
            bucket[(t.family, t.old or "none", t.new or "none")] += 1
        for outcome in result.triggers:
            if outcome.status == "fired":
                self.triggers.appendleft(
                    {"trigger": outcome.trigger, "step": outcome.step, "at": outputs.rfc3339(outcome.at), "reason": outcome.reason, "channel": outcome.channel}
                )

    def _expire(self, minute: int) -> None:
        oldest = minute - math.ceil(self.window_s / 60)
        while self._minutes and self._minutes[0][0] <= oldest:
            self._minutes.popleft()

    def flows(self) -> list[dict[str, Any]]:
        """[{family, from, to, count}] over the window, largest first."""
        self._expire(int(self.clock() // 60))
        total: Counter[tuple[str, str, str]] = Counter()
        for _minute, bucket in self._minutes:
            total.update(bucket)
        return [{"family": f, "from": a, "to": b, "count": n} for (f, a, b), n in total.most_common()]

    def snapshot(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "flows": self.flows(), "latest_triggers": list(self.triggers)}


def merge_activity(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up flows, and interleave the latest triggers (newest first by due moment)."""
    flows: Counter[tuple[str, str, str]] = Counter()
    triggers: list[dict[str, Any]] = []
    window = FLOW_WINDOW_S
    for part in parts:
        window = part["window_s"]
        for flow in part["flows"]:
            flows[(flow["family"], flow["from"], flow["to"])] += flow["count"]
        triggers.extend(part["latest_triggers"])
    triggers.sort(key=lambda t: t["at"], reverse=True)
    return {
        "window_s": window,
        "flows": [{"family": f, "from": a, "to": b, "count": n} for (f, a, b), n in flows.most_common()],
        "latest_triggers": triggers[:LATEST_TRIGGERS],
    }


def merge_throughput(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up workers' metric snapshots (consumed records, cumulative latency buckets), and
    read the latency p50 / p99 off the merged histogram."""
    consumed = rate = 0.0
    buckets: dict[float, float] = {}
    for part in parts:
        consumed += part["consumed"]
        rate += part.get("events_per_s", 0.0)
        for le, count in part["latency_buckets"]:
            bound = float(le)  # "+Inf" included
            buckets[bound] = buckets.get(bound, 0.0) + count
    ordered = sorted(buckets.items())
    return {"consumed": consumed, "events_per_s": rate, "latency_p50_s": quantile_from_buckets(ordered, 0.5), "latency_p99_s": quantile_from_buckets(ordered, 0.99)}


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated within its bucket (as
    Prometheus' histogram_quantile does); None without observations.

    >>> round(quantile_from_buckets([(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)], 0.75), 6)
    0.15
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            width = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / width if width else 1.0)
        lower_le, lower_count = le, count
    return lower_le

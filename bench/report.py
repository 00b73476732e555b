"""The results: per-run figures, ranges over repeats, the targets, a table and the JSON file."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

#: Summary metric -> (label, unit, target, "min" if the target is a floor else "max", where in a run).
METRICS: dict[str, tuple[str, str, float | None, str, tuple[str, ...]]] = {
    "ceiling_events_per_s": ("ceiling (aiokafka loop)", "events/s", None, "", ("ceiling", "events_per_s")),
    "worker_events_per_s": ("worker throughput", "events/s", None, "", ("worker", "throughput", "events_per_s")),
    "ratio": ("worker / ceiling", "x", 0.3, "min", ("ratio",)),
    # Quix Streams (bench.quix) on the same input topics, its state in its own changelogged
    # store: the ceiling's work, and the worker's (the full scorer).
    "quix_events_per_s": ("Quix Streams, ceiling's work", "events/s", None, "", ("quix", "ceiling", "events_per_s")),
    "quix_ratio": ("  / ceiling", "x", None, "", ("quix", "ceiling", "ratio")),
    "quix_engine_events_per_s": ("Quix Streams + our scorer", "events/s", None, "", ("quix", "engine", "events_per_s")),
    "quix_engine_ratio": ("  / ceiling", "x", None, "", ("quix", "engine", "ratio")),
    "worker_vs_quix_engine": ("worker / (Quix + our scorer)", "x", None, "", ("quix", "engine", "worker_ratio")),
    # Event published -> its score published: the input record's timestamp (set by the bench's
    # producer when it sends) to the score record's (set by the worker's producer).
    "latency_p50_ms": ("latency p50 @ half load", "ms", None, "", ("worker", "latency", "record_ts_p50_ms")),
    "latency_p99_ms": ("latency p99 @ half load", "ms", 200.0, "max", ("worker", "latency", "record_ts_p99_ms")),
    # The same until a consumer (the bench's own, on the same busy machine) has the score.
    "seen_p50_ms": ("  until a consumer sees it, p50", "ms", None, "", ("worker", "latency", "e2e_p50_ms")),
    "seen_p99_ms": ("  until a consumer sees it, p99", "ms", None, "", ("worker", "latency", "e2e_p99_ms")),
    "offered_events_per_s": ("  offered load (half of max)", "events/s", None, "", ("worker", "latency", "offered_events_per_s")),
    # Python's full garbage collections in that phase: each one stops the worker for its length.
    "gc_full_collections": ("  full GC pauses in that phase", "count", None, "", ("worker", "latency", "gc_full_collections")),
    "gc_full_longest_le_ms": ("  longest full GC pause, ≤", "ms", None, "", ("worker", "latency", "gc_full_longest_le_ms")),
    "bytes_per_customer": ("resident memory / customer", "bytes", 1024.0, "max", ("worker", "memory", "bytes_per_customer")),
    "bytes_per_customer_slope": (
        "  same, slope 20-95 % loaded",
        "bytes",
        None,
        "",
        ("worker", "memory", "bytes_per_customer_slope"),
    ),
    "ready_s": ("worker ready (start -> /readyz)", "s", 10.0, "max", ("worker", "ready_s")),
    "refit_s": ("refit, synthetic population", "s", 5.0, "max", ("refit", "seconds")),
}


def pick(run: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def meets(value: float | None, target: float | None, kind: str) -> bool | None:
    if target is None or value is None:
        return None
    return value >= target if kind == "min" else value <= target


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary = {}
    for name, (label, unit, target, kind, path) in METRICS.items():
        per_run = [pick(run, path) for run in runs]
        values = [v for v in per_run if v is not None]
        verdicts = [meets(v, target, kind) for v in values]
        summary[name] = {
            "label": label,
            "unit": unit,
            "per_run": per_run,
            "values": values,
            "min": min(values) if values else None,
            "median": statistics.median(values) if values else None,
            "max": max(values) if values else None,
            "target": target,
            "target_kind": kind or None,
            "runs_meeting_target": sum(1 for v in verdicts if v) if target is not None else None,
        }
    return summary


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.3f}"
    if unit in ("s", "ms"):
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def table(result: dict[str, Any]) -> str:
    runs = len(result["runs"])
    header = ["metric", "unit", "target"] + [f"run {i + 1}" for i in range(runs)] + (["min..max"] if runs > 1 else []) + ["meets"]
    rows = [header]
    for s in result["summary"].values():
        unit = s["unit"]
        target = "-" if s["target"] is None else ("≥ " if s["target_kind"] == "min" else "≤ ") + _fmt(s["target"], unit)
        cells = [s["label"], unit, target] + [_fmt(v, unit) for v in s["per_run"]]
        if runs > 1:
            cells.append(f"{_fmt(s['min'], unit)}..{_fmt(s['max'], unit)}")
        met = s["runs_meeting_target"]
        cells.append("-" if met is None else f"{met}/{len(s['values'])}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    w = result["workload"]
    notes = [
        (
            f"{w['customers']:,} customers, {w['events']:,} events (mix {w['mix']}), {w['partitions']} partitions; "
            f"latency at {result['config']['latency_seconds']:g} s of half the measured worker maximum; "
            f"refit over {result['config']['refit_customers']:,} synthetic customers."
        ),
        f"host: {result['host']['cpus']} CPUs, load average at start {result['host']['loadavg_start']}; figures are noisy on a shared machine.",
    ]
    config = result["config"]
    changed = [f"STORE={config['store']}"] if config.get("store", "memory") != "memory" else []
    changed += [f"{name}={value}" for name, value in config.get("set", [])]
    if changed:
        notes.insert(1, "worker settings other than the defaults: " + ", ".join(changed))
    return "\n".join(lines + [""] + notes)


def write_json(result: dict[str, Any], out_dir: Path, stamp: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path

"""The PromQL in deploy/ (alert rules, PrometheusRule, Grafana dashboard) and the metric names
it refers to, next to the metric names the worker exports."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tests.deploy.deployfiles import ALERTS, DASHBOARD, k8s_object, load_json, load_yaml

#: Series Prometheus makes itself for every scrape target (not exported by the worker).
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"}

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "inf", "nan", "atan2"}

#: What Grafana's variables stand for when an expression is sent to Prometheus directly.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a lexical reading, enough for our rules:
    strings, label matchers, ranges and label lists are dropped; function calls are skipped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def alert_groups() -> list[dict[str, Any]]:
    return load_yaml(ALERTS)["groups"]


def alert_rules(groups: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [rule for group in (groups if groups is not None else alert_groups()) for rule in group["rules"]]


def prometheusrule_groups() -> list[dict[str, Any]]:
    return k8s_object("PrometheusRule")["spec"]["groups"]


def dashboard() -> dict[str, Any]:
    return load_json(DASHBOARD)


def dashboard_panels(board: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk((board or dashboard())["panels"])


def dashboard_expressions(board: dict[str, Any] | None = None) -> list[str]:
    """Every target expression of every panel, and the variables' selectors."""
    board = board or dashboard()
    exprs = [t["expr"] for panel in dashboard_panels(board) for t in panel.get("targets", [])]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
        if match:
            exprs.append(match.group(1))
        elif query:
            exprs.append(query)
    return exprs


def all_expressions() -> dict[str, str]:
    """Where -> expression, for the alert rules, the PrometheusRule and the dashboard."""
    out = {f"alerts.yml {rule['alert']}": rule["expr"] for rule in alert_rules()}
    out.update({f"prometheusrule.yaml {rule['alert']}": rule["expr"] for rule in alert_rules(prometheusrule_groups())})
    out.update({f"clv-streamer.json #{i}": expr for i, expr in enumerate(dashboard_expressions())})
    return out


def for_prometheus(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, for Prometheus' query API."""
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


def declared_metric_names() -> set[str]:
    """Sample names the worker can export: streamer.metrics.Metrics on a fresh registry plus
    the process/platform/GC collectors of prometheus_client's default registry (the worker
    registers on the default one)."""
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    from streamer.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def exposition_names(text: str) -> set[str]:
    """Sample names present in a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names

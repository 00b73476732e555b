"""Alert rules, PrometheusRule and Grafana dashboard: they use metrics the worker exports,
cover what ops must be told about, and pass promtool (check and unit tests)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.deploy.deployfiles import (
    ALERT_TESTS,
    ALERTS,
    GRAFANA_DATASOURCES,
    PROMETHEUS_CONFIG,
    load_yaml,
)
from tests.deploy.monitoring import (
    PROMETHEUS_SYNTHETIC,
    alert_groups,
    alert_rules,
    all_expressions,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    declared_metric_names,
    metric_names,
    prometheusrule_groups,
)
from tests.deploy.tools import run_tool

#: What the alert rules must watch (issue "Operate and integrate"): metric -> concern.
REQUIRED_ALERT_METRICS = {
    "up": "worker down",
    "clv_partition_event_time_seconds": "stalled event-time progress (consumer lag proxy)",
    "clv_events_invalid_total": "dead-letter rate",
    "clv_processing_latency_seconds_bucket": "processing latency p99",
    "clv_drift_detected_total": "drift",
    "clv_publish_errors_total": "publish errors",
    "clv_timer_errors_total": "timer errors",
}

#: What the dashboard must show.
REQUIRED_DASHBOARD_METRICS = {
    "clv_events_consumed_total",  # throughput by topic
    "clv_events_invalid_total",  # invalid by reason
    "clv_processing_latency_seconds_bucket",  # latency p50/p99
    "clv_segment_transitions_total",
    "clv_customers_in_state",
    "clv_online_quality",
    "clv_model_refit_duration_seconds",
}


def test_metric_name_reading() -> None:
    assert metric_names('sum by (topic, le) (rate(clv_a_total{job="x", reason=~"a|b"}[5m])) / ignoring(reason) clv_b > 0.5') == {"clv_a_total", "clv_b"}
    assert metric_names('time() - max by (partition) (g{instance=~"$instance"}) > 1e3 and on () up offset 5m') == {"g", "up"}
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))') == {"h_bucket"}


def test_every_referenced_metric_is_exported_by_the_worker() -> None:
    declared = declared_metric_names()
    assert "clv_events_consumed_total" in declared and "clv_processing_latency_seconds_bucket" in declared
    missing = {}
    for where, expr in all_expressions().items():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - declared - PROMETHEUS_SYNTHETIC
        if unknown:
            missing[where] = sorted(unknown)
    assert not missing, f"metrics not exported by the worker (streamer/metrics.py): {missing}"


def test_alert_rules_cover_the_concerns_and_explain_themselves() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    used = set().union(*(metric_names(rule["expr"]) for rule in rules))
    uncovered = {metric: concern for metric, concern in REQUIRED_ALERT_METRICS.items() if metric not in used}
    assert not uncovered, f"no alert on {uncovered}"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), f"{rule['alert']}: summary and description"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]


def test_prometheusrule_has_the_same_rules_as_alerts_yml() -> None:
    assert prometheusrule_groups() == alert_groups(), "deploy/k8s/prometheusrule.yaml must carry alerts.yml's groups unchanged"


def test_alert_unit_tests_cover_every_alert() -> None:
    tested = {case["alertname"] for test in load_yaml(ALERT_TESTS)["tests"] for case in test.get("alert_rule_test", [])}
    firing = {
        case["alertname"]
        for test in load_yaml(ALERT_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert tested == names and firing == names, "each alert needs a promtool unit test in which it fires"


# --- (d) promtool ------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run_tool("promtool", "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts() -> None:
    # Run from the rules' folder: alerts.test.yml names alerts.yml relative to itself.
    result = run_tool("promtool", "test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules_of_the_prometheusrule(tmp_path: Path) -> None:
    import yaml

    rules_file = tmp_path / "prometheusrule-groups.yml"
    rules_file.write_text(yaml.safe_dump({"groups": prometheusrule_groups()}, sort_keys=False))
    run_tool("promtool", "check", "rules", str(rules_file))


def test_promtool_check_config(tmp_path: Path) -> None:
    """The compose stack's prometheus.yml, with the rule file it loads (resolved next to it)."""
    config_dir = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_CONFIG.parent, config_dir)
    config = load_yaml(PROMETHEUS_CONFIG)
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file(), rule_file
    result = run_tool("promtool", "check", "config", str(config_dir / "prometheus.yml"))
    assert "SUCCESS" in result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout + result.stderr


# --- Grafana ------------------------------------------------------------------------------


def test_dashboard_shows_the_required_metrics_and_every_clv_metric() -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_expressions()))
    assert REQUIRED_DASHBOARD_METRICS <= used, REQUIRED_DASHBOARD_METRICS - used
    # A metric nobody can see is a metric nobody watches: each clv_ family is on a panel.
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in declared_metric_names() if n.startswith("clv_") and not n.endswith("_created")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, f"clv metrics without a panel: {sorted(families - shown)}"


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    board = dashboard()
    (datasource,) = load_yaml(GRAFANA_DATASOURCES)["datasources"]
    assert board["uid"] and board["title"]
    panels = list(dashboard_panels(board))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == datasource["uid"]

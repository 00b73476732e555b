"""Series that exist from the start (at 0): an alert on ``increase()`` sees a 0 -> 1 step only
if the 0 was scraped before the first occurrence."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streamer.metrics import Metrics


def test_processing_errors_exist_at_zero_for_every_input_topic() -> None:
    registry = CollectorRegistry()
    Metrics(registry, input_topics=("orders", "email-events"))
    for topic in ("orders", "email-events"):
        assert registry.get_sample_value("clv_events_invalid_total", {"topic": topic, "reason": "processing_error"}) == 0.0
    assert registry.get_sample_value("clv_events_invalid_total", {"topic": "community-events", "reason": "processing_error"}) is None


def test_events_dropped_after_an_erasure_exist_at_zero_for_every_input_topic() -> None:
    registry = CollectorRegistry()
    Metrics(registry, input_topics=("orders", "erasure-requests"))
    for topic in ("orders", "erasure-requests"):
        assert registry.get_sample_value("clv_events_before_erasure_total", {"topic": topic}) == 0.0


def test_published_counts_deliveries_not_evaluations() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.delivered("customer-scores")
    metrics.delivered("customer-scores")
    assert registry.get_sample_value("clv_events_published_total", {"topic": "customer-scores"}) == 2.0

"""Agent tests: real CloudEvents bytes through the Faust agents' test contexts — no broker.

Each test drives ``streamer.shell.agents`` (the real agents, table, engine and metrics) and
captures what the agents send to the output topics (see conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest
from faust.types import TP

from streamer.core.state import CustomerState
from streamer.shell import agents, tables, web
from streamer.shell.app import app

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


# -- helpers -------------------------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def order_completed(customer: str, order_id: str, total: float, time: str = "2025-03-01T12:00:00Z", currency: str = "USD") -> bytes:
    doc = example("order-completed.v1.basic-product")
    doc.update(id=f"{order_id}-completed", subject=customer, time=time)
    product = dict(doc["data"]["products"][0], price=total, quantity=1)
    doc["data"] = dict(doc["data"], order_id=order_id, total=total, currency=currency, margin=round(total * 0.4, 2), products=[product])
    return orjson.dumps(doc)


def retarget(name: str, customer: str, **envelope: Any) -> bytes:
    doc = copy.deepcopy(example(name))
    doc.update(subject=customer, **envelope)
    return orjson.dumps(doc)


def state_of(customer: str) -> CustomerState | None:
    """The customer's state as the agents see it (the table, or a change not yet written back)."""
    return tables.store.get(customer)


def sent(mock: Any) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, decoded JSON value) of every call to a captured ``send``, in order."""
    out = []
    for call in mock.call_args_list:
        assert not call.args, "the shell sends with keywords only"
        assert isinstance(call.kwargs["value"], bytes)
        out.append((call.kwargs["key"], json.loads(call.kwargs["value"])))
    return out


def sample(name: str, **labels: str) -> float:
    return agents.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def acknowledge(sends: dict[str, Any]) -> int:
    """Play the broker: acknowledge every delivery still pending; returns how many."""
    pending = [d for mock in sends.values() for d in mock.deliveries if not d.done()]
    for delivery in pending:
        delivery.set_result(None)
    await asyncio.sleep(0)  # the delivery callbacks run
    return len(pending)


class Counters:
    """Snapshot metric samples now; ``delta`` says how much each moved since."""

    def __init__(self, *specs: tuple[str, dict[str, str]]) -> None:
        self.specs = specs
        self.before = [sample(name, **labels) for name, labels in specs]

    def delta(self) -> list[float]:
        return [sample(name, **labels) - b for (name, labels), b in zip(self.specs, self.before)]


# -- orders --------------------------------------------------------------------------------


async def test_order_completed_updates_state_and_publishes(sends, feed):
    customer = "cust-agent-order"
    raw = order_completed(customer, "ORD-A-1", 59.8)
    counters = Counters(
        ("clv_events_consumed_total", {"topic": "orders", "type": "Order Completed"}),
        ("clv_events_published_total", {"topic": "customer-scores"}),
        ("clv_events_published_total", {"topic": "segment-changes"}),
        ("clv_segment_transitions_total", {"family": "lifecycle", "from_segment": "none", "to_segment": "new"}),
        ("clv_events_invalid_total", {"topic": "orders", "reason": "bad_json"}),
        ("clv_campaign_triggers_total", {"trigger": "onboarding", "status": "fired"}),
        ("clv_events_published_total", {"topic": "campaign-triggers"}),
    )

    async with agents.score_orders.test_context() as agent:
        result = await feed(agent, raw, key=customer.encode())

    assert result.rejected is None and not result.duplicate
    state = state_of(customer)
    assert state is not None
    assert state.customer == customer and state.partition == 0
    assert list(state.orders) == ["ORD-A-1"]
    assert state.orders["ORD-A-1"][1] == pytest.approx(59.8)  # total, reporting currency

    [(key, score)] = sent(sends["customer-scores"])
    assert key == customer.encode()
    assert score["type"] == "Customer Scored" and score["subject"] == customer
    data = score["data"]
    assert data["customer"] == customer
    assert data["cause"] == {"event_id": "ORD-A-1-completed", "event_type": "Order Completed"}
    assert data["as_of"] == "2025-03-01T12:00:00.000Z"
    assert data["inputs"]["orders"] == 1
    assert data["inputs"]["revenue"] == pytest.approx(59.8)
    assert {"historic_clv", "formula_clv", "churn_risk"} <= set(data["scores"])
    assert data["segments"]["lifecycle"] == "new"

    changes = sent(sends["segment-changes"])
    assert {c["data"]["family"]: (c["data"]["from"], c["data"]["to"]) for _, c in changes} == {
        "lifecycle": (None, "new"),
        "value_tier": (None, data["segments"]["value_tier"]),
        "churn_band": (None, "low"),
    }
    assert data["segments"]["value_tier"] is not None  # VALUE_TIER_MIN_POPULATION=1
    assert all(k == customer.encode() and c["type"] == "Segment Changed" for k, c in changes)
    [(key, trigger)] = sent(sends["campaign-triggers"])  # onboarding step 1, on the first order
    assert key == customer.encode() and trigger["type"] == "Campaign Triggered"
    assert (trigger["data"]["trigger"], trigger["data"]["step"], trigger["data"]["at"]) == ("onboarding", 1, "2025-03-01T12:00:00.000Z")
    sends["dead-letter"].assert_not_called()

    published = counters.delta()[1:3] + counters.delta()[6:]
    assert published == [0, 0, 0]  # published = acknowledged by the broker: nothing yet
    assert await acknowledge(sends) == 5
    assert counters.delta() == [1, 1, 3, 1, 0, 1, 1]


async def test_orders_accumulate_and_currency_is_converted(sends, feed):
    customer = "cust-agent-two-orders"
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-B-1", 100.0, "2025-03-01T12:00:00Z"), key=customer.encode())
        await feed(agent, order_completed(customer, "ORD-B-2", 50.0, "2025-03-20T09:30:00Z", currency="EUR"), key=customer.encode())

    state = state_of(customer)
    assert set(state.orders) == {"ORD-B-1", "ORD-B-2"}
    assert sum(o[1] for o in state.orders.values()) == pytest.approx(100.0 + 50.0 * 1.1)  # FX_RATES=EUR=1.1
    # Timers in between (onboarding steps at +3 and +7 days...) score too; these are the events'.
    scores = [v for _, v in sent(sends["customer-scores"]) if "event_id" in v["data"]["cause"]]
    assert [s["data"]["inputs"]["orders"] for s in scores] == [1, 2]
    assert scores[-1]["data"]["inputs"]["revenue"] == pytest.approx(155.0)
    assert scores[-1]["data"]["cause"]["event_id"] == "ORD-B-2-completed"
    sends["dead-letter"].assert_not_called()


async def test_duplicate_order_changes_nothing_and_sends_nothing(sends, feed):
    customer = "cust-agent-dup"
    raw = order_completed(customer, "ORD-C-1", 42.0)
    async with agents.score_orders.test_context() as agent:
        await feed(agent, raw, key=customer.encode())
        stored = tables.store.pending[customer.encode()]
        calls = {role: mock.call_count for role, mock in sends.items()}
        counters = Counters(
            ("clv_events_duplicate_total", {"topic": "orders"}),
            ("clv_events_consumed_total", {"topic": "orders", "type": "Order Completed"}),
            ("clv_events_published_total", {"topic": "customer-scores"}),
        )
        result = await feed(agent, raw, key=customer.encode())

    assert result.duplicate and result.rejected is None and result.outgoing == []
    assert tables.store.pending[customer.encode()] == stored
    assert len(state_of(customer).orders) == 1
    assert {role: mock.call_count for role, mock in sends.items()} == calls
    assert counters.delta() == [1, 1, 0]


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (b'{"specversion": "1.0", "id": ', b"cust-agent-bad", "bad_json"),
        (b"\xff\xfe not even text", None, "bad_json"),
        (b"[1, 2, 3]", b"cust-agent-bad", "not_an_object"),
    ],
    ids=["truncated-json", "binary-no-key", "json-array"],
)
async def test_bad_record_goes_to_dead_letter(sends, feed, raw, key, reason):
    counters = Counters(
        ("clv_events_invalid_total", {"topic": "orders", "reason": reason}),
        ("clv_events_consumed_total", {"topic": "orders", "type": "invalid"}),
        ("clv_events_published_total", {"topic": "dead-letter"}),
    )
    async with agents.score_orders.test_context() as agent:
        result = await feed(agent, raw, key=key, timestamp=1_740_830_400.25)

    assert result.rejected == reason
    [(dl_key, rejected)] = sent(sends["dead-letter"])
    assert dl_key == (key or b"")
    assert rejected["type"] == "Event Rejected"
    data = rejected["data"]
    assert data["reason"] == reason and data["detail"]
    assert data["source"] == {
        "topic": "orders",
        "partition": 0,
        "offset": 0,
        "timestamp_ms": 1_740_830_400_250,
        "key_b64": base64.b64encode(key).decode() if key is not None else None,
    }
    assert base64.b64decode(data["raw_b64"]) == raw
    assert data["raw_size"] == len(raw) and data["raw_truncated"] is False
    sends["customer-scores"].assert_not_called()
    sends["segment-changes"].assert_not_called()
    assert len(tables.customers) == 0 and not tables.store.pending
    await acknowledge(sends)
    assert counters.delta() == [1, 1, 1]


async def test_event_on_the_wrong_topic_is_rejected(sends, feed):
    customer = "cust-agent-wrong-topic"
    async with agents.score_email_events.test_context() as agent:
        result = await feed(agent, order_completed(customer, "ORD-D-1", 10.0), key=customer.encode())

    assert result.rejected == "wrong_topic"
    [(key, rejected)] = sent(sends["dead-letter"])
    assert key == customer.encode()
    assert rejected["data"]["reason"] == "wrong_topic"
    assert rejected["data"]["source"]["topic"] == "email-events"
    assert state_of(customer) is None


# -- email and community agents ------------------------------------------------------------


async def test_email_event_and_survey_update_state(sends, feed):
    customer = "cust-agent-email"
    opened = retarget("email-opened.v1.campaign", customer)
    survey = retarget("survey-answered.v1.onboarding", customer)
    counters = Counters(
        ("clv_events_consumed_total", {"topic": "email-events", "type": "Email Opened"}),
        ("clv_events_consumed_total", {"topic": "email-events", "type": "Survey Answered"}),
    )
    async with agents.score_email_events.test_context() as agent:
        await feed(agent, opened, key=customer.encode())
        await feed(agent, survey, key=customer.encode())

    state = state_of(customer)
    assert state.email["opened"] == 1
    assert state.email["last_engaged_at"] > 0
    assert state.survey["goal"] == "Drink less coffee, more tea"
    assert state.survey["preferences"] == ["green tea", "loose leaf", "organic"]
    sources = [orjson.loads(raw)["source"] for raw in (opened, survey)]
    assert state.seen == [f"{sources[0]} esp-evt-100410", f"{sources[1]} survey-resp-88121"]  # (source, id)
    assert state.orders == {}

    scores = [v for _, v in sent(sends["customer-scores"])]
    assert [s["data"]["cause"]["event_type"] for s in scores] == ["Email Opened", "Survey Answered"]
    assert all(s["data"]["inputs"]["orders"] == 0 for s in scores)
    assert scores[0]["data"]["inputs"]["emails_opened"] == 1
    assert scores[1]["data"]["inputs"]["has_survey"] is True
    sends["dead-letter"].assert_not_called()
    assert counters.delta() == [1, 1]

    # The same email event again (a redelivery) is a duplicate: no new score.
    async with agents.score_email_events.test_context() as agent:
        result = await feed(agent, opened, key=customer.encode())
    assert result.duplicate
    assert len(sent(sends["customer-scores"])) == 2
    assert state_of(customer).email["opened"] == 1


async def test_community_event_updates_state(sends, feed):
    customer = "cust-agent-community"
    async with agents.score_community_events.test_context() as agent:
        result = await feed(agent, retarget("community-posted.v1.question", customer), key=customer.encode())

    assert result.rejected is None
    assert state_of(customer).community  # something was counted
    [(key, score)] = sent(sends["customer-scores"])
    assert key == customer.encode() and score["data"]["inputs"]["community_actions"] == 1


# -- containment ---------------------------------------------------------------------------


async def test_engine_exception_goes_to_dead_letter_and_agent_carries_on(sends, feed, monkeypatch):
    customer = "cust-agent-boom"
    real_process = agents.engine.process
    calls = []

    def flaky_process(record, store):
        calls.append(record.offset)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_process(record, store)

    monkeypatch.setattr(agents.engine, "process", flaky_process)
    first = order_completed(customer, "ORD-E-1", 30.0)
    second = order_completed(customer, "ORD-E-2", 20.0, "2025-03-02T12:00:00Z")
    counters = Counters(("clv_events_invalid_total", {"topic": "orders", "reason": "processing_error"}))

    async with agents.score_orders.test_context() as agent:
        failed = await feed(agent, first, key=customer.encode())
        ok = await feed(agent, second, key=customer.encode())
        assert agent._crash_reason is None

    assert calls == [0, 1]
    assert failed.rejected == "processing_error"
    [(key, rejected)] = sent(sends["dead-letter"])
    assert key == customer.encode()
    assert rejected["data"]["reason"] == "processing_error"
    assert rejected["data"]["detail"] == "RuntimeError: boom"
    assert rejected["data"]["source"]["offset"] == 0
    assert base64.b64decode(rejected["data"]["raw_b64"]) == first

    assert ok.rejected is None
    assert list(state_of(customer).orders) == ["ORD-E-2"]  # the failed record left no trace
    [(_, score)] = sent(sends["customer-scores"])
    assert score["data"]["cause"]["event_id"] == "ORD-E-2-completed"
    assert counters.delta() == [1]


async def test_metrics_failure_does_not_stop_the_agent(sends, feed, monkeypatch):
    customer = "cust-agent-metrics-bug"

    def broken_record(*args, **kwargs):
        raise ValueError("metrics bug")

    monkeypatch.setattr(agents.metrics, "record", broken_record)
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-F-1", 10.0), key=customer.encode())
        await feed(agent, order_completed(customer, "ORD-F-2", 10.0, "2025-03-03T12:00:00Z"), key=customer.encode())
        assert agent._crash_reason is None

    assert set(state_of(customer).orders) == {"ORD-F-1", "ORD-F-2"}
    assert sends["customer-scores"].call_count == 2


async def test_latency_is_measured_when_the_score_is_delivered(sends, feed):
    customer = "cust-agent-latency"
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-G-1", 10.0), key=customer.encode())

        before = sample("clv_processing_latency_seconds_count")
        for delivery in sends["segment-changes"].deliveries:
            delivery.set_result(None)
        await asyncio.sleep(0)
        assert sample("clv_processing_latency_seconds_count") == before  # not by other outputs
        [score_delivery] = sends["customer-scores"].deliveries
        score_delivery.set_result(None)  # what the producer does once the broker acknowledges it
        await asyncio.sleep(0)
        assert sample("clv_processing_latency_seconds_count") == before + 1


async def test_a_refused_or_failed_output_is_counted_and_the_others_still_go(sends, feed, monkeypatch):
    customer = "cust-agent-refused"
    real_send = agents.app.producer.send

    async def refuse_segment_changes(topic, key, value, *args):
        if topic == agents.output_topics["segment-changes"]:
            raise ValueError("record too large")  # what the client raises for a record it will not take
        return await real_send(topic, key, value, *args)

    monkeypatch.setattr(agents.app.producer, "send", refuse_segment_changes)
    errors = sample("clv_publish_errors_total")
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-H-1", 10.0), key=customer.encode())
        assert agent._crash_reason is None
        refused = sample("clv_publish_errors_total") - errors
        assert refused >= 1  # the first order changes at least the lifecycle segment
        assert sends["customer-scores"].call_count == 1 and sends["campaign-triggers"].call_count == 1
        # A record the producer took but could not deliver (retries spent) is counted too.
        latencies = sample("clv_processing_latency_seconds_count")
        sends["customer-scores"].deliveries[0].set_exception(RuntimeError("delivery timed out"))
        await asyncio.sleep(0)
        assert sample("clv_publish_errors_total") - errors == refused + 1
        assert sample("clv_processing_latency_seconds_count") == latencies  # not a latency: it never arrived
        # Neither the refused records nor the failed one count as published.
        published = sample("clv_events_published_total", topic="segment-changes"), sample("clv_events_published_total", topic="customer-scores")
        await acknowledge(sends)
        assert (sample("clv_events_published_total", topic="segment-changes"), sample("clv_events_published_total", topic="customer-scores")) == published
        assert state_of(customer) is not None


async def test_outputs_of_one_customer_keep_their_order_when_a_send_waits(sends, handled, monkeypatch):
    """A send that waits for room (the client's buffer is full) keeps the lock: the same
    customer's next event, on another agent, queues its outputs only after these."""
    customer = "cust-agent-order"
    real_send = agents.app.producer.send
    gate = asyncio.Event()
    waited = []

    async def slow_first_score(topic, key, value, *args):
        if topic == agents.output_topics["customer-scores"] and not waited:
            waited.append(True)
            await gate.wait()
        return await real_send(topic, key, value, *args)

    monkeypatch.setattr(agents.app.producer, "send", slow_first_score)
    async with agents.score_orders.test_context() as orders, agents.score_email_events.test_context() as emails:
        await orders.put(order_completed(customer, "ORD-I-1", 10.0), key=customer.encode())
        while not waited:
            await asyncio.sleep(0)
        await emails.put(retarget("email-opened.v1.campaign", customer, time="2025-03-02T12:00:00Z"), key=customer.encode())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not handled.results and sends["customer-scores"].call_count == 0  # the email waits for the lock
        gate.set()
        await handled.wait_for(2)
    causes = [score["data"]["cause"]["event_id"] for _, score in sent(sends["customer-scores"])]
    assert [r.event_type for r in handled.results] == ["Order Completed", "Email Opened"]
    assert causes[0] == "ORD-I-1-completed" and len(causes) == 2


# -- web pages -----------------------------------------------------------------------------


def view(page: Any) -> Any:
    return page(app, app.web)


async def test_metrics_page_exposes_the_counters(sends, feed):
    customer = "cust-agent-page"
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-H-1", 10.0), key=customer.encode())

    response = await view(web.metrics_page).get(None)
    assert response.status == 200
    assert response.content_type == "text/plain"
    body = response.body.decode()
    assert 'clv_events_consumed_total{topic="orders",type="Order Completed"}' in body
    assert "clv_processing_latency_seconds_bucket" in body


async def test_a_customer_not_found_is_503_until_the_table_is_restored(sends, feed, monkeypatch):
    """Unknown (404) only once the table is settled: while it is restored, or its partitions
    move, a customer not found yet may exist (README: 404 unknown, 503 retry)."""
    completed = app.tables.recovery.completed
    response = web.customer_answer(app.web, "cust-not-yet-restored")
    assert response.status == 503 and json.loads(response.body)["error"] == "not_ready"
    completed.set()
    try:
        response = web.customer_answer(app.web, "cust-not-yet-restored")
        assert response.status == 404 and json.loads(response.body)["error"] == "not_found"
        monkeypatch.setattr(app, "rebalancing", True)
        assert web.customer_answer(app.web, "cust-not-yet-restored").status == 503
        monkeypatch.setattr(app, "rebalancing", False)
        customer = "cust-agent-known"
        async with agents.score_orders.test_context() as agent:
            await feed(agent, order_completed(customer, "ORD-K-1", 10.0), key=customer.encode())
        response = web.customer_answer(app.web, customer)
        assert response.status == 200 and json.loads(response.body)["customer"] == customer
    finally:
        completed.clear()


async def test_healthz_page():
    response = await view(web.healthz).get(None)
    assert response.status == 200
    assert json.loads(response.body) == {"status": "ok"}


async def test_readyz_page_follows_recovery_and_rebalancing(monkeypatch):
    completed = app.tables.recovery.completed
    assert not completed.is_set()
    response = await view(web.readyz).get(None)
    assert response.status == 503
    assert json.loads(response.body) == {"ready": False, "recovered": False, "rebalancing": False}

    completed.set()
    try:
        response = await view(web.readyz).get(None)
        assert response.status == 200
        assert json.loads(response.body) == {"ready": True, "recovered": True, "rebalancing": False}

        monkeypatch.setattr(app, "rebalancing", True)
        response = await view(web.readyz).get(None)
        assert response.status == 503
        assert json.loads(response.body) == {"ready": False, "recovered": True, "rebalancing": True}
    finally:
        completed.clear()


def test_the_token_scheme_is_case_insensitive_and_ids_must_be_utf8(monkeypatch):
    import dataclasses
    from types import SimpleNamespace

    monkeypatch.setattr(web, "settings", dataclasses.replace(web.settings, api_token="tok"))

    def refused(header: str | None, query: dict | None = None) -> bool:
        request = SimpleNamespace(headers={"Authorization": header} if header else {}, query=query or {})
        return web._refused(app.web, request) is not None

    assert not refused("Bearer tok") and not refused("bearer tok") and not refused("BEARER  tok")
    assert refused("Bearer nope") and refused("Basic tok") and refused(None)
    assert not refused(None, {"token": "tok"})
    assert web._bad_customer_id("\udcff\udcfe") == "a customer id is UTF-8 text"  # what %FF%FE decodes to
    assert web._bad_customer_id("café-1") is None


async def test_an_event_dated_before_an_erasure_stays_out_also_after_a_rebuild(sends, feed, monkeypatch):
    """The erasure leaves a marker (hash only) in the table, with the states; an order
    published before the request and read after it creates nothing, also once the partitions
    are rebuilt from the table as after a restart."""
    customer = "cust-agent-erased"
    digest = hashlib.sha256(customer.encode()).hexdigest()
    async with agents.score_orders.test_context() as orders:
        await feed(orders, order_completed(customer, "ORD-E-1", 30.0, "2025-03-01T12:00:00Z"), key=customer.encode())
    async with agents.erase_customers.test_context() as erasures:
        result = await feed(erasures, retarget("erasure-requested.v1.gdpr", customer, time="2025-03-02T00:00:00Z"), key=customer.encode())
    assert result.erased is True
    marker_key = tables.ERASED_PREFIX + digest.encode()
    partition, marker = tables.store.pending[marker_key]
    assert customer.encode() not in marker_key + marker
    assert tables.erasure_marker(marker) == (partition, 1_740_873_600.0)  # 2025-03-02T00:00:00Z
    assert state_of("\x00erased:" + digest) is None  # the query API's look-up never decodes a marker

    late = order_completed(customer, "ORD-E-0", 30.0, "2025-03-01T18:00:00Z")
    counters = Counters(("clv_events_before_erasure_total", {"topic": "orders"}))
    async with agents.score_orders.test_context() as orders:
        dropped = await feed(orders, late, key=customer.encode())
    assert dropped.before_erasure and dropped.outgoing == [] and dropped.rejected is None
    assert state_of(customer) is None and counters.delta() == [1]

    # What a write-back leaves in the table, then the rebuild a restart runs.
    for key, (_partition, raw) in tables.store.pending.items():
        if raw is None:
            tables.customers.data.pop(key, None)
        else:
            tables.customers.data[key] = raw
    tables.store.pending.clear()
    agents.engine.partitions.clear()
    changelog = tables.customers.changelog_topic.get_topic_name()
    monkeypatch.setattr(agents.app.assignor, "assigned_actives", lambda: {TP(changelog, 0)})
    monkeypatch.setattr(agents, "load_models", AsyncMock())  # reads the model-state topic: no broker here
    await agents.rebuild_partitions()
    assert agents.engine.partitions[0].erasures == {digest: 1_740_873_600.0}
    assert agents.engine.partitions[0].customers == 0
    async with agents.score_orders.test_context() as orders:
        again = await feed(orders, late, key=customer.encode())
        back = await feed(orders, order_completed(customer, "ORD-E-2", 30.0, "2025-03-05T12:00:00Z"), key=customer.encode())
    assert again.before_erasure and again.outgoing == []
    assert back.new_customer and list(state_of(customer).orders) == ["ORD-E-2"]


async def test_a_known_customer_is_503_too_while_the_table_is_restored(sends, feed, monkeypatch):
    """README: 503 while the owner restores its state or its partitions move — a state found
    then may be behind, or no longer this worker's."""
    customer = "cust-agent-known-restoring"
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-KR-1", 10.0), key=customer.encode())
    assert web.customer_answer(app.web, customer).status == 503  # not recovered yet
    completed = app.tables.recovery.completed
    completed.set()
    try:
        assert web.customer_answer(app.web, customer).status == 200
        monkeypatch.setattr(app, "rebalancing", True)
        response = web.customer_answer(app.web, customer)
        assert response.status == 503 and json.loads(response.body)["error"] == "not_ready"
    finally:
        completed.clear()


async def test_faust_table_and_router_pages_are_not_served():
    """They would answer any customer's stored state and owner past API_TOKEN."""
    assert app.conf.web_tables_enabled is False and app.conf.web_router_enabled is False
    prefixes = [prefix for prefix, _blueprint in app.web.blueprints._enabled]
    assert "/table" not in prefixes and "/router" not in prefixes


@pytest.mark.filterwarnings("ignore:Setting new value for configuration key")
async def test_a_worker_does_not_count_itself_twice_whatever_the_spelling_of_its_url(monkeypatch):
    """Faust's assignment lists the canonical URL as yarl normalises it (host in lower case,
    no :80); the worker's own must be recognised however WEB_ADVERTISED_URL is written."""
    from types import SimpleNamespace

    from yarl import URL

    monkeypatch.setattr(app.conf, "canonical_url", URL("http://Worker-A.example:80"))
    monkeypatch.setattr(app.router, "table_metadata", lambda name: {"http://worker-a.example": {}, "http://worker-b.example:6066": {}})
    asked: list[str] = []

    class Peers:
        def get(self, url: str, **kwargs: Any) -> Any:
            asked.append(url)
            raise OSError("no peer here")

    monkeypatch.setattr(type(app), "http_client", property(lambda self: Peers()))
    parts, missing = await web._peer_summaries(SimpleNamespace(headers={}, query={}))
    assert asked == ["http://worker-b.example:6066/api/summary"]
    assert len(parts) == 1 and missing == ["http://worker-b.example:6066"]


async def test_without_a_partition_assignment_the_answer_is_partial(monkeypatch):
    from types import SimpleNamespace

    def no_assignment(name: str) -> dict:
        raise KeyError(name)

    monkeypatch.setattr(app.router, "table_metadata", no_assignment)
    response = await view(web.segments_page).get(SimpleNamespace(headers={}, query={}))
    assert json.loads(response.body)["partial"] is True
    monkeypatch.setattr(app.router, "table_metadata", lambda name: {})
    parts, missing = await web._peer_summaries(SimpleNamespace(headers={}, query={}))
    assert missing == [web.NO_ASSIGNMENT]


async def test_a_revoked_partitions_states_leave_the_memory_store(monkeypatch):
    """The write-back puts states into Faust's memory store; when their partition is taken
    away, the store drops them — by a key index the write-back must fill."""
    tables.store.put("cust-moves-away", CustomerState(customer="cust-moves-away", partition=0))
    tables.store.put("cust-stays", CustomerState(customer="cust-stays", partition=1))
    monkeypatch.setattr(tables.customers.app.producer, "flush", AsyncMock())

    class Delivered:
        def __init__(self, offset: int) -> None:
            self.offset = offset

    async def send(topic: str, key: bytes, value: Any, partition: int, timestamp: Any, headers: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        future.set_result(Delivered(7))
        return future

    monkeypatch.setattr(tables.customers.app.producer, "send", send)
    tables.store.mark_erased("ab" * 32, 0, 1.0)
    assert await tables.store.flush() == 3
    changelog = tables.customers.changelog_topic.get_topic_name()
    monkeypatch.setattr(tables.faust.Table, "on_recovery_completed", AsyncMock())  # Faust's own: no broker here
    monkeypatch.setattr(tables.customers, "kept_partitions", {0, 1})  # what the last recovery kept
    await tables.customers.on_recovery_completed({TP(changelog, 1)}, set())
    held = tables.customers.data.data
    assert b"cust-moves-away" not in held and b"cust-stays" in held
    assert tables.ERASED_PREFIX + b"ab" * 32 not in held  # partition 0's erasure marker went too
    # A recovery that loses no partition scans nothing (it would cost ~3 µs a state).
    monkeypatch.setattr(tables, "_partition_of", None)
    await tables.customers.on_recovery_completed({TP(changelog, 1)}, {TP(changelog, 2)})


async def test_the_local_summary_matches_its_openapi_schema(sends, feed):
    """What workers ask each other (``/api/summary?local=1``) has a schema of its own."""
    import jsonschema
    from referencing import Registry, Resource
    from types import SimpleNamespace

    customer = "cust-agent-local-summary"
    async with agents.score_orders.test_context() as agent:
        await feed(agent, order_completed(customer, "ORD-LS-1", 10.0), key=customer.encode())
    openapi = json.loads((EXAMPLES.parent / "openapi.json").read_text())
    registry = Registry().with_resource("urn:openapi", Resource.from_contents({**openapi, "$schema": "https://json-schema.org/draft/2020-12/schema"}))

    def validate(name: str, doc: Any) -> None:
        jsonschema.Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{name}"}, registry=registry).validate(doc)

    response = await view(web.summary_page).get(SimpleNamespace(headers={}, query={"local": "1"}))
    local = json.loads(response.body)
    validate("LocalSummary", local)
    assert local["summary"]["customers"] == 1
    with pytest.raises(jsonschema.ValidationError):
        validate("Summary", local)



def test_an_id_that_shows_nothing_is_a_bad_customer_id():
    """The worker refuses events of such ids (missing_customer_id): no customer can have one,
    so the query API says 400, not 404."""
    for customer_id in (" ", "\u200b", "\u3164", "\u00a0\u200d"):
        assert web._bad_customer_id(customer_id) is not None, repr(customer_id)
    for customer_id in ("cust-1", "é", "客户-7", "alice\u200b"):
        assert web._bad_customer_id(customer_id) is None, repr(customer_id)

"""The broker watch: readiness follows the broker, lost topics are recreated, a topic that is
not co-partitioned with the state table keeps the worker unready."""

from __future__ import annotations

import json
from typing import Any

from streamer.shell import agents, web
from streamer.shell.app import app, settings
from streamer.shell.broker_watch import BrokerWatch


def view(page: Any) -> Any:
    return page(app, app.web)


async def test_readyz_is_503_while_the_broker_is_unreachable(monkeypatch):
    completed = app.tables.recovery.completed
    completed.set()
    try:
        monkeypatch.setattr(agents.broker_watch, "reachable", False)
        monkeypatch.setattr(agents.broker_watch, "problem", "broker unreachable")
        response = await view(web.readyz).get(None)
        assert response.status == 503
        body = json.loads(response.body)
        assert body == {"ready": False, "recovered": True, "rebalancing": False, "broker": False, "problem": "broker unreachable"}
    finally:
        completed.clear()


def fake_broker(watch: BrokerWatch, monkeypatch, partitions: dict[str, int] | None) -> list[str]:
    """``partitions`` None: unreachable. Returns the names the watch creates."""
    created: list[str] = []

    async def topics() -> dict[str, int]:
        if partitions is None:
            raise ConnectionError("down")
        return dict(partitions)

    async def create(specs: list) -> None:
        for spec in specs:
            created.append(spec.name)
            partitions[spec.name] = spec.num_partitions  # type: ignore[index]

    monkeypatch.setattr(watch, "_partitions", topics)
    monkeypatch.setattr(watch, "_create", create)
    return created


async def test_probe_follows_the_broker_and_recreates_lost_topics(monkeypatch):
    watch = BrokerWatch(settings, agents.broker_watch.specs[-1:])  # the changelog spec
    fake_broker(watch, monkeypatch, None)
    await watch.probe()
    assert not watch.ok and not watch.reachable and watch.interval < 5

    # Back, but empty (a broker restarted without its data): everything is created again.
    created = fake_broker(watch, monkeypatch, {})
    await watch.probe()
    assert watch.ok and watch.reachable
    assert set(created) == {spec.name for spec in watch.specs}


async def test_probe_keeps_the_worker_unready_when_an_input_is_not_co_partitioned(monkeypatch):
    watch = BrokerWatch(settings, agents.broker_watch.specs[-1:])
    partitions = {spec.name: spec.num_partitions for spec in watch.specs}
    partitions[settings.topics["orders"]] = settings.partitions + 2  # auto-created by a client
    created = fake_broker(watch, monkeypatch, partitions)
    await watch.probe()
    assert not created and watch.reachable and not watch.ok
    assert settings.topics["orders"] in (watch.problem or "")


def test_refused_topics_are_read_from_the_response_not_an_exception():
    """aiokafka's create_topics returns each topic's error code instead of raising."""
    from types import SimpleNamespace

    from streamer.topics import refused_topics

    assert refused_topics(SimpleNamespace(topic_errors=[("a", 0, None), ("b", 36, "Topic 'b' already exists.")])) is None
    refused = refused_topics(SimpleNamespace(topic_errors=[("a", 0, None), ("c", 38, "Replication factor: 3 larger than available brokers: 1.")]))
    assert refused is not None and not refused.retriable
    assert str(refused) == "the broker did not create topics: c: InvalidReplicationFactorError (Replication factor: 3 larger than available brokers: 1.)"
    assert refused_topics(SimpleNamespace(topic_errors=[("d", 41)])).retriable  # NotController, v0 has no message


async def test_probe_keeps_the_worker_unready_when_the_broker_refuses_a_topic(monkeypatch):
    from streamer.topics import TopicsNotCreated

    watch = BrokerWatch(settings, agents.broker_watch.specs[-1:])
    partitions = {spec.name: spec.num_partitions for spec in watch.specs}
    del partitions[settings.topics["dead-letter"]]
    fake_broker(watch, monkeypatch, partitions)

    async def refuse(specs: list) -> None:
        raise TopicsNotCreated({spec.name: "TopicAuthorizationFailedError" for spec in specs}, retriable=False)

    monkeypatch.setattr(watch, "_create", refuse)
    await watch.probe()
    assert watch.reachable and not watch.ok
    assert watch.problem == f"topics missing and not created: the broker did not create topics: {settings.topics['dead-letter']}: TopicAuthorizationFailedError"

    async def vanish(specs: list) -> None:  # "created", but the metadata still lacks it
        return None

    monkeypatch.setattr(watch, "_create", vanish)
    await watch.probe()
    assert not watch.ok and watch.problem == f"topics missing after creating them: {settings.topics['dead-letter']}"


def gauge(text: str, name: str) -> float:
    [value] = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return value


async def test_metrics_show_readiness_and_the_broker_as_of_the_scrape(monkeypatch):
    completed = app.tables.recovery.completed
    completed.set()
    try:
        text = (await view(web.metrics_page).get(None)).body.decode()
        assert gauge(text, "clv_worker_ready") == 1 and gauge(text, "clv_broker_reachable") == 1
        monkeypatch.setattr(agents.broker_watch, "reachable", False)
        monkeypatch.setattr(agents.broker_watch, "problem", "broker unreachable")
        text = (await view(web.metrics_page).get(None)).body.decode()
        assert gauge(text, "clv_worker_ready") == 0 and gauge(text, "clv_broker_reachable") == 0
        monkeypatch.setattr(agents.broker_watch, "reachable", True)
        monkeypatch.setattr(agents.broker_watch, "problem", None)
        text = (await view(web.metrics_page).get(None)).body.decode()
        assert gauge(text, "clv_worker_ready") == 1
    finally:
        completed.clear()
    text = (await view(web.metrics_page).get(None)).body.decode()
    assert gauge(text, "clv_worker_ready") == 0 and gauge(text, "clv_broker_reachable") == 1  # not recovered


async def test_a_worker_waiting_for_its_broker_serves_metrics(monkeypatch, unused_tcp_port):
    """Scraped as up, broker unreachable: the outage is ClvBrokerUnreachable, not a worker
    that looks down (ClvWorkerDown)."""
    import asyncio
    import types
    import urllib.error
    import urllib.request

    from streamer import topics
    from streamer.shell import worker

    release = asyncio.Event()

    async def broker_absent(settings: Any, attempts: Any = None) -> list[str]:
        await release.wait()
        return []

    monkeypatch.setattr(topics, "ensure_topics", broker_absent)
    settings_ = types.SimpleNamespace(web_host="127.0.0.1", web_port=unused_tcp_port)
    waiting = asyncio.create_task(worker.wait_for_broker(settings_))
    url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
    for _ in range(100):
        try:
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stand-in server never answered")
    # The query API answers as a worker that is not ready: 503 to retry, never a 404.
    for path in ("/customers/cust-000123", "/segments", "/api/summary", "/dashboard"):
        request = urllib.request.Request(f"http://127.0.0.1:{unused_tcp_port}{path}")
        try:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
            raise AssertionError(f"{path} answered 200 while the worker waits for its broker")
        except urllib.error.HTTPError as err:
            assert err.code == 503 and json.loads(err.read())["error"] == "not_ready", path
    release.set()
    assert await waiting == []
    assert gauge(body, "clv_worker_ready") == 0 and gauge(body, "clv_broker_reachable") == 0

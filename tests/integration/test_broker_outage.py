"""The broker goes away: absent when the worker starts, or restarted under a running worker.

Each test runs its own embedded broker (not the session one) on a fixed port, so it can be
stopped and started again on the same address. By default Tansu keeps everything in memory: a
restarted broker has no topics, no committed offsets and no changelog. A worker that was
running keeps its state in its own (memory) table, so it can resume — if its topics are there
again. Section (c) gives the broker S3 storage (a local moto server) instead, so a broker
killed mid-stream comes back with everything it had acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from streamer import settings as settings_module
from streamer.broker import EmbeddedBroker, free_port
from streamer.topics import ensure_topics
from tests.integration.conftest import Worker, worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent, partition_count, partition_of
from tests.integration.object_store import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

PARTITIONS = 2
CUSTOMERS = [f"outage-{n}" for n in range(12)]


def http_status(url: str) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def launch(worker: Worker) -> None:
    """Start the worker process without waiting for it to be ready (Worker.start waits)."""
    env = {**os.environ, **worker.env, "KAFKA_BOOTSTRAP": worker.bootstrap, "WEB_PORT": str(worker.web_port)}
    with open(worker.log_path, "ab") as log:
        worker.process = subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def order(customer: str, n: int) -> bytes:
    data = {
        "order_id": f"{customer}-o{n}",
        "total": 10.0 * (n + 1),
        "currency": "USD",
        "margin": 4.0 * (n + 1),
        "products": [{"product_id": "p", "price": 10.0 * (n + 1), "quantity": 1, "tier": "basic"}],
    }
    return cloudevent(f"{customer}-e{n}", "Order Completed", f"2024-{n + 1:02d}-10T10:00:00Z", customer, data)


def email(customer: str, n: int) -> bytes:
    return cloudevent(f"{customer}-m{n}", "Email Opened", f"2024-{n + 1:02d}-11T10:00:00Z", customer, {"email_id": f"mail-{n}"})


def review(customer: str, n: int) -> bytes:
    return cloudevent(f"{customer}-r{n}", "Review Posted", f"2024-{n + 1:02d}-12T10:00:00Z", customer, {"product_id": "p", "rating": 4})


async def publish_round(kafka: Kafka, topics: dict[str, str], n: int) -> set[str]:
    """One order, email and review per customer; returns the event ids."""
    for customer in CUSTOMERS:
        await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, n))
        await kafka.send(topics["email-events"], "email-events", customer.encode(), email(customer, n))
        await kafka.send(topics["community-events"], "community-events", customer.encode(), review(customer, n))
    return {f"{c}-{x}{n}" for c in CUSTOMERS for x in "emr"}


def scored(kafka: Kafka, scores_topic: str) -> set[str]:
    return {o.doc["data"]["cause"].get("event_id") for o in kafka.outputs if o.topic == scores_topic} - {None}


async def wait_scored(kafka: Kafka, scores_topic: str, ids: set[str], timeout_s: float) -> set[str]:
    """Wait until every id has a score update, or the timeout; returns the ids still missing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        missing = ids - scored(kafka, scores_topic)
        if not missing:
            return set()
        await asyncio.sleep(0.2)
    return ids - scored(kafka, scores_topic)


def last_inputs(kafka: Kafka, scores_topic: str) -> dict[str, tuple[int, float]]:
    """customer -> (orders, revenue) of its latest score update caused by an event."""
    last: dict[str, tuple[int, float]] = {}
    for o in kafka.outputs:
        if o.topic == scores_topic and o.doc["data"]["cause"].get("event_id"):
            data = o.doc["data"]
            last[data["customer"]] = (data["inputs"]["orders"], data["inputs"]["revenue"])
    return last


def sample(url: str, seconds: float, every: float = 0.5) -> list[tuple[float, int | None]]:
    """(elapsed, status) of GET url every ``every`` s for ``seconds``."""
    started, samples = time.monotonic(), []
    while time.monotonic() - started < seconds:
        samples.append((round(time.monotonic() - started, 1), http_status(url)))
        time.sleep(every)
    return samples


async def create_topics_like_the_worker(env: dict[str, str], bootstrap: str) -> list[str]:
    """What an operator (or `streamer replay`) would do: create the service's topics with the
    worker's own settings and code (ensure_topics, which the worker runs at start)."""
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        os.environ["KAFKA_BOOTSTRAP"] = bootstrap
        settings = settings_module.load()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return await ensure_topics(settings, attempts=5)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def brokers() -> Iterator[list[EmbeddedBroker]]:
    """Own embedded brokers on one fixed port (one at a time); all stopped at teardown."""
    started: list[EmbeddedBroker] = []
    yield started
    for broker in started:
        broker.stop()


def start_broker(brokers: list[EmbeddedBroker], port: int, tmp_path: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(port=port, log_path=tmp_path / f"tansu-{len(brokers)}.log")
    brokers.append(broker)
    return broker.start()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def new_worker(workers: list[Worker], port: int, tmp_path: Path, **extra: str) -> Worker:
    worker = Worker(f"127.0.0.1:{port}", worker_env(partitions=PARTITIONS, **extra), tmp_path / f"w{len(workers)}")
    worker.workdir.mkdir(parents=True, exist_ok=True)
    workers.append(worker)
    return worker


# -- (a) no broker when the worker starts ---------------------------------------------------


async def test_worker_started_before_the_broker_waits_and_then_processes(brokers, workers, port: int, tmp_path: Path) -> None:
    """Nothing listens on the port at start; the broker comes 10 s later: the worker must not
    have given up, must never have been ready without it, and must then work normally."""
    worker = new_worker(workers, port, tmp_path)
    launch(worker)
    before = sample(f"{worker.url}/readyz", 10.0)
    assert worker.process.poll() is None, f"worker exited while the broker was absent:\n{worker.log_tail()}"
    assert all(status != 200 for _, status in before), before

    start_broker(brokers, port, tmp_path)
    ready_after = worker.wait_ready(90)
    topics = worker.topics
    async with Kafka(worker.bootstrap, [topics["customer-scores"]]) as kafka:
        ids = await publish_round(kafka, topics, 0)
        missing = await wait_scored(kafka, topics["customer-scores"], ids, 60)
    assert not missing, sorted(missing)[:10]
    print(f"\nready {ready_after:.1f}s after the broker started; /readyz while absent: {sorted({s for _, s in before}, key=str)}")


async def test_health_answers_and_worker_keeps_waiting_while_the_broker_is_absent(workers, port: int, tmp_path: Path) -> None:
    """Liveness must answer (the process is fine), readiness must say no, and the worker must keep
    waiting for as long as the broker is away (an orchestrator restarts crashed pods with back-off;
    a live, unready pod is what it expects while a dependency is down)."""
    worker = new_worker(workers, port, tmp_path)
    launch(worker)
    deadline = time.monotonic() + 15
    while http_status(f"{worker.url}/healthz") != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert http_status(f"{worker.url}/healthz") == 200, "/healthz does not answer while the broker is absent"
    assert http_status(f"{worker.url}/readyz") == 503
    # Scraped as up, broker unreachable: the outage alerts as ClvBrokerUnreachable.
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:
        page = response.read().decode()
    assert "clv_broker_reachable 0.0" in page and "clv_worker_ready 0.0" in page, page
    # The unpatched worker gives up after 30 attempts, ~126 s of back-off.
    while time.monotonic() - deadline < 140 - 15:
        assert worker.process.poll() is None, f"worker exited while the broker was absent:\n{worker.log_tail(8)}"
        assert http_status(f"{worker.url}/healthz") == 200
        time.sleep(2)


# -- (b) the broker restarts under a running worker ---------------------------------------


async def run_until_outage(worker: Worker, topics: dict[str, str], rounds: int = 2) -> dict[str, tuple[int, float]]:
    async with Kafka(worker.bootstrap, [topics["customer-scores"]]) as kafka:
        ids = set()
        for n in range(rounds):
            ids |= await publish_round(kafka, topics, n)
        assert not await wait_scored(kafka, topics["customer-scores"], ids, 60)
        await kafka.settle(quiet_s=1.0)
        return last_inputs(kafka, topics["customer-scores"])


async def test_readyz_is_not_200_while_the_broker_is_down(brokers, workers, port: int, tmp_path: Path) -> None:
    broker = start_broker(brokers, port, tmp_path)
    worker = new_worker(workers, port, tmp_path)
    worker.start()
    await run_until_outage(worker, worker.topics, rounds=1)
    broker.stop()
    samples = sample(f"{worker.url}/readyz", 20.0)
    assert worker.process.poll() is None
    assert http_status(f"{worker.url}/healthz") == 200
    assert any(status not in (200, None) for _, status in samples), f"/readyz during the outage: {samples}"
    assert samples[-1][1] not in (200, None), f"/readyz 20 s into the outage: {samples[-5:]}"
    # The broker comes back (empty): ready again, and working.
    start_broker(brokers, port, tmp_path)
    worker.wait_ready(90)
    topics = worker.topics
    async with Kafka(worker.bootstrap, [topics["customer-scores"]]) as kafka:
        ids = await publish_round(kafka, topics, 1)
        assert not await wait_scored(kafka, topics["customer-scores"], ids, 60)


async def test_worker_resumes_after_a_broker_restart_once_its_topics_are_recreated(brokers, workers, port: int, tmp_path: Path) -> None:
    """Broker stopped 10 s, restarted empty on the same port; the service's topics are created
    again as an operator would (ensure_topics, what the worker runs at start); the same worker
    process must resume and process new events on every input topic and partition. Its memory
    table survived, so each customer's order count continues from before the outage."""
    broker = start_broker(brokers, port, tmp_path)
    worker = new_worker(workers, port, tmp_path)
    worker.start()
    pid = worker.process.pid
    topics = worker.topics
    before = await run_until_outage(worker, topics)
    assert before == {c: (2, pytest.approx(30.0)) for c in CUSTOMERS}

    broker.stop()
    during = sample(f"{worker.url}/readyz", 10.0)
    start_broker(brokers, port, tmp_path)
    created = await create_topics_like_the_worker(worker.env, worker.bootstrap)
    assert topics["orders"] in created  # the restarted broker had lost them
    ready_after = worker.wait_ready(90)
    assert worker.process.poll() is None and worker.process.pid == pid

    async with Kafka(worker.bootstrap, [topics["customer-scores"]]) as kafka:
        ids = set()
        for n in (2, 3):
            ids |= await publish_round(kafka, topics, n)
        missing = await wait_scored(kafka, topics["customer-scores"], ids, 90)
        await kafka.settle(quiet_s=1.0)
        after = last_inputs(kafka, topics["customer-scores"])
    assert not missing, f"{len(missing)} of {len(ids)} events not processed after the restart, e.g. {sorted(missing)[:6]}"
    # 4 orders of 10, 20, 30, 40: two applied before the outage (kept in the worker's memory
    # table), two after.
    assert after == {c: (4, pytest.approx(100.0)) for c in CUSTOMERS}
    assert worker.process.pid == pid
    print(f"\n/readyz during the outage: {sorted({s for _, s in during}, key=str)}; ready {ready_after:.1f}s after the topics were recreated")


async def test_worker_recreates_its_topics_after_a_broker_restart(brokers, workers, port: int, tmp_path: Path) -> None:
    """Nobody recreates the topics: the worker itself must, with the right partition counts for
    its inputs and its table's changelog (or at least not report ready while they are wrong)."""
    broker = start_broker(brokers, port, tmp_path)
    worker = new_worker(workers, port, tmp_path)
    worker.start()
    topics = worker.topics
    await run_until_outage(worker, topics)
    broker.stop()
    time.sleep(10)
    start_broker(brokers, port, tmp_path)
    time.sleep(2.0)
    worker.wait_ready(90)
    time.sleep(10.0)  # time for a worker that recreates its topics to have done so
    async with Kafka(worker.bootstrap, [topics["customer-scores"]]) as kafka:
        ids = set()
        for n in (2, 3):
            ids |= await publish_round(kafka, topics, n)
        missing = await wait_scored(kafka, topics["customer-scores"], ids, 30)
    counts = {role: await partition_count(worker.bootstrap, topics[role]) for role in ("orders", "email-events", "community-events")}
    counts["changelog"] = await partition_count(worker.bootstrap, f"{worker.env['STREAMER_APP_ID']}-customer-state-changelog")
    lost_partitions = {partition_of(c, counts["orders"]) for c in CUSTOMERS if any(m.startswith(f"{c}-") for m in missing)}
    ready = http_status(f"{worker.url}/readyz")
    assert counts == {role: PARTITIONS for role in counts} and not missing, (
        f"partitions after the restart: {counts}; {len(missing)} of {len(ids)} events never processed "
        f"(on partitions {sorted(lost_partitions)}); /readyz {ready}"
    )


# -- (c) the broker is killed mid-stream and comes back with its data -----------------------


@pytest.fixture
def object_store(tmp_path: Path) -> Iterator[ObjectStore]:
    with ObjectStore(log_path=tmp_path / "object-store.log") as store:
        yield store


def start_kept_broker(brokers: list[EmbeddedBroker], port: int, tmp_path: Path, store: ObjectStore) -> EmbeddedBroker:
    broker = EmbeddedBroker(port=port, log_path=tmp_path / f"tansu-{len(brokers)}.log", storage=store.storage, env=store.broker_env)
    brokers.append(broker)
    return broker.start()


ROLES = (("orders", order, "e"), ("email-events", email, "m"), ("community-events", review, "r"))


async def publish_acknowledged(kafka: Kafka, topics: dict[str, str], rounds: range, acked: set[str]) -> None:
    """Publish rounds of events, adding to ``acked`` the id of each one the broker acknowledged.
    A send that fails during the outage is not acknowledged (it may still have landed)."""
    for n in rounds:
        for customer in CUSTOMERS:
            for role, make, letter in ROLES:
                try:
                    await kafka.send(topics[role], role, customer.encode(), make(customer, n))
                except KafkaError:
                    continue
                acked.add(f"{customer}-{letter}{n}")
            await asyncio.sleep(0.05)  # spread the traffic so the broker dies mid-stream


def scored_orders(kafka: Kafka, scores_topic: str) -> dict[str, set[int]]:
    """customer -> the order numbers that caused a score update (distinct)."""
    orders: dict[str, set[int]] = {}
    for event_id in scored(kafka, scores_topic):
        customer, _, tail = event_id.rpartition("-")
        if tail.startswith("e"):
            orders.setdefault(customer, set()).add(int(tail[1:]))
    return orders


def expected_inputs(orders: dict[str, set[int]]) -> dict[str, tuple[int, float]]:
    """(orders, revenue) a customer has when each order n (total 10 × (n + 1)) counts once."""
    return {c: (len(ns), pytest.approx(sum(10.0 * (n + 1) for n in ns))) for c, ns in orders.items()}


async def test_broker_killed_mid_stream_loses_nothing_it_acknowledged(brokers, workers, object_store: ObjectStore, port: int, tmp_path: Path) -> None:
    """The broker is SIGKILLed while events flow and comes back 8 s later with its data (S3
    storage). Every event it had acknowledged is scored, none twice, by the same worker process;
    then the worker is SIGKILLed too, and a new one recovers its state from the changelog and
    offsets the broker kept, and continues from them."""
    start_kept_broker(brokers, port, tmp_path, object_store)
    worker = new_worker(workers, port, tmp_path)
    worker.start()
    pid, topics = worker.process.pid, worker.topics
    scores = topics["customer-scores"]
    acked: set[str] = set()
    async with Kafka(worker.bootstrap, [scores]) as kafka:
        publishing = asyncio.create_task(publish_acknowledged(kafka, topics, range(6), acked))
        while len(acked) < 2 * 3 * len(CUSTOMERS):  # two rounds in
            await asyncio.sleep(0.05)
        stored_before = object_store.object_count()
        brokers[-1].stop(kill=True)
        acked_at_kill = len(acked)
        during = await asyncio.to_thread(sample, f"{worker.url}/readyz", 8.0)
        start_kept_broker(brokers, port, tmp_path, object_store)
        await publishing
        missing = await wait_scored(kafka, scores, acked, 120)
        await kafka.settle(quiet_s=2.0)
        orders = scored_orders(kafka, scores)
        inputs = last_inputs(kafka, scores)
    assert stored_before > 0, "the broker stored nothing in the object store"
    assert worker.process.poll() is None and worker.process.pid == pid, worker.log_tail()
    assert any(status != 200 for _, status in during), f"/readyz while the broker was dead: {during}"
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events never scored, e.g. {sorted(missing)[:6]}"
    # Each order counted exactly once: the state's order count and revenue are those of the
    # distinct orders scored, and every acknowledged order is among them.
    assert inputs == expected_inputs(orders)
    assert all(orders[c] >= {int(i.rpartition("-e")[2]) for i in acked if i.startswith(f"{c}-e")} for c in CUSTOMERS)

    # The worker dies too: a new process must find state and offsets where the broker kept them.
    worker.stop(kill=True)
    worker.start(timeout_s=90)
    async with Kafka(worker.bootstrap, [scores]) as kafka:
        more: set[str] = set()
        await publish_acknowledged(kafka, topics, range(6, 7), more)
        assert not await wait_scored(kafka, scores, more, 90)
        await kafka.settle(quiet_s=2.0)
        after = last_inputs(kafka, scores)
        orders_after = scored_orders(kafka, scores)
    assert orders_after == {c: orders[c] | {6} for c in CUSTOMERS}
    assert after == expected_inputs(orders_after)
    print(
        f"\n{len(acked)} events acknowledged ({acked_at_kill} before the kill), all scored once; "
        f"/readyz while dead: {sorted({s for _, s in during}, key=str)}; {stored_before} objects stored before the kill"
    )

"""Campaign triggers on the real broker, through real ``streamer worker`` processes: a
scripted history in event time gives exactly the triggers the pure core gives (replay =
living through it), each at its moment, with cooldowns and consent holding; a worker killed
while a timer waits neither loses nor doubles the trigger; with CLOCK=wall a trigger fires
with no event at all."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer import rules
from streamer.core.config import DAY, Limits
from streamer.core.engine import DictStore, Engine, Record
from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent, partition_of
from tests.integration.test_rebalance import partitions_seen

pytestmark = pytest.mark.integration

PARTITIONS = 2
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
RULES = """
[triggers.overdue]
factor = 1.0
cooldown_days = 200.0
[triggers.survey_request]
channel = "onsite"
"""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pick(name: str, partition: int) -> str:
    return next(f"{name}-{n}" for n in range(1000) if partition_of(f"{name}-{n}", PARTITIONS) == partition)


ANNA, BEN, CARL, CLOCK0 = pick("anna", 0), pick("ben", 0), pick("carl", 0), pick("clock", 0)
ERIK = pick("erik", 1)


def order(customer: str, day: float, oid: str, tier: str = "basic", total: float = 80.0) -> tuple[str, str, bytes]:
    data = {"order_id": oid, "total": total, "currency": "USD", "margin": total * 0.4, "products": [{"product_id": "p", "price": total, "quantity": 1, "tier": tier}]}
    return ("orders", customer, cloudevent(f"ev-{oid}", "Order Completed", iso(T0 + day * DAY), customer, data))


def email(customer: str, day: float, eid: str, type_name: str, data: dict | None = None) -> tuple[str, str, bytes]:
    return ("email-events", customer, cloudevent(eid, type_name, iso(T0 + day * DAY), customer, data if data is not None else {"email_id": eid}))


def history() -> list[tuple[str, str, bytes]]:
    return [
        order(ANNA, 0, "A1"),  # basic: onboarding 0/3/7/14, survey at 14, upsell at 30
        email(BEN, 0.5, "ben-unsub", "Unsubscribed", {}),
        order(BEN, 1, "B1"),  # unsubscribed: no email triggers; the onsite survey request still comes
        order(CARL, 2, "C1"),
        order(CARL, 10, "C2", tier="advanced"),  # upgraded: no upsell
        email(ERIK, 3, "erik-survey", "Survey Answered", {"survey_id": "s", "goal": "learn piano"}),
        order(ERIK, 3, "E1"),  # has a survey answer: no survey request
        ("community-events", ERIK, cloudevent("erik-ref-1", "Referral Made", iso(T0 + 5 * DAY), ERIK, {"referral_code": "R1"})),
        ("community-events", ERIK, cloudevent("erik-ref-2", "Referral Made", iso(T0 + 6 * DAY), ERIK, {"referral_code": "R2"})),  # cooldown
        order(CLOCK0, 40, "K1"),  # partition 0's clock passes every due moment up to day 40
        order(ANNA, 45, "A2"),  # overdue was at 0 + 90 days... not reached; new interval
        order(CLOCK0, 400, "K2"),  # past anna's overdue and her entering high churn risk
        order(CLOCK0, 420, "K3"),  # past anna's lapse (day 45 + 365)
        order(ERIK, 400, "E2"),  # partition 1's clock moves too
    ]


def triggers_of(outputs, topic: str) -> list[tuple[str, str, int | None, str]]:
    return [(o.doc["data"]["customer"], o.doc["data"]["trigger"], o.doc["data"].get("step"), o.doc["data"]["at"]) for o in outputs if o.topic == topic]


async def publish_in_order(kafka: Kafka, topics: dict[str, str], items: list[tuple[str, str, bytes]]) -> list[Record]:
    """Send one at a time, each after the previous one's score update came out, so the order
    across the three input topics is fixed (the core replay then sees the same order)."""
    sent = []
    for role, key, value in items:
        sent.append(await kafka.send(topics[role], role, key.encode(), value))
        event_id = orjson.loads(value)["id"]
        await kafka.wait_for(lambda o, e=event_id: o.topic == topics["customer-scores"] and o.doc["data"]["cause"].get("event_id") == e, timeout_s=60)
    return sent


def core_replay(records: list[Record], rules_path: Path, topics: dict[str, str]) -> list[tuple]:
    engine = Engine(rules.load(rules_path), Limits())
    store = DictStore()
    out = []
    for record in records:
        for o in engine.process(record, store).outgoing:
            if o.topic_role == "campaign-triggers":
                d = orjson.loads(o.value)["data"]
                out.append((d["customer"], d["trigger"], d.get("step"), d["at"]))
    return out


async def test_scripted_triggers_match_the_core_and_their_moments(make_worker, broker: str, tmp_path: Path) -> None:
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES)
    worker = make_worker(worker_env(partitions=PARTITIONS, STREAMER_CONFIG=str(rules_path)))
    topics = {**worker.topics, "campaign-triggers": worker.env["TOPIC_TRIGGERS"]}
    async with Kafka(broker, [topics["customer-scores"], topics["campaign-triggers"]]) as kafka:
        sent = await publish_in_order(kafka, topics, history())
        await kafka.settle(quiet_s=2.0)
        outputs = list(kafka.outputs)
    actual = triggers_of(outputs, topics["campaign-triggers"])
    # Replaying the same records through the pure core gives the same triggers, in order per
    # customer (the topic is keyed by customer, so per-customer order is what is guaranteed).
    expected = core_replay(sent, rules_path, topics)
    per_customer = lambda items: {c: [i for i in items if i[0] == c] for c in {i[0] for i in items}}  # noqa: E731
    assert per_customer(actual) == per_customer(expected)
    ids = [o.doc["id"] for o in outputs if o.topic == topics["campaign-triggers"]]
    assert len(ids) == len(set(ids))

    by = per_customer(actual)
    day = lambda d: iso(T0 + d * DAY)  # noqa: E731
    assert [t for t in by[ANNA] if t[1] == "onboarding"] == [(ANNA, "onboarding", s, day(d)) for s, d in ((1, 0), (2, 3), (3, 7), (4, 14))]
    assert (ANNA, "survey_request", None, day(14)) in by[ANNA]
    assert (ANNA, "upsell_advanced", None, day(30)) in by[ANNA]
    # Overdue: last order + 1.0 × the usual interval ((45 + 90) / 2 = 67.5 days).
    assert (ANNA, "overdue", None, day(45 + 67.5)) in by[ANNA]
    assert [t[1] for t in by[ANNA]].count("reactivation") == 1
    assert (ANNA, "win_back", None, iso(T0 + 410 * DAY + 1)) in by[ANNA]  # lapse timer: +1 s slack
    # Two referrals a day apart: thanked once (7-day cooldown).
    assert [t for t in by[ERIK] if t[1] == "referral_thanks"] == [(ERIK, "referral_thanks", None, day(5))]
    # Ben unsubscribed: only the onsite survey request, no email campaign at all.
    assert [t[1] for t in by[BEN]] == ["survey_request"]
    assert not [t for t in by[CARL] if t[1] == "upsell_advanced"]
    assert not [t for t in by.get(ERIK, []) if t[1] == "survey_request"]
    metrics = worker.metrics()
    assert 'clv_campaign_triggers_total{status="consent",trigger="onboarding"} 4.0' in metrics
    assert 'clv_campaign_triggers_total{status="cooldown",trigger="referral_thanks"} 1.0' in metrics
    assert ANNA not in metrics and BEN not in metrics


async def committed_everything(bootstrap: str, group: str, ends: dict[tuple[str, int], int], timeout_s: float = 30.0) -> None:
    """Wait until the worker's group has committed every input offset we produced. (A
    consumer that never subscribes only reads the group's offsets; it does not join.)"""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        done: dict[tuple[str, int], int | None] = {}
        while time.monotonic() < deadline:
            done = {tp: await consumer.committed(TopicPartition(*tp)) for tp in ends}
            if all((done[tp] or -1) >= end for tp, end in ends.items()):
                return
            await asyncio.sleep(0.3)
        raise TimeoutError(f"offsets not committed: {ends} vs {done}")
    finally:
        await consumer.stop()


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_killed_while_a_timer_waits_neither_loses_nor_doubles(make_worker, broker: str, tmp_path: Path, store: str) -> None:
    env = worker_env(partitions=PARTITIONS, STORE=store, DATA_DIR=str(tmp_path / "data"))
    first = make_worker(env)
    topics = {**first.topics, "campaign-triggers": env["TOPIC_TRIGGERS"]}
    before = [order(ANNA, 0, "A1"), order(CLOCK0, 2, "K1")]  # onboarding step 2 waits for day 3
    after = [order(CLOCK0, 20, "K2")]  # passes steps 2, 3 and 4 (days 3, 7, 14) and the survey (14)
    async with Kafka(broker, [topics["customer-scores"], topics["campaign-triggers"]]) as kafka:
        sent = await publish_in_order(kafka, topics, before)
        ends: dict[tuple[str, int], int] = {}
        for record in sent:
            ends[(record.topic, record.partition)] = max(ends.get((record.topic, record.partition), 0), record.offset + 1)
        await committed_everything(broker, env["STREAMER_APP_ID"], ends)
        first.stop(kill=True)  # SIGKILL while anna's step-2 timer waits

        make_worker(env)
        sent += await publish_in_order(kafka, topics, after)
        await kafka.settle(quiet_s=2.0)
        outputs = list(kafka.outputs)
    assert_waiting_steps_fired_once(outputs, sent, topics, tmp_path)


async def test_wall_clock_fires_a_trigger_with_no_event(make_worker, broker: str, tmp_path: Path) -> None:
    rules_path = tmp_path / "rules.toml"
    step_s = 6.0
    rules_path.write_text(f"[triggers.onboarding]\nsteps_days = [0.0, {step_s / DAY!r}]\n")
    env = worker_env(partitions=PARTITIONS, CLOCK="wall", CLOCK_TICK_SECONDS="0.2", STORE="rocksdb", DATA_DIR=str(tmp_path / "data"), STREAMER_CONFIG=str(rules_path))
    worker = make_worker(env)
    topics = {**worker.topics, "campaign-triggers": env["TOPIC_TRIGGERS"]}
    ordered_at = round(time.time(), 3)
    async with Kafka(broker, [topics["campaign-triggers"]]) as kafka:
        data = {"order_id": "W1", "total": 50.0, "currency": "USD", "margin": 20.0, "products": [{"product_id": "p", "price": 50.0, "quantity": 1, "tier": "basic"}]}
        await kafka.send(topics["orders"], "orders", ANNA.encode(), cloudevent("ev-W1", "Order Completed", iso(ordered_at), ANNA, data))
        first = await kafka.wait_for(lambda o: o.doc["data"].get("step") == 1, timeout_s=30)
        second = await kafka.wait_for(lambda o: o.doc["data"].get("step") == 2, timeout_s=30)
        arrived = time.time()
    assert first.doc["data"]["at"] == iso(ordered_at)
    assert second.doc["data"]["at"] == iso(ordered_at + step_s)
    # No other event was sent: the wall clock fired it, on time (tick 0.2 s, plus producing).
    assert ordered_at + step_s <= arrived < ordered_at + step_s + 5.0
    assert 'clv_timers_fired_total 1.0' in worker.metrics()


async def test_a_timer_moves_with_its_partition_when_the_owner_is_killed(make_worker, broker: str, tmp_path: Path) -> None:
    """Two workers; the one that owns anna's partition is SIGKILLed while her onboarding step
    waits. The survivor takes the partition over, rebuilds its due-queue from the recovered
    table, and fires every step once, at its moment — the same triggers as the pure core."""
    env = worker_env(partitions=PARTITIONS, STORE="rocksdb", DATA_DIR=str(tmp_path / "data"))
    workers = [make_worker({**env, "DATA_DIR": str(tmp_path / f"data{n}")}) for n in range(2)]
    topics = {**workers[0].topics, "campaign-triggers": env["TOPIC_TRIGGERS"]}
    before = [order(ANNA, 0, "A1"), order(CLOCK0, 2, "K1")]
    after = [order(CLOCK0, 20, "K2")]
    anna_partition = partition_of(ANNA, PARTITIONS)
    async with Kafka(broker, [topics["customer-scores"], topics["campaign-triggers"]]) as kafka:
        sent = await publish_in_order(kafka, topics, before)
        owners = [w for w in workers if anna_partition in partitions_seen(w)]
        assert len(owners) == 1, f"partition {anna_partition} seen on {len(owners)} workers"
        owner, survivor = owners[0], next(w for w in workers if w is not owners[0])
        ends: dict[tuple[str, int], int] = {}
        for record in sent:
            ends[(record.topic, record.partition)] = max(ends.get((record.topic, record.partition), 0), record.offset + 1)
        await committed_everything(broker, env["STREAMER_APP_ID"], ends)
        owner.stop(kill=True)  # SIGKILL while anna's step-2 timer waits
        # Scored only once the survivor has taken the partition over (session timeout 6 s,
        # then recovery); publish_in_order waits up to 60 s for it.
        sent += await publish_in_order(kafka, topics, after)
        await kafka.settle(quiet_s=2.0)
        outputs = list(kafka.outputs)
    assert anna_partition in partitions_seen(survivor)
    assert_waiting_steps_fired_once(outputs, sent, topics, tmp_path)


def assert_waiting_steps_fired_once(outputs, sent: list[Record], topics: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Anna's onboarding steps and survey request, each once at its moment, and every trigger
    equal to the pure core's over the same records (default rules)."""
    actual = [t for t in triggers_of(outputs, topics["campaign-triggers"]) if t[0] == ANNA]
    day = lambda d: iso(T0 + d * DAY)  # noqa: E731
    assert actual == [
        (ANNA, "onboarding", 1, day(0)),
        (ANNA, "onboarding", 2, day(3)),
        (ANNA, "onboarding", 3, day(7)),
        (ANNA, "onboarding", 4, day(14)),
        (ANNA, "survey_request", None, day(14)),
    ]
    rules_path = tmp_path / "defaults.toml"
    rules_path.write_text("")
    assert triggers_of(outputs, topics["campaign-triggers"]) == core_replay(sent, rules_path, topics)

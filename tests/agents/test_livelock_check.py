"""Faust's livelock check must not crash the worker on a partition waiting for an offset reset.

Every 2.5 commit intervals outside a rebalance, Faust reads the position of each assigned
partition that has been fetched, and aiokafka asserts a position is there. A partition whose
position is being reset (a never-committed one put back at its beginning by the seek to the
committed offsets, which Faust's fetch loop also runs on its own after recovery's) has none
until the broker answers. Seen once in CI: the check landed 10 ms after "Worker ready", the
consumer crashed on ``AssertionError`` and took the worker down. These tests run the check on
aiokafka's own partition states.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from streamer.shell import recovery

FETCHED, RESETTING = TP("orders", 0), TP("orders", 1)


def partition_state(subscriptions: SubscriptionState, tp: TP) -> Any:
    """aiokafka's state of ``tp`` in the subscription's assignment."""
    return subscriptions.subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))


def consumer_thread() -> tuple[recovery.StreamerConsumerThread, SubscriptionState]:
    """Our consumer thread, not started, over a real aiokafka subscription of two partitions
    that have both been fetched; RESETTING then waits for a reset to the earliest offset."""
    subscriptions = SubscriptionState()
    subscriptions.assign_from_user({TopicPartition(tp.topic, tp.partition) for tp in (FETCHED, RESETTING)})
    for tp in (FETCHED, RESETTING):
        state = partition_state(subscriptions, tp)
        state.seek(5)
        state.highwater = 10
        state.timestamp = time.time() * 1000  # a fetch answered just now
    partition_state(subscriptions, RESETTING).await_reset(OffsetResetStrategy.EARLIEST)
    thread = recovery.StreamerConsumerThread.__new__(recovery.StreamerConsumerThread)
    thread._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))
    thread.consumer = SimpleNamespace(app=SimpleNamespace(monitor=SimpleNamespace(stream_inbound_time={}), topics=SimpleNamespace(acks_enabled_for=lambda topic: True)))
    thread.time_started = time.monotonic()
    thread.tp_fetch_request_timeout_secs = thread.tp_stream_timeout_secs = 300.0
    return thread, subscriptions


@pytest.fixture
def handed_to_faust(monkeypatch: pytest.MonkeyPatch) -> list[TP]:
    """The partitions our check hands to Faust's, which still runs on them."""
    handed: list[TP] = []
    faust_check = aiokafka_driver.AIOKafkaConsumerThread.verify_event_path

    def spy(self: object, now: float, tp: TP) -> None:
        handed.append(tp)
        return faust_check(self, now, tp)

    monkeypatch.setattr(aiokafka_driver.AIOKafkaConsumerThread, "verify_event_path", spy)
    return handed


async def test_faust_check_asserts_on_a_partition_waiting_for_its_reset() -> None:
    # The crash as it happens with Faust's check alone.
    thread, _ = consumer_thread()
    with pytest.raises(AssertionError):
        aiokafka_driver.AIOKafkaConsumerThread.verify_event_path(thread, time.monotonic(), RESETTING)


async def test_partition_waiting_for_its_reset_is_skipped_and_the_others_checked(handed_to_faust: list[TP]) -> None:
    thread, _ = consumer_thread()
    now = time.monotonic()
    thread.verify_event_path(now, RESETTING)  # no AssertionError
    thread.verify_event_path(now, FETCHED)
    assert handed_to_faust == [FETCHED]


async def test_partition_is_checked_again_once_its_reset_is_done(handed_to_faust: list[TP]) -> None:
    thread, subscriptions = consumer_thread()
    partition_state(subscriptions, RESETTING).reset_to(0)
    thread.verify_event_path(time.monotonic(), RESETTING)
    assert handed_to_faust == [RESETTING]


async def test_partition_never_fetched_is_left_to_faust(handed_to_faust: list[TP]) -> None:
    # Faust's check returns before the position for a partition no fetch has answered yet
    # (and logs if none went out for too long): nothing to skip there.
    thread, subscriptions = consumer_thread()
    partition_state(subscriptions, RESETTING).timestamp = None
    thread.verify_event_path(time.monotonic(), RESETTING)  # Faust's own check, no AssertionError
    assert handed_to_faust == [RESETTING]


async def test_without_a_client_or_an_assignment_faust_check_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[TP] = []  # recorded only: Faust's own check needs a client and a subscription
    monkeypatch.setattr(aiokafka_driver.AIOKafkaConsumerThread, "verify_event_path", lambda self, now, tp: checked.append(tp))
    thread, _ = consumer_thread()
    thread._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=SubscriptionState()))  # nothing subscribed yet
    thread.verify_event_path(time.monotonic(), RESETTING)
    thread._consumer = None
    thread.verify_event_path(time.monotonic(), RESETTING)
    assert checked == [RESETTING, RESETTING]

"""Fixtures for the Faust agent tests: no broker, agents driven through ``agent.test_context()``.

The shell reads its settings when :mod:`streamer.shell.app` is first imported, so the
environment is set here, before that import, and restored right after (the settings object
is already built by then), so nothing leaks into other test packages.

How faust's test context behaves, read from faust-streaming 0.15.3's source:

* ``agent.test_context()`` clones the agent onto an in-memory channel; ``put()`` builds a
  ``Message`` whose topic is the agent's real topic name, partition 0 (or the one given),
  offset counting from 0 per context, so the shell sees an ordinary event.
* State changes wait in ``tables.store`` until a write-back, which these tests run only
  where they test it (with the producer's calls replaced); outputs go to ``app.producer.send``,
  which the ``sends`` fixture replaces — nothing talks to Kafka.
* For an agent that does not yield, ``put(wait=True)`` returns once the stream has handed
  the value to the agent, not once the agent has finished with it; ``feed`` below waits for
  the shell's ``handle`` to return instead, so tests never depend on scheduling order.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Callable
from unittest.mock import MagicMock

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TEST_ENV = {
    # Loopback port 1: nothing listens there, and nothing here ever connects anyway.
    "KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "STREAMER_APP_ID": "clv-streamer-agent-tests",
    "PARTITIONS": "1",
    "OUTPUT_PARTITIONS": "1",
    "STORE": "memory",
    "REPORTING_CURRENCY": "USD",
    "FX_RATES": "EUR=1.1",
    "VALUE_TIER_MIN_POPULATION": "1",
    "TOPIC_ORDERS": "orders",
    "TOPIC_EMAIL": "email-events",
    "TOPIC_COMMUNITY": "community-events",
    "TOPIC_SCORES": "customer-scores",
    "TOPIC_SEGMENTS": "segment-changes",
    "TOPIC_DEAD_LETTER": "dead-letter",
}


def _import_shell() -> None:
    saved = {name: os.environ.get(name) for name in TEST_ENV}
    os.environ.update(TEST_ENV)
    try:
        import streamer.shell.agents  # noqa: F401
        import streamer.shell.web  # noqa: F401
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_import_shell()

from streamer.shell import agents, channels, tables  # noqa: E402

if agents.settings.kafka_bootstrap != TEST_ENV["KAFKA_BOOTSTRAP"]:  # pragma: no cover
    raise RuntimeError("streamer.shell was imported before tests/agents/conftest.py could configure it")


@pytest.fixture(autouse=True)
def clean_shell() -> Any:
    """Every test starts with an empty state table and fresh partition clocks/rankings."""
    tables.customers.data.clear()
    tables.store.pending.clear()
    agents.engine.partitions.clear()
    yield
    tables.customers.data.clear()
    tables.store.pending.clear()
    agents.engine.partitions.clear()


class Deliveries(MagicMock):
    """One output role's captured sends: called as ``mock(key=..., value=...)`` per record, with
    the delivery future each send returned in ``deliveries`` (resolve one to play the broker's
    acknowledgement)."""


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> dict[str, MagicMock]:
    """Capture what the agents produce: output role -> a mock of the sends to that topic.

    The shell queues outputs straight on the producer (``app.producer.send``), which here
    records them and returns a delivery future nobody resolves unless a test does.
    """
    mocks: dict[str, MagicMock] = {}
    role_of = {}
    for role, topic in channels.outputs.items():
        mocks[role] = Deliveries(name=f"send[{role}]")
        mocks[role].deliveries = []
        role_of[topic.get_topic_name()] = role

    async def send(topic: str, key: bytes | None, value: bytes | None, partition: Any, timestamp: Any, headers: Any) -> asyncio.Future:
        assert partition is None, "outputs are partitioned by key"
        mock = mocks[role_of[topic]]
        mock(key=key, value=value)
        delivery = asyncio.get_running_loop().create_future()
        mock.deliveries.append(delivery)
        return delivery

    monkeypatch.setattr(agents.app.producer, "send", send)
    return mocks


class Handled:
    """Records every ``handle`` return value so tests can wait for the agent to finish a record."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.changed = asyncio.Event()

    def wrap(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        async def recording_handle(role: str, event: Any, *args: Any) -> Any:
            result = await handle(role, event, *args)
            self.results.append(result)
            self.changed.set()
            return result

        return recording_handle

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while len(self.results) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout)


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> Handled:
    recorder = Handled()
    # The agents look ``handle`` up in their module at call time, so wrapping it here wraps
    # what every agent runs, without touching the shell's code.
    monkeypatch.setattr(agents, "handle", recorder.wrap(agents.handle))
    return recorder


@pytest.fixture
def feed(handled: Handled) -> Callable[..., Any]:
    """``await feed(agent_ctx, value, key=...)``: put one record, wait until it is fully handled."""

    async def _feed(agent: Any, value: bytes | None, key: bytes | None = None, **kwargs: Any) -> Any:
        before = len(handled.results)
        await agent.put(value, key=key, **kwargs)
        await handled.wait_for(before + 1)
        return handled.results[before]

    return _feed

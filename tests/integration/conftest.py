"""Fixtures that run the real thing: the embedded Kafka-protocol broker (Tansu) and
``streamer worker`` processes talking to it over the Kafka protocol."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamer.broker import EmbeddedBroker, free_port, stop_process


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker for the whole session: ``KAFKA_BOOTSTRAP`` if set, else embedded Tansu."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as embedded:
        yield embedded.bootstrap


@dataclass
class Worker:
    """A ``streamer worker`` child process with its own app id and topic names."""

    bootstrap: str
    env: dict[str, str]
    workdir: Path
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def topics(self) -> dict[str, str]:
        keys = {
            "orders": "TOPIC_ORDERS",
            "email-events": "TOPIC_EMAIL",
            "community-events": "TOPIC_COMMUNITY",
            "erasure-requests": "TOPIC_ERASURE",
            "audit": "TOPIC_AUDIT",
            "customer-scores": "TOPIC_SCORES",
            "segment-changes": "TOPIC_SEGMENTS",
            "campaign-triggers": "TOPIC_TRIGGERS",
            "dead-letter": "TOPIC_DEAD_LETTER",
            "model-state": "TOPIC_MODELS",
        }
        return {role: self.env[var] for role, var in keys.items()}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    def start(self, timeout_s: float = 60.0) -> "Worker":
        env = {**os.environ, **self.env, "KAFKA_BOOTSTRAP": self.bootstrap, "WEB_PORT": str(self.web_port)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamer", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout_s}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self, kill: bool = False) -> None:
        stop_process(self.process, timeout_s=20, kill=kill)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def worker_env(partitions: int = 2, **extra: str) -> dict[str, str]:
    """Unique app id and topic names, so tests sharing the broker never see each other."""
    run = uuid.uuid4().hex[:8]
    env = {
        "STREAMER_APP_ID": f"it-{run}",
        "TOPIC_ORDERS": f"orders-{run}",
        "TOPIC_EMAIL": f"email-events-{run}",
        "TOPIC_COMMUNITY": f"community-events-{run}",
        "TOPIC_ERASURE": f"erasure-requests-{run}",
        "TOPIC_AUDIT": f"audit-{run}",
        "TOPIC_SCORES": f"customer-scores-{run}",
        "TOPIC_SEGMENTS": f"segment-changes-{run}",
        "TOPIC_TRIGGERS": f"campaign-triggers-{run}",
        "TOPIC_DEAD_LETTER": f"dead-letter-{run}",
        "TOPIC_MODELS": f"model-state-{run}",
        "PARTITIONS": str(partitions),
        "OUTPUT_PARTITIONS": str(partitions),
        "LOG_LEVEL": "info",
        # The embedded broker holds a group join for about half the session timeout; a
        # shorter one makes workers ready in ~4 s and lets a killed worker's partitions move
        # sooner. Production keeps the default (10 s), which tolerates longer pauses.
        "CONSUMER_SESSION_TIMEOUT": "6",
    }
    env.update(extra)
    return env


@pytest.fixture
def make_worker(broker: str, tmp_path: Path) -> Iterator[object]:
    """Factory: ``make_worker(env)`` starts a worker; all are stopped at teardown."""
    started: list[Worker] = []

    def factory(env: dict[str, str], start: bool = True) -> Worker:
        worker = Worker(broker, env, tmp_path / f"w{len(started)}")
        worker.workdir.mkdir(parents=True, exist_ok=True)
        started.append(worker)
        return worker.start() if start else worker

    yield factory
    for worker in started:
        worker.stop()

"""One ``streamer worker`` child process: default settings, its own app id and topic names, the
fast group join of the integration tests; readiness time, resident memory, /metrics."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streamer.broker import free_port, stop_process
from streamer.settings import SETTINGS_DOC

#: Topic role -> the variable naming it.
TOPIC_VARS = {
    "orders": "TOPIC_ORDERS",
    "email-events": "TOPIC_EMAIL",
    "community-events": "TOPIC_COMMUNITY",
    "customer-scores": "TOPIC_SCORES",
    "segment-changes": "TOPIC_SEGMENTS",
    "campaign-triggers": "TOPIC_TRIGGERS",
    "dead-letter": "TOPIC_DEAD_LETTER",
    "model-state": "TOPIC_MODELS",
}


def topic_names(run_id: str) -> dict[str, str]:
    return {role: f"bench-{run_id}-{role}" for role in TOPIC_VARS}


def worker_env(
    run_id: str, bootstrap: str, web_port: int, data_dir: Path, store: str = "memory", settings: dict[str, str] | None = None
) -> dict[str, str]:
    """The worker's environment: every setting at its default (any set in our own
    environment is dropped), except unique names, the broker, the port, the state store
    (``--store``), the 6 s session timeout tests/integration/conftest.py uses for a fast
    group join on the embedded broker, and the ``settings`` given (``--set NAME=VALUE``)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_DOC}
    env.update({var: topic_names(run_id)[role] for role, var in TOPIC_VARS.items()})
    env.update(
        {
            "STREAMER_APP_ID": f"bench-{run_id}",
            "KAFKA_BOOTSTRAP": bootstrap,
            "WEB_PORT": str(web_port),
            "DATA_DIR": str(data_dir),
            "STORE": store,
            "CONSUMER_SESSION_TIMEOUT": "6",
        }
    )
    env.update(settings or {})
    return env


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerProcess:
    def __init__(self, run_id: str, bootstrap: str, workdir: Path, store: str = "memory", settings: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.web_port = free_port()
        self.env = worker_env(run_id, bootstrap, self.web_port, workdir / "data", store, settings)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamer", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited with {self.process.returncode}; log {self.log_path}:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds from process start to the first /readyz 200 (polled every 50 ms)."""
        while time.monotonic() - self.started_at < timeout_s:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started_at
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"worker not ready in {timeout_s}s; log {self.log_path}:\n{self.log_tail()}")

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """Sum of a metric's samples on /metrics with these label values (None if absent)."""
        text = self.metrics_text()
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        values = [
            float(m.group(2))
            for m in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.MULTILINE)
            if all(w in (m.group(1) or "") for w in wanted)
        ]
        return sum(values) if values else None

    def histogram(self, name: str, **labels: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts on /metrics: upper bound (s) -> count (of the
        series with these label values, which come before ``le`` as prometheus_client writes them)."""
        before = "".join(f'{k}="{v}",' for k, v in labels.items())
        pattern = rf'^{re.escape(name)}_bucket{{{re.escape(before)}le="([^"]+)"}} (\S+)$'
        return {float(m.group(1)): float(m.group(2)) for m in re.finditer(pattern, self.metrics_text(), re.MULTILINE)}

    def stop(self) -> None:
        stop_process(self.process, timeout_s=20)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

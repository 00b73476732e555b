"""The command line's own processes: ``streamer broker`` stops its broker on SIGTERM (systemd,
``docker stop``, ``timeout``), not only on Ctrl-C; ``streamer demo`` refuses bad arguments
before it starts anything."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from streamer.broker import free_port

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_broker_command_stops_its_broker_on_a_signal(signum: int) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "streamer", "broker", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "embedded broker on" in process.stdout.readline()
        assert listening(port)
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening(port), "the broker still runs after its command ended"
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("argument", "said"),
    [(["--customers", "-1"], "--customers -1"), (["--speed", "0"], "--speed 0.0"), (["--duration", "-5"], "--duration -5.0")],
)
def test_the_demo_refuses_bad_arguments_before_starting_anything(argument: list[str], said: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streamer", "demo", "--no-view", *argument], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "embedded broker" not in done.stdout  # nothing was started


def test_the_broker_command_on_a_port_taken_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "streamer", "broker", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("streamer broker: "), done.stderr
    assert "Traceback" not in done.stderr

    done = subprocess.run([sys.executable, "-m", "streamer", "broker", "--port", "99999"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "cannot listen on 127.0.0.1:99999" in done.stderr and "Traceback" not in done.stderr, done.stderr

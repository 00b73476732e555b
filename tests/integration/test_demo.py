"""`make demo`'s command on a fresh environment (no KAFKA_BOOTSTRAP): it starts the embedded
broker, a worker and the simulated shop, shows segment changes, serves the dashboard at the
address it prints, and exits 0 after --duration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_the_demo_runs_and_serves_its_dashboard() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamer", "demo", "--customers", "300", "--duration", "20", "--no-view"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    summary = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if (found := re.search(r"dashboard (http://127\.0\.0\.1:\d+/dashboard)", line)) is not None:
                base = found.group(1).removesuffix("/dashboard")
                deadline = time.monotonic() + 60
                while summary is None and time.monotonic() < deadline:
                    try:
                        with urllib.request.urlopen(f"{base}/api/summary", timeout=5) as response:
                            body = json.loads(response.read())
                        if body["summary"]["customers"] > 0:
                            summary = body
                            with urllib.request.urlopen(f"{base}/dashboard", timeout=5) as page:
                                assert page.status == 200 and b"clv-streamer" in page.read()
                    except OSError:
                        pass
                    time.sleep(0.5)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    assert returncode == 0, output + (process.stderr.read() if process.stderr else "")
    assert re.search(r"embedded broker \(Tansu\) on 127\.0\.0\.1:\d+", output)
    assert summary is not None, "the dashboard's data never showed a customer"
    last = [line for line in lines if line.startswith("sim ")][-1]
    changes = int(re.search(r"segment_changes=(\d+)", last).group(1))
    assert changes > 0 and re.search(r"lifecycle\[.*\bnew=\d+", last), last
    assert "first segment change seen" in output

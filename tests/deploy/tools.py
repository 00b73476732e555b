"""System tools the deploy and Prometheus tests need: prometheus and promtool (Debian package
``prometheus``, installed by ``tests/install-system-tools``).

A missing tool FAILS the test instead of skipping it, on purpose: CI installs the tools, so
a skip would hide that the alert rules or the Prometheus round trip were never checked.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

INSTALL_HINT = "run tests/install-system-tools (Debian: apt-get install -y --no-install-recommends prometheus)"


def require_tool(name: str) -> str:
    """The tool's path; fails the calling test (never skips) when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: {INSTALL_HINT}", pytrace=False)
    return path


def run_tool(name: str, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a required tool; fails the test with its output when it exits non-zero."""
    result = subprocess.run([require_tool(name), *args], capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        pytest.fail(f"{name} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return result

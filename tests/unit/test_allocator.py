"""The worker's allocator setting: free heap is given back to the system (glibc)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from streamer.shell import allocator

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")

# Frees an 8 MiB block glibc had mapped on its own (by default that raises its trim threshold
# to 16 MiB), then takes and frees 12 MiB of heap; prints how much of it stayed resident.
PROBE = """
import ctypes, sys
from streamer.shell import allocator
if sys.argv[1] == "fixed":
    assert allocator.fix_trim_threshold()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
MiB = 2**20
big = libc.malloc(8 * MiB); ctypes.memset(big, 1, 8 * MiB); libc.free(big)
before = rss()
blocks = [libc.malloc(MiB) for _ in range(12)]
for block in blocks:
    ctypes.memset(block, 1, MiB)
for block in reversed(blocks):
    libc.free(block)
print((rss() - before) / MiB)
"""


def kept_mib(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout)


@glibc_only
def test_a_fixed_trim_threshold_gives_freed_heap_back() -> None:
    assert kept_mib("default") >= 8  # glibc's own rising threshold keeps the freed heap
    assert kept_mib("fixed") <= 1


@glibc_only
def test_settings_from_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert allocator.fix_trim_threshold() is False


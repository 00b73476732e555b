"""bench.quix's plumbing without a broker: a Quix Streams run that fails says so, with its log.
(The runs themselves are in test_bench_smoke.py, on the embedded broker.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quix import run_quix


async def test_a_failed_run_raises_and_keeps_its_log(tmp_path: Path) -> None:
    log = tmp_path / "quix.log"
    with pytest.raises(RuntimeError, match=r"\(nonsense\) failed with exit code 2"):
        await run_quix("127.0.0.1:1", {"some-topic": "orders"}, "out", 1, work="nonsense", log_path=log)
    assert "invalid choice: 'nonsense'" in log.read_text()

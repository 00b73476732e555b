"""`make bench-compiled` end to end on a tiny replay: the core's modules still compile with
mypyc (they stay type-correct), and compiled they give the plain modules' outputs byte for byte.
Structure and equality only, never speed."""

from __future__ import annotations

import pytest

from bench import compiled_core

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_the_compiled_core_gives_the_same_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert compiled_core.main(["--customers", "300", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "outputs identical: yes" in out
    assert "   plain run 1:" in out and "compiled run 1:" in out

"""Progress lines on stderr, stamped with the time since the bench started."""

from __future__ import annotations

import sys
import time

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[bench +{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)

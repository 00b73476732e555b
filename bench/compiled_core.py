"""The pure core, compiled by mypyc and not: the same replay, events/s and outputs compared.

    python -m bench.compiled_core [--customers 5000] [--repeat 2]      (make bench-compiled)

A measurement of a possible next step, not the product: the project is not changed and the
worker does not use it. The script copies ``streamer/`` to a scratch folder, installs mypy
there from PyPI (it is no dependency of the project), compiles the core's modules with mypyc,
then replays the bench's workload through ``Engine.process`` with the plain and the compiled
modules in turn, each in a fresh process. It prints events/s and the SHA-256 of every output
record; it exits with 1 if the outputs differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The modules the core's data path runs through (decode -> state -> features -> scores ->
#: explanations -> segments -> triggers -> outputs). btyd.py (numpy, scipy) stays plain.
MODULES = [
    "streamer/core/events.py",
    "streamer/core/state.py",
    "streamer/core/features.py",
    "streamer/core/scoring.py",
    "streamer/core/explain.py",
    "streamer/core/segments.py",
    "streamer/core/families.py",
    "streamer/core/triggers.py",
    "streamer/core/outputs.py",
    "streamer/core/engine.py",
    "streamer/models/scorer.py",
    "streamer/models/online.py",
    "streamer/models/learned.py",
]

#: Run in a child process: replay the workload, print one JSON line.
REPLAY = """
import hashlib, json, sys, time, zlib
from bench.load import generate
from streamer.core import features
from streamer.core.engine import DictStore, Engine, Record
workload = generate(int(sys.argv[1]), 28, 21)
records = [Record(role, role, zlib.crc32(key) % 8, i, key, value) for i, (role, key, value) in enumerate(workload.main)]
engine, store, digest, outputs = Engine(), DictStore(), hashlib.sha256(), 0
started = time.perf_counter()
for record in records:
    for out in engine.process(record, store).outgoing:
        outputs += 1
        digest.update(out.key)
        digest.update(out.value or b"")
seconds = time.perf_counter() - started
print(json.dumps({"events": len(records), "seconds": seconds, "outputs": outputs, "sha256": digest.hexdigest(),
                  "compiled": not features.__file__.endswith(".py")}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compiled_core", description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=5000, help="simulated customers replayed (default 5,000)")
    p.add_argument("--repeat", type=int, default=2, help="replays of each kind, alternating (default 2)")
    return p.parse_args(argv)


def compile_copy(scratch: Path) -> None:
    """``streamer/`` copied to ``scratch`` and its core modules compiled there."""
    shutil.copytree(ROOT / "streamer", scratch / "streamer", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    # A virtualenv of its own, of the same Python, with mypy only: with the project's packages
    # in sight mypy type-checks numpy, scipy and river too (~7 min here) and stops at their
    # stubs' complaints about btyd.py; without them those imports are Any (~1 min).
    tools = scratch / "_mypyc-venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(tools)], check=True)
    python = str(tools / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "mypy", "setuptools"], check=True)
    built = subprocess.run(
        [python, "-m", "mypyc", "--ignore-missing-imports", *MODULES], cwd=scratch, capture_output=True, text=True
    )
    if built.returncode != 0:
        raise SystemExit("mypyc failed:\n" + "\n".join(line for line in built.stdout.splitlines() if "error" in line))


def replay(source: Path, customers: int) -> dict:
    """One replay in a fresh process, with ``streamer`` imported from ``source``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", REPLAY, str(customers)], cwd=source, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clv-compiled-") as tmp:
        scratch = Path(tmp)
        print("compiling the core with mypyc in a scratch copy ...", flush=True)
        compile_copy(scratch)
        runs: dict[str, list[dict]] = {"plain": [], "compiled": []}
        for i in range(args.repeat):
            for kind, source in (("plain", ROOT), ("compiled", scratch)):
                run = replay(source, args.customers)
                if run["compiled"] != (kind == "compiled"):
                    raise SystemExit(f"the {kind} replay imported the wrong modules")
                runs[kind].append(run)
                rate = run["events"] / run["seconds"]
                print(f"{kind:>8} run {i + 1}: {run['events']:,} events in {run['seconds']:.2f} s, {rate:,.0f} events/s, "
                      f"{run['outputs']:,} outputs, sha256 {run['sha256'][:16]}", flush=True)
    rates = {kind: [r["events"] / r["seconds"] for r in rs] for kind, rs in runs.items()}
    ratio = statistics.median(rates["compiled"]) / statistics.median(rates["plain"])
    same = len({r["sha256"] for rs in runs.values() for r in rs}) == 1
    print(f"compiled / plain (medians): {ratio:.2f}; outputs identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

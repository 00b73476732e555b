"""The ``streamer`` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def _cmd_worker(args: argparse.Namespace) -> int:
    from streamer.shell import worker

    worker.run()
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from streamer.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port).start()
    stopping = {signal.SIGINT, signal.SIGTERM}
    try:
        # Blocked first (after the broker started: a child inherits the mask, and before the
        # line a supervisor may react to), so sigwait receives them: an unblocked SIGTERM
        # (systemd, docker stop, timeout) ended this process at once, the broker left running.
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        print(f"embedded broker on {broker.bootstrap}  (export KAFKA_BOOTSTRAP={broker.bootstrap}); Ctrl-C stops it", flush=True)
        signal.sigwait(stopping)
    finally:
        broker.stop()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streamer.demo import run_demo

    # Checked before anything starts (a broker, a worker in its own session).
    if args.customers < 1:
        return _usage(f"--customers {args.customers}: at least 1", "demo")
    if not args.speed > 0:
        return _usage(f"--speed {args.speed}: simulated days per second, above 0", "demo")
    if args.duration < 0:
        return _usage(f"--duration {args.duration}: seconds, 0 (until Ctrl-C) or more", "demo")

    return run_demo(
        customers=args.customers,
        days_per_second=args.speed,
        duration_s=args.duration,
        view=not args.no_view,
        seed=args.seed,
    )


def _usage(problem: str, command: str = "evaluate") -> int:
    """A usage error of `streamer evaluate` (or ``command``): one line, exit status 2 (as
    replay and config)."""
    print(f"streamer {command}: {problem}", file=sys.stderr)
    return 2


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from datetime import date
    from pathlib import Path

    from streamer.evaluate import evaluate, evaluate_simulated

    if args.simulated:
        if args.file:
            return _usage("give either a CDNOW file or --simulated, not both")
        if args.customers < 2:
            return _usage(f"--customers {args.customers}: at least 2")
        try:
            report = evaluate_simulated(
                customers=args.customers,
                seed=args.seed,
                calibration_days=args.calibration_days,
                holdout_days=args.holdout_days,
                learn_horizon_days=args.learn_horizon_days,
                progress=not args.quiet,
                out_dir=Path(args.out) if args.out else None,
            )
        except ValueError as exc:  # e.g. no customer churned, or none stayed, at this size
            print(f"streamer evaluate: {exc}", file=sys.stderr)
            return 1
        print("\n".join(report.lines()))
        if args.out:
            print(f"per-customer predictions and metrics written to {args.out}/")
        return 0
    if not args.file:
        return _usage("a CDNOW file (or --simulated) is required")
    if not Path(args.file).is_file():
        return _usage(f"no file {args.file}")
    try:
        calibration_end, holdout_end = date.fromisoformat(args.calibration_end), date.fromisoformat(args.holdout_end)
    except ValueError as exc:
        return _usage(f"--calibration-end / --holdout-end must be dates like 1997-09-30 ({exc})")
    if holdout_end <= calibration_end:
        return _usage(f"--holdout-end ({holdout_end}) must come after --calibration-end ({calibration_end})")
    try:
        report = evaluate(
            Path(args.file),
            calibration_end=calibration_end,
            holdout_end=holdout_end,
            margin_rate=args.margin_rate,
            out_dir=Path(args.out) if args.out else None,
            progress=not args.quiet,
        )
    except ValueError as exc:  # a file that is no CDNOW log, or no customer on one side of the cut
        print(f"streamer evaluate: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    if args.out:
        print(f"per-customer predictions and metrics written to {args.out}/")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from streamer.replay import run_cli

    return run_cli(args)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from streamer import rules
    from streamer.errors import ConfigError

    try:
        config = rules.load(args.file)
    except ConfigError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    print(f"✓ {args.file} is valid")
    print("\n".join(f"  {line}" for line in rules.describe(config)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer", description="Real-time customer lifetime value and segments from Kafka events.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a worker (needs KAFKA_BOOTSTRAP)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu) in the foreground")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.set_defaults(func=_cmd_broker)

    p = sub.add_parser("demo", help="broker (unless KAFKA_BOOTSTRAP) + worker + shop simulator + live view")
    p.add_argument("--customers", type=int, default=1500, help="simulated customers (default 1500)")
    p.add_argument("--speed", type=float, default=2.0, help="simulated days per real second (default 2)")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-view", action="store_true", help="print a summary line per second instead of the live view")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "evaluate",
        help="replay a CDNOW-format history (or a simulated shop: --simulated), predict the holdout, report metrics",
    )
    p.add_argument("file", nargs="?", help="transaction log in CDNOW format (e.g. tests/data/CDNOW_sample.txt)")
    p.add_argument("--calibration-end", default="1997-09-30", help="last day of calibration (default 1997-09-30)")
    p.add_argument("--holdout-end", default="1998-06-30", help="last day of the holdout (default 1998-06-30)")
    p.add_argument("--margin-rate", type=float, default=1.0, help="margin as a share of revenue (CDNOW has none)")
    p.add_argument("--out", default=None, help="folder for predictions.csv and metrics.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    sim = p.add_argument_group("simulated shop (truth known): BTYD alone vs with the online learners")
    sim.add_argument("--simulated", action="store_true", help="evaluate on the shop simulator instead of a file")
    sim.add_argument("--customers", type=int, default=1500, help="simulated customers (default 1500)")
    sim.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    sim.add_argument("--calibration-days", type=float, default=270.0, help="calibration period (default 270)")
    sim.add_argument("--holdout-days", type=float, default=180.0, help="holdout period (default 180)")
    sim.add_argument("--learn-horizon-days", type=float, default=75.0, help="online learners' label horizon (default 75)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "replay",
        help="load historical orders (CSV, JSON lines, CDNOW) into the orders topic in event-time order",
        description="Each row becomes an Order Completed event keyed by its customer, sent to TOPIC_ORDERS at KAFKA_BOOTSTRAP. "
        "The file is read and sorted by event time in memory (it must fit). Event ids hash the row's content, so a second "
        "replay of the same file is de-duplicated by the worker; without an order-id column the order id is derived the same "
        "way. Rows that cannot be mapped are counted by reason and not sent.",
    )
    p.add_argument("file", help="orders file: .csv, .tsv, .jsonl/.ndjson/.json (optionally .gz), or CDNOW with --format cdnow")
    p.add_argument(
        "--format", choices=("csv", "tsv", "jsonl", "cdnow"), help="default: from the extension; cdnow sets the CDNOW column mapping"
    )
    p.add_argument("--delimiter", help="CSV delimiter (default , or tab for tsv)")
    p.add_argument("--customer-col", help="customer id column (default customer_id)")
    p.add_argument("--time-col", help="event time column (default time)")
    p.add_argument("--time-format", help="iso (default: ISO 8601, naive = UTC), epoch, epoch_ms, or a strptime pattern such as %%Y%%m%%d")
    p.add_argument("--total-col", help="amount paid column (default total)")
    p.add_argument("--order-id-col", help="order id column (default order_id if present, else derived from the row)")
    p.add_argument("--currency", help="ISO 4217 currency of the amounts (default: the worker's REPORTING_CURRENCY; USD with --format cdnow)")
    p.add_argument("--currency-col", help="per-row currency column (empty cells: --currency)")
    p.add_argument("--margin-col", help="gross margin column")
    p.add_argument("--cost-col", help="cost of goods column")
    p.add_argument("--margin-rate", type=float, help="without margin/cost columns: margin = total x rate (default 1.0)")
    p.add_argument("--product-id", help="product id of the single order line (default unknown; cd for CDNOW)")
    p.add_argument("--source", help="CloudEvents source (default /replay; /cdnow for CDNOW)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default KAFKA_BOOTSTRAP)")
    p.add_argument("--dry-run", action="store_true", help="read, map and validate only; print the summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("config", help="the rules file (thresholds, segment families, campaign triggers)")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a rules file and print what it sets; exit 2 if invalid")
    check.add_argument("file", help="rules file (TOML), e.g. streamer/rules.default.toml")
    check.set_defaults(func=_cmd_config_check)

    args = parser.parse_args(argv)
    from streamer.errors import BrokerError, ConfigError
    from streamer.settings import log_level
    from streamer.topics import TopicsNotCreated

    # A bad setting or rules file is the operator's to fix: one clear line and exit 2 (as
    # `config check` does), not a traceback around the message.
    try:
        level = log_level(os.environ.get("LOG_LEVEL"))
    except ConfigError as exc:
        print(f"streamer {args.command}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"streamer {args.command}: {exc}", file=sys.stderr)
        return 2
    except (TopicsNotCreated, BrokerError) as exc:  # replication factor above the brokers; a port taken
        print(f"streamer {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

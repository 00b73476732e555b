"""``streamer evaluate``: replay a transaction history through the scoring pipeline in event
time, stop at the end of the calibration period, and compare the predictions for the holdout
period with what really happened (the protocol of Fader, Hardie & Lee 2005 on CDNOW).

Every transaction becomes an ``Order Completed`` CloudEvent and goes through the same
:class:`~streamer.core.engine.Engine` a worker runs — decode, validation, state update,
features, scorers — in event-time order. At the end of calibration the engine's clocks are
advanced to that moment (timers fire as they would live), the population models are fitted
on the engine's own customers, and every customer is scored as of that moment.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
from scipy import stats

from streamer.core import features as features_mod
from streamer.core.config import DAY, Limits, ScoringConfig
from streamer.core.engine import DictStore, Engine, Record
from streamer.core.scoring import score
from streamer.models.cdnow import CALIBRATION_END, HOLDOUT_END, load_cdnow, roc_auc

PARTITIONS = 8


@dataclass
class Report:
    customers: int
    calibration_end: str
    holdout_end: str
    horizon_days: float
    model_version: str
    bgnbd: dict
    gamma_gamma: dict
    mae_purchases: float
    rmse_purchases: float
    total_predicted_purchases: float
    total_actual_purchases: int
    total_error_pct: float
    auc_churn_p_no_purchase: float
    auc_churn_expected_purchases: float
    mae_spend: float
    spearman_value: float
    replay_events_per_s: float
    #: The log-likelihood with time in weeks (as published): times in days add x·ln 7 per
    #: customer. None: no fit (too few customers; the prior's parameters are used).
    bgnbd_log_likelihood_weeks: float | None
    #: BG/NBD corrected by the online learners (delayed 13-week labels within calibration).
    mae_purchases_learned: float
    total_error_pct_learned: float
    auc_churn_learned: float
    labels_learned: int
    online_quality: dict

    def lines(self) -> list[str]:
        return [
            f"customers {self.customers}, calibration to {self.calibration_end}, holdout to {self.holdout_end} ({self.horizon_days:.0f} days)",
            f"BG/NBD r={self.bgnbd['r']:.4f} alpha={self.bgnbd['alpha'] / 7:.4f}/week a={self.bgnbd['a']:.4f} b={self.bgnbd['b']:.4f}  "
            + (f"LL={self.bgnbd_log_likelihood_weeks:.1f} (time in weeks)" if self.bgnbd_log_likelihood_weeks is not None else "not fitted: too few customers, the prior's parameters"),
            f"Gamma-Gamma p={self.gamma_gamma['p']:.3f} q={self.gamma_gamma['q']:.3f} v={self.gamma_gamma['v']:.3f}",
            f"holdout purchases: MAE {self.mae_purchases:.4f}  RMSE {self.rmse_purchases:.4f}  total predicted {self.total_predicted_purchases:.1f} vs actual {self.total_actual_purchases} ({self.total_error_pct:+.1f}%)",
            f"churn (no purchase in holdout): ROC AUC {self.auc_churn_p_no_purchase:.4f} by P(no purchase), {self.auc_churn_expected_purchases:.4f} by expected purchases",
            f"spend: MAE {self.mae_spend:.2f}  Spearman {self.spearman_value:.4f}",
            f"with the online learners ({self.labels_learned} delayed labels): purchases MAE {self.mae_purchases_learned:.4f}, "
            f"total {self.total_error_pct_learned:+.1f}%, churn ROC AUC {self.auc_churn_learned:.4f}",
            f"replay {self.replay_events_per_s:,.0f} events/s through the engine",
        ]


def _repeat_purchases(engine: Engine) -> float:
    x, *_ = engine.population_summaries()
    return float(x.sum())


def _partition(customer: str) -> int:
    return sum(customer.encode()) % PARTITIONS  # any stable hash: the replay runs in one process


def order_records(rows: list[tuple[str, date, float]], margin_rate: float) -> list[Record]:
    """Each transaction as an Order Completed record, in event-time order."""
    ordered = sorted(enumerate(rows), key=lambda item: (item[1][1], item[0]))
    records = []
    offsets = [0] * PARTITIONS
    for n, (customer, day, amount) in ordered:
        moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        doc = {
            "specversion": "1.0",
            "id": f"cdnow-{n}",
            "source": "/cdnow",
            "type": "Order Completed",
            "time": moment.isoformat().replace("+00:00", "Z"),
            "subject": customer,
            "data": {
                "order_id": f"cdnow-{n}",
                "total": round(amount, 2),
                "currency": "USD",
                "margin": round(amount * margin_rate, 2),
                "products": [{"product_id": "cd", "price": round(amount, 2), "quantity": 1, "tier": "basic"}],
            },
        }
        partition = _partition(customer)
        records.append(Record("orders", "orders", partition, offsets[partition], customer.encode(), orjson.dumps(doc)))
        offsets[partition] += 1
    return records


def _progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\rreplaying [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events, {rate:,.0f}/s")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def replay(engine: Engine, store: DictStore, records: list[Record], refit_every_days: float, progress: bool, every: int) -> float:
    """Feed records through the engine in order; returns events/s.

    The population models are refitted on a schedule in event time, as a worker does on the
    wall clock, so the online learners learn against the BTYD the stream really had. A
    rejected record is a bug in the replay's own encoding, so it stops the evaluation.
    """
    started = time.perf_counter()
    next_refit = None
    for i, record in enumerate(records, 1):
        now = max((clock.now for clock in engine.partitions.values()), default=0.0)
        if next_refit is None:
            next_refit = now + refit_every_days * DAY if engine.partitions else None
        elif now >= next_refit:
            engine.refit_population()
            next_refit = now + refit_every_days * DAY
        result = engine.process(record, store)
        if result.rejected:
            raise ValueError(f"record {record.partition}/{record.offset} rejected: {result.outgoing[-1].value[:300]!r}")
        if progress and (i % every == 0 or i == len(records)):
            _progress(i, len(records), started)
    return len(records) / max(time.perf_counter() - started, 1e-9)


def evaluate(
    path: Path,
    calibration_end: date = CALIBRATION_END,
    holdout_end: date = HOLDOUT_END,
    margin_rate: float = 1.0,
    out_dir: Path | None = None,
    progress: bool = True,
    learn_horizon_days: float = 91.0,
    refit_every_days: float = 14.0,
) -> Report:
    rows = load_cdnow(path)
    # Ages are date differences to the calibration end day, as in the paper's data (a first
    # purchase on 1997-01-01 has T = 272 days = 38.86 weeks on 1997-09-30); the horizon is
    # the date difference to the holdout end (273 days = 39 weeks).
    end = datetime(calibration_end.year, calibration_end.month, calibration_end.day, tzinfo=timezone.utc)
    horizon_end = datetime(holdout_end.year, holdout_end.month, holdout_end.day, tzinfo=timezone.utc)
    horizon_days = (horizon_end - end).total_seconds() / DAY
    # Labels of the online learners must mature inside the calibration period (customers
    # arrive in its first 12 weeks): 13-week labels.
    config = ScoringConfig(btyd_horizon_days=horizon_days, learn_horizon_days=learn_horizon_days)
    # A 1990s history is far in the past, and that is fine: nothing here is "from the future".
    engine = Engine(config, Limits())
    store = DictStore()

    calibration = [r for r in rows if r[1] <= calibration_end]
    records = order_records(calibration, margin_rate)
    replay_rate = replay(engine, store, records, refit_every_days, progress, every=500)

    # The end of calibration, in event time: every partition's clock moves there (timers
    # fire as they would), the population models are fitted, then everyone is scored then.
    end_t = end.timestamp()
    for partition in list(engine.partitions):
        engine.advance_clock(partition, end_t, store)
    model = engine.refit_population()

    customers = sorted(store.data)
    actual_counts: dict[str, int] = {c: 0 for c in customers}
    actual_spend: dict[str, float] = {c: 0.0 for c in customers}
    holdout_days: dict[str, set[date]] = {c: set() for c in customers}
    for customer, day, amount in rows:
        if calibration_end < day <= holdout_end and customer in actual_counts:
            holdout_days[customer].add(day)
            actual_spend[customer] += amount
    for customer, days in holdout_days.items():
        actual_counts[customer] = len(days)

    predicted, p_none, value, learned, churn_learned = [], [], [], [], []
    online = engine.online
    for customer in customers:
        f = features_mod.compute(store.data[customer], end_t, config)
        s = score(f, engine.scorers)
        predicted.append(s["expected_purchases"])
        p_none.append(s["p_no_purchase"])
        value.append(s["expected_purchases"] * s["expected_order_value"])
        # The learners predict over their own (13-week) horizon: their correction of BG/NBD
        # over it scales BG/NBD's holdout expectation.
        _, btyd_h = online.inputs(f)
        ratio = s["expected_purchases_learned"] / btyd_h if btyd_h > 1e-9 else 1.0
        learned.append(s["expected_purchases"] * ratio)
        churn_learned.append(s["churn_risk_learned"])
    predicted_a, actual_a = np.array(predicted), np.array([actual_counts[c] for c in customers], dtype=float)
    spend_a, value_a = np.array([actual_spend[c] for c in customers]), np.array(value)
    churned = actual_a == 0
    learned_a = np.array(learned)
    quality = online.learner.quality.snapshot()
    report = Report(
        mae_purchases_learned=float(np.mean(np.abs(learned_a - actual_a))),
        total_error_pct_learned=float(100 * (learned_a.sum() - actual_a.sum()) / actual_a.sum()),
        auc_churn_learned=roc_auc(churned, np.array(churn_learned)),
        labels_learned=int(quality["labels"]),
        online_quality=quality,
        customers=len(customers),
        calibration_end=str(calibration_end),
        holdout_end=str(holdout_end),
        horizon_days=horizon_days,
        model_version=engine.model_version,
        bgnbd=model.bgnbd.to_dict() if model else {},
        gamma_gamma=model.gamma_gamma.to_dict() if model else {},
        mae_purchases=float(np.mean(np.abs(predicted_a - actual_a))),
        rmse_purchases=float(np.sqrt(np.mean((predicted_a - actual_a) ** 2))),
        total_predicted_purchases=float(predicted_a.sum()),
        total_actual_purchases=int(actual_a.sum()),
        total_error_pct=float(100 * (predicted_a.sum() - actual_a.sum()) / actual_a.sum()),
        auc_churn_p_no_purchase=roc_auc(churned, np.array(p_none)),
        auc_churn_expected_purchases=roc_auc(churned, -predicted_a),
        mae_spend=float(np.mean(np.abs(value_a - spend_a))),
        spearman_value=float(stats.spearmanr(value_a, spend_a).statistic),
        replay_events_per_s=replay_rate,
        bgnbd_log_likelihood_weeks=(
            model.bgnbd.log_likelihood + _repeat_purchases(engine) * float(np.log(7.0)) if model and model.bgnbd.log_likelihood is not None else None
        ),
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "predictions.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["customer", "expected_purchases", "p_at_least_one", "predicted_value", "actual_purchases", "actual_spend"])
            for i, customer in enumerate(customers):
                writer.writerow([customer, f"{predicted[i]:.6f}", f"{1 - p_none[i]:.6f}", f"{value[i]:.4f}", int(actual_a[i]), f"{spend_a[i]:.2f}"])
        (out_dir / "metrics.json").write_text(json.dumps(asdict(report), indent=2))
    return report


# ---------------------------------------------------------------------------------------------
# The same protocol on the shop simulator, where the truth (who is alive) is known
# ---------------------------------------------------------------------------------------------

SIM_START = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass
class SimReport:
    """BTYD alone vs BTYD corrected by the online learners, on a simulated shop.

    Churn label: no purchase in the holdout. Dead label: the simulator's truth says the
    customer had dropped out by the end of calibration. CLV error: predicted vs actual holdout
    spend (Order Completed totals in the holdout, net of refunds of those orders seen there).
    """

    customers: int  # simulated customers (acquired over the first 90 days)
    scored: int  # customers with an order by the calibration end (all of them are scored)
    seed: int
    calibration_end: str
    holdout_end: str
    calibration_days: float
    holdout_days: float
    learn_horizon_days: float
    events_calibration: int
    events_holdout: int
    churned: int  # scored customers with no purchase in the holdout
    dead: int  # scored customers dead (truth) at the calibration end
    total_actual_purchases: int
    total_actual_spend: float
    bgnbd: dict
    # BTYD alone
    auc_churn_btyd: float  # by P(no purchase in the holdout)
    auc_dead_btyd: float  # by 1 - P(alive)
    mae_purchases_btyd: float
    total_predicted_purchases_btyd: float
    total_error_pct_btyd: float
    mae_clv_btyd: float
    total_predicted_spend_btyd: float
    # with the online learners
    auc_churn_learned: float  # by churn_risk_learned
    auc_dead_learned: float  # by 1 - p_alive_learned (the P(alive) the learned churn risk implies)
    mae_purchases_learned: float
    total_predicted_purchases_learned: float
    total_error_pct_learned: float
    mae_clv_learned: float
    total_predicted_spend_learned: float
    labels_learned: int
    online_quality: dict
    replay_events_per_s: float
    seconds: float

    def lines(self) -> list[str]:
        def pct(v: float) -> str:
            return f"{v:+.1f}%"

        rows = [
            ("churn ROC AUC (no purchase in holdout)", f"{self.auc_churn_btyd:.4f}", f"{self.auc_churn_learned:.4f}"),
            ("dead ROC AUC (truth at calibration end), by 1 - P(alive)", f"{self.auc_dead_btyd:.4f}", f"{self.auc_dead_learned:.4f}"),
            ("purchases MAE", f"{self.mae_purchases_btyd:.4f}", f"{self.mae_purchases_learned:.4f}"),
            (
                f"purchases total (actual {self.total_actual_purchases})",
                f"{self.total_predicted_purchases_btyd:.0f} ({pct(self.total_error_pct_btyd)})",
                f"{self.total_predicted_purchases_learned:.0f} ({pct(self.total_error_pct_learned)})",
            ),
            ("CLV (holdout spend) MAE, USD", f"{self.mae_clv_btyd:.2f}", f"{self.mae_clv_learned:.2f}"),
            (
                f"spend total (actual {self.total_actual_spend:,.0f})",
                f"{self.total_predicted_spend_btyd:,.0f}",
                f"{self.total_predicted_spend_learned:,.0f}",
            ),
        ]
        width = max(len(r[0]) for r in rows)
        out = [
            f"simulated shop, seed {self.seed}: {self.customers} customers ({self.scored} scored), calibration to "
            f"{self.calibration_end} ({self.calibration_days:.0f} days), holdout to {self.holdout_end} "
            f"({self.holdout_days:.0f} days), learners' horizon {self.learn_horizon_days:.0f} days",
            f"{self.churned} churned (no holdout purchase), {self.dead} truly dead at the calibration end; "
            f"{self.labels_learned} delayed labels learned",
            f"{'':{width}}  {'BTYD alone':>16}  {'with learners':>16}",
        ]
        out += [f"{name:{width}}  {a:>16}  {b:>16}" for name, a, b in rows]
        out.append(
            f"replay {self.events_calibration:,} events at {self.replay_events_per_s:,.0f}/s; {self.seconds:.1f} s in all"
        )
        return out


def simulated_records(
    sim, until: datetime, cut: float
) -> tuple[list[Record], list[tuple[str, dict]], int]:
    """The simulator's valid stream to ``until``: calibration events (time < ``cut``) as
    engine records (partition by a stable hash of the key, offsets per partition), the rest as
    (type, event) pairs for the actuals. Returns (records, holdout events, holdout count)."""
    records: list[Record] = []
    holdout: list[tuple[str, dict]] = []
    offsets = [0] * PARTITIONS
    n_holdout = 0
    cut_iso = datetime.fromtimestamp(cut, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for role, key, value in sim.raw_events(until):
        # Event times are fixed-width RFC 3339 UTC strings: compare them without parsing.
        t_at = value.find(b'"time":"') + 8
        when = value[t_at : t_at + 27].decode()
        if when < cut_iso:
            customer = key.decode()
            partition = _partition(customer)
            records.append(Record(role, role, partition, offsets[partition], key, value))
            offsets[partition] += 1
        else:
            n_holdout += 1
            if role == "orders":
                doc = orjson.loads(value)
                holdout.append((doc["type"], doc))
    return records, holdout, n_holdout


def evaluate_simulated(
    customers: int = 1500,
    seed: int = 7,
    calibration_days: float = 270.0,
    holdout_days: float = 180.0,
    learn_horizon_days: float = 75.0,
    progress: bool = True,
    out_dir: Path | None = None,
    refit_every_days: float = 14.0,
    start: datetime = SIM_START,
) -> SimReport:
    """Replay a simulated shop's calibration period through a fresh engine, score everyone at
    its end, and compare BTYD alone with BTYD corrected by the online learners on the holdout
    and on the simulator's truth. Customers are acquired over the first 90 days, so the
    learners' labels (``learn_horizon_days``) mature well inside calibration."""
    from streamer.simulator import ShopSimulator

    began = time.perf_counter()
    cut_dt = start + timedelta(days=calibration_days)
    end_dt = cut_dt + timedelta(days=holdout_days)
    cut = cut_dt.timestamp()
    sim = ShopSimulator(customers, start, seed=seed, invalid_fraction=0.0)
    records, holdout, n_holdout = simulated_records(sim, end_dt, cut)

    config = ScoringConfig(btyd_horizon_days=holdout_days, learn_horizon_days=learn_horizon_days)
    engine = Engine(config, Limits())
    store = DictStore()
    replay_rate = replay(engine, store, records, refit_every_days, progress, every=2000)

    for partition in list(engine.partitions):
        engine.advance_clock(partition, cut, store)
    model = engine.refit_population()

    # Customers with a purchase at the cut: an order refunded in full is none.
    scored = sorted(c for c, state in store.data.items() if features_mod.compute(state, cut, config).orders)
    index = {c: i for i, c in enumerate(scored)}
    days: list[set] = [set() for _ in scored]
    spend = np.zeros(len(scored))
    holdout_orders: dict[str, int] = {}
    for kind, doc in holdout:
        i = index.get(doc["subject"])
        if i is None:
            continue
        if kind == "Order Completed":
            days[i].add(doc["time"][:10])
            spend[i] += float(doc["data"]["total"])
            holdout_orders[doc["data"]["order_id"]] = i
        elif kind == "Order Refunded" and doc["data"]["order_id"] in holdout_orders:
            spend[i] -= float(doc["data"]["total"])
    actual = np.array([len(d) for d in days], dtype=float)

    online = engine.online
    p_none, p_alive, predicted, value, learned, churn_learned, alive_learned = [], [], [], [], [], [], []
    for customer in scored:
        f = features_mod.compute(store.data[customer], cut, config)
        s = score(f, engine.scorers)
        p_none.append(s["p_no_purchase"])
        p_alive.append(s["p_alive"])
        predicted.append(s["expected_purchases"])
        value.append(s["expected_order_value"])
        _, btyd_h = online.inputs(f)
        ratio = s["expected_purchases_learned"] / btyd_h if btyd_h > 1e-9 else 1.0
        learned.append(s["expected_purchases"] * ratio)
        churn_learned.append(s["churn_risk_learned"])
        alive_learned.append(s["p_alive_learned"])
    predicted_a, learned_a, value_a = np.array(predicted), np.array(learned), np.array(value)
    clv_btyd, clv_learned = predicted_a * value_a, learned_a * value_a
    churned = actual == 0
    dead = np.array(
        [(t := sim.truth[c].died_at) is not None and t.timestamp() <= cut for c in scored], dtype=bool
    )
    total = actual.sum()
    quality = online.learner.quality.snapshot()
    report = SimReport(
        customers=customers,
        scored=len(scored),
        seed=seed,
        calibration_end=cut_dt.date().isoformat(),
        holdout_end=end_dt.date().isoformat(),
        calibration_days=calibration_days,
        holdout_days=holdout_days,
        learn_horizon_days=learn_horizon_days,
        events_calibration=len(records),
        events_holdout=n_holdout,
        churned=int(churned.sum()),
        dead=int(dead.sum()),
        total_actual_purchases=int(total),
        total_actual_spend=float(spend.sum()),
        bgnbd=model.bgnbd.to_dict() if model else {},
        auc_churn_btyd=roc_auc(churned, np.array(p_none)),
        auc_dead_btyd=roc_auc(dead, 1.0 - np.array(p_alive)),
        mae_purchases_btyd=float(np.mean(np.abs(predicted_a - actual))),
        total_predicted_purchases_btyd=float(predicted_a.sum()),
        total_error_pct_btyd=float(100 * (predicted_a.sum() - total) / total),
        mae_clv_btyd=float(np.mean(np.abs(clv_btyd - spend))),
        total_predicted_spend_btyd=float(clv_btyd.sum()),
        auc_churn_learned=roc_auc(churned, np.array(churn_learned)),
        auc_dead_learned=roc_auc(dead, 1.0 - np.array(alive_learned)),
        mae_purchases_learned=float(np.mean(np.abs(learned_a - actual))),
        total_predicted_purchases_learned=float(learned_a.sum()),
        total_error_pct_learned=float(100 * (learned_a.sum() - total) / total),
        mae_clv_learned=float(np.mean(np.abs(clv_learned - spend))),
        total_predicted_spend_learned=float(clv_learned.sum()),
        labels_learned=int(quality["labels"]),
        online_quality=quality,
        replay_events_per_s=replay_rate,
        seconds=time.perf_counter() - began,
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "predictions.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([
                "customer", "p_no_purchase", "p_alive", "expected_purchases", "expected_purchases_learned_holdout",
                "churn_risk_learned", "p_alive_learned", "expected_order_value", "actual_purchases", "actual_spend", "dead_at_cut",
            ])
            for i, customer in enumerate(scored):
                writer.writerow([
                    customer, f"{p_none[i]:.6f}", f"{p_alive[i]:.6f}", f"{predicted[i]:.6f}", f"{learned[i]:.6f}",
                    f"{churn_learned[i]:.6f}", f"{alive_learned[i]:.6f}", f"{value[i]:.4f}", int(actual[i]), f"{spend[i]:.2f}", int(dead[i]),
                ])
        (out_dir / "metrics.json").write_text(json.dumps(asdict(report), indent=2))
    return report

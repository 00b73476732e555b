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
from datetime import date, datetime, timezone
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
    #: The log-likelihood with time in weeks (as published): times in days add x·ln 7 per customer.
    bgnbd_log_likelihood_weeks: float
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
            f"LL={self.bgnbd_log_likelihood_weeks:.1f} (time in weeks)",
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
    started = time.perf_counter()
    next_refit = None
    for i, record in enumerate(records, 1):
        # Refit the population models on a schedule in event time, as a worker does on the
        # wall clock, so the online learners learn against the BTYD the stream really had.
        now = max((clock.now for clock in engine.partitions.values()), default=0.0)
        if next_refit is None:
            next_refit = now + refit_every_days * DAY if engine.partitions else None
        elif now >= next_refit:
            engine.refit_population()
            next_refit = now + refit_every_days * DAY
        result = engine.process(record, store)
        if result.rejected:
            raise ValueError(f"transaction {record.offset} rejected: {result.outgoing[-1].value[:200]!r}")
        if progress and (i % 500 == 0 or i == len(records)):
            _progress(i, len(records), started)
    replay_rate = len(records) / (time.perf_counter() - started)

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
        bgnbd_log_likelihood_weeks=(model.bgnbd.log_likelihood or 0.0) + _repeat_purchases(engine) * float(np.log(7.0)) if model else 0.0,
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

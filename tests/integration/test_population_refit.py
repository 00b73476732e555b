"""The worker refits the population models in the background and scores with the new version."""

from __future__ import annotations

import asyncio

import pytest

import orjson

from streamer.models.online import DelayedLabelLearner
from streamer.models.scorer import PopulationModel
from streamer.shell.model_state import read_latest
from tests.integration.conftest import worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent

pytestmark = pytest.mark.integration


def order(customer: str, n: int, day: int) -> bytes:
    total = 20.0 + (hash((customer, n)) % 50)
    data = {"order_id": f"{customer}-{n}", "total": total, "currency": "USD", "margin": total / 3,
            "products": [{"product_id": "p", "price": total, "quantity": 1, "tier": "basic"}]}
    return cloudevent(f"{customer}-e{n}", "Order Completed", f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}T10:00:00Z", customer, data)


async def test_background_refit_swaps_in_a_new_model_version_that_survives_restart(make_worker, broker: str) -> None:
    env = worker_env(partitions=2, MODEL_REFIT_SECONDS="2")
    worker = make_worker(env)
    topics = worker.topics
    async with Kafka(broker, [topics["customer-scores"]]) as kafka:
        # 120 customers; 80 of them buy again (the fit needs at least 50 repeat buyers).
        for c in range(120):
            customer = f"refit-{c}"
            await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, 0, c % 60))
            if c % 3:
                await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, 1, 60 + c % 90))
        await kafka.wait_for(lambda o: o.doc["data"]["cause"].get("event_id") == "refit-119-e0", timeout_s=60)
        # The next refit happens within 2 s; one more order is then scored with its version.
        fitted = None
        for attempt in range(20):
            customer = f"late-{attempt}"
            await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, 0, 200))
            scored = await kafka.wait_for(lambda o, e=f"{customer}-e0": o.doc["data"]["cause"].get("event_id") == e, timeout_s=30)
            if "prior-cdnow" not in scored.doc["data"]["model_version"]:
                fitted = scored.doc["data"]
                break
            await asyncio.sleep(0.5)
        assert fitted is not None, "no score used a refitted model"
        assert fitted["model_version"].startswith("formula-1+btyd-")
        assert 0 < fitted["scores"]["p_alive"] <= 1
        exposition = worker.metrics()
        refits = [line for line in exposition.splitlines() if line.startswith("clv_model_refits_total ")]
        assert refits and float(refits[0].split()[1]) >= 1
        # The orders span ~200 days of event time: 90-day labels have matured and been learned,
        # and the progressive-validation gauges are exported (within the 5 s gauge interval).
        labels = [line for line in exposition.splitlines() if line.startswith("clv_online_labels_total ")]
        assert labels and float(labels[0].split()[1]) >= 1
        for _ in range(30):
            if 'clv_online_quality{metric="mae_btyd"}' in worker.metrics():
                break
            await asyncio.sleep(0.5)
        assert 'clv_online_quality{metric="mae_btyd"}' in worker.metrics()

        # Restart with refits effectively off: the next score can only have the fitted version
        # if the worker loaded it from the model-state topic.
        await asyncio.sleep(2.5)  # let a final refit (if any) be persisted
        worker.stop()
        restarted = make_worker({**env, "MODEL_REFIT_SECONDS": "3600"})
        stored = await read_latest(broker, topics["model-state"])
        population = PopulationModel.from_dict(orjson.loads(stored[b"population"]))
        learner = DelayedLabelLearner.from_bytes(stored[b"online"])
        async with Kafka(broker, [topics["customer-scores"]]) as after:
            await after.send(topics["orders"], "orders", b"after-restart", order("after-restart", 0, 210))
            rescored = await after.wait_for(lambda o: o.doc["data"]["cause"].get("event_id") == "after-restart-e0", timeout_s=60)
        formula, btyd, online = rescored.doc["data"]["model_version"].split("+")
        assert btyd == f"btyd-{population.version}" and "prior" not in btyd
        assert learner.version >= 1 and int(online.removeprefix("online-")) >= learner.version
        assert restarted.process is not None and restarted.process.poll() is None

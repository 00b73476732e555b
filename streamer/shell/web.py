"""Web pages on the worker's port: /metrics, /healthz, /readyz."""

from __future__ import annotations

from typing import Any

from streamer.shell.agents import metrics
from streamer.shell.app import app


@app.page("/metrics")
async def metrics_page(web: Any, request: Any) -> Any:
    body, content_type = metrics.render()
    # aiohttp wants the charset apart from the media type; Prometheus reads plain text.
    return web.bytes(body, content_type=content_type.split(";")[0])


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    return web.json({"status": "ok"})


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    # ``completed`` is set after the first recovery and never cleared, so a later recovery
    # is seen through ``in_recovery``.
    recovery = app.tables.recovery
    recovered = recovery.completed.is_set() and not recovery.in_recovery
    ready = recovered and not app.rebalancing
    return web.json({"ready": ready, "recovered": recovered, "rebalancing": bool(app.rebalancing)}, status=200 if ready else 503)

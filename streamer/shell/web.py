"""Web pages on the worker's port.

Ops: /metrics, /healthz, /readyz (always open). Query API (``schemas/openapi.json``):
/customers/{customer_id} — routed by Faust to the worker that owns the customer's partition,
whichever worker is asked; /segments and /api/summary — every worker's partitions added up
(each worker answers for its own with ``?local=1``); /dashboard — the marketers' page. With
API_TOKEN set these need ``Authorization: Bearer <token>`` (or ``?token=``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from importlib import resources
from typing import Any

import aiohttp
import orjson
from yarl import URL

from streamer.core import views
from streamer.core.events import MAX_CUSTOMER_ID_BYTES, shows_something
from streamer.shell.agents import activity, broker_watch, engine, metrics
from streamer.shell.app import app, settings
from streamer.shell.tables import customers, store

log = logging.getLogger(__name__)

MAX_CUSTOMER_ID = MAX_CUSTOMER_ID_BYTES  # what decode() accepts
PEER_TIMEOUT_S = 3.0


@app.page("/metrics")
async def metrics_page(web: Any, request: Any) -> Any:
    # Readiness as of this scrape: what /readyz would answer now.
    metrics.ready.set(1 if _readiness()[0] else 0)
    metrics.broker_reachable.set(1 if broker_watch.reachable else 0)
    body, content_type = metrics.render()
    # aiohttp wants the charset apart from the media type; Prometheus reads plain text.
    return web.bytes(body, content_type=content_type.split(";")[0])


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    return web.json({"status": "ok"})


def _recovered() -> bool:
    """The table is restored. ``completed`` is set after the first recovery and never cleared,
    so a later recovery is seen through ``in_recovery``."""
    recovery = app.tables.recovery
    return recovery.completed.is_set() and not recovery.in_recovery


def _readiness() -> tuple[bool, bool]:
    """(ready, recovered). The broker too: Faust keeps retrying in the background and would
    stay "ready" through an outage, or after a broker restart that lost the topics (see
    broker_watch.py)."""
    recovered = _recovered()
    return recovered and not app.rebalancing and broker_watch.ok, recovered


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    ready, recovered = _readiness()
    body = {"ready": ready, "recovered": recovered, "rebalancing": bool(app.rebalancing)}
    if not broker_watch.ok:
        body.update(broker=broker_watch.reachable, problem=broker_watch.problem)
    return web.json(body, status=200 if ready else 503)


def _error(web: Any, status: int, error: str, detail: str) -> Any:
    return web.json({"error": error, "detail": detail}, status=status)


def _refused(web: Any, request: Any) -> Any | None:
    """A 401 answer when API_TOKEN is set and the request does not carry it, else None."""
    if not settings.api_token:
        return None
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    # The scheme name is case-insensitive (RFC 7235): "bearer" is "Bearer".
    given = credentials.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
    if hmac.compare_digest(given.encode(), settings.api_token.encode()):
        return None
    return _error(web, 401, "unauthorized", "this API needs the token: 'Authorization: Bearer <token>' or '?token='")


def _bad_customer_id(customer_id: str) -> str | None:
    try:
        encoded = customer_id.encode()
    except UnicodeEncodeError:  # percent-escapes that are no UTF-8 decode to lone surrogates
        return "a customer id is UTF-8 text"
    if not encoded or len(encoded) > MAX_CUSTOMER_ID:
        return f"a customer id has 1 to {MAX_CUSTOMER_ID} bytes"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in customer_id):
        return "a customer id has no control characters"
    if not shows_something(customer_id):
        return "a customer id has a visible character (the worker refuses events of any other)"
    return None


@app.page("/customers/{customer_id:.+}")  # ".+": an id with an unencoded "/" is still an id
async def customer_page(web: Any, request: Any, customer_id: str) -> Any:
    if (refused := _refused(web, request)) is not None:
        return refused
    if (problem := _bad_customer_id(customer_id)) is not None:
        return _error(web, 400, "bad_customer_id", problem)
    return await _owned_customer(web, request, customer_id=customer_id)


#: Marks a query forwarded to the owner: the receiver answers itself, even if the partition
#: moved in between (a 503 or 404 then), so two workers never pass a request back and forth.
FORWARDED = "X-Clv-Forwarded"


def _same_worker(url: URL) -> bool:
    mine = URL(str(app.conf.canonical_url))
    return (url.host, url.port) == (mine.host, mine.port)


async def _owned_customer(web: Any, request: Any, customer_id: str) -> Any:
    """The answer of the worker that owns the customer's partition: this one's, or the owner's
    forwarded (with Faust's assignment, as ``app.table_route`` does, but a 503 the client
    can retry, not a 500 or a 5-minute wait, when the owner is gone or stuck)."""
    if FORWARDED in request.headers:
        return customer_answer(web, customer_id)
    try:
        owner = app.router.key_store(customers.name, customer_id)
    except KeyError:
        return _error(web, 503, "not_ready", "no worker owns this customer's partition right now (a rebalance); retry shortly")
    if _same_worker(owner):
        return customer_answer(web, customer_id)
    # The path as the client sent it (an id's %2F stays encoded), with its query (?token=).
    url = URL(str(owner).rstrip("/") + request.raw_path, encoded=True)
    headers = {FORWARDED: "1", **({"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {})}
    try:
        async with app.http_client.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)) as response:
            return web.bytes(await response.read(), content_type=response.content_type, status=response.status)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.warning("a customer query forwarded to the partition's owner failed: %s", type(exc).__name__)
        return _error(web, 503, "not_ready", "the worker that owns this customer's partition did not answer (it may be restarting); retry shortly")


def customer_answer(web: Any, customer_id: str) -> Any:
    """The owner's answer for one customer: the view, 404 unknown, 503 while not settled."""
    if not _recovered() or app.rebalancing:
        # The table is still being restored (or its partitions are moving): a customer not
        # found yet may well exist, and one found may be behind (or no longer this worker's).
        return _error(web, 503, "not_ready", "this worker's state is being restored or its partitions are moving; retry shortly")
    state = store.get(customer_id)
    if state is None:
        return _error(web, 404, "not_found", "no such customer: no event of theirs has been applied")
    return web.json(views.customer_view(engine, state))


def _local_summary() -> dict[str, Any]:
    return {
        "worker": settings.advertised_url,
        "summary": views.partition_summary(engine),
        "activity": activity.snapshot(),
        "throughput": metrics.snapshot(),
        "model_version": engine.model_version,
    }


#: In ``missing_workers`` when there is no partition assignment to find the workers by.
NO_ASSIGNMENT = "no partition assignment yet"


async def _peer_summaries(request: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """This worker's summary and every other worker's (from the partition assignment), and
    the workers that did not answer (or ``NO_ASSIGNMENT``: then it is this worker's alone)."""
    mine = _local_summary()
    try:
        hosts = [str(url).rstrip("/") for url in app.router.table_metadata(customers.name)]
    except Exception:  # noqa: BLE001 - no assignment yet: answer for this worker alone
        hosts = []
    if not hosts:  # before the first assignment (or none known): partial, whatever it holds
        return [mine], [NO_ASSIGNMENT]
    # By host and port, as yarl normalises them (Faust's list holds the canonical URL so: a
    # host in upper case, or an explicit :80, must not make this worker its own peer).
    peers = [h for h in hosts if not _same_worker(URL(h))]
    headers = {"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {}
    params = {"local": "1", **({"token": request.query["token"]} if "token" in request.query else {})}

    async def fetch(host: str) -> dict[str, Any] | None:
        try:
            async with app.http_client.get(f"{host}/api/summary", params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)) as response:
                if response.status != 200:
                    return None
                return orjson.loads(await response.read())
        except Exception as exc:  # noqa: BLE001 - a missing peer makes the answer partial, not an error
            log.warning("summary from a peer worker failed: %s", type(exc).__name__)
            return None

    answers = await asyncio.gather(*(fetch(h) for h in peers))
    missing = [h for h, a in zip(peers, answers) if a is None]
    return [mine, *(a for a in answers if a is not None)], missing


def _merged(parts: list[dict[str, Any]], missing: list[str]) -> dict[str, Any]:
    return {
        "workers": [p["worker"] for p in parts],
        "missing_workers": missing,
        "partial": bool(missing),
        "model_version": parts[0]["model_version"],
        "summary": views.merge_summaries(p["summary"] for p in parts),
        "activity": views.merge_activity(p["activity"] for p in parts),
        "throughput": views.merge_throughput(p["throughput"] for p in parts),
    }


@app.page("/api/summary")
async def summary_page(web: Any, request: Any) -> Any:
    if (refused := _refused(web, request)) is not None:
        return refused
    if request.query.get("local") == "1":
        return web.json(_local_summary())
    return web.json(_merged(*await _peer_summaries(request)))


@app.page("/segments")
async def segments_page(web: Any, request: Any) -> Any:
    if (refused := _refused(web, request)) is not None:
        return refused
    merged = _merged(*await _peer_summaries(request))
    return web.json({"customers": merged["summary"]["customers"], "populations": merged["summary"]["populations"], "partial": merged["partial"]})


@app.page("/dashboard")
async def dashboard_page(web: Any, request: Any) -> Any:
    if (refused := _refused(web, request)) is not None:
        return refused
    html = resources.files("streamer.shell").joinpath("dashboard.html").read_bytes()
    return web.bytes(html, content_type="text/html")

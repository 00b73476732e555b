"""Start a worker: create topics, then hand over to Faust's worker command."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request its parser refuses (for example a path with raw non-ASCII bytes,
    as curl sends ``/customers/café``) at ERROR with a traceback quoting the raw request line,
    whose path holds a customer id. Such a record becomes one line naming the error only, at
    WARNING at most; the client has its 400 either way."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed HTTP request (%s, status %s)", (type(exc).__name__, exc.code)
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:  # lowered, never raised (aiohttp logs some at debug)
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_log_filters() -> None:
    """No customer id in a log line above debug, also in what aiohttp logs (see above)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())


async def wait_for_broker(settings: Any) -> list[str]:
    """Create the service's topics, retrying for as long as the broker is unreachable.

    Meanwhile the web port answers ``/healthz`` (200: the process is fine), ``/readyz`` (503:
    no broker yet) and ``/metrics`` (not ready, broker unreachable), so an orchestrator sees a live, unready worker rather than a closed port
    and, after a while, a crashed one. Faust's own web server takes the port over afterwards.
    """
    from aiohttp import web

    from streamer.metrics import waiting_for_broker_page
    from streamer.topics import ensure_topics

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        body = {"ready": False, "recovered": False, "rebalancing": False, "broker": False, "problem": "broker unreachable"}
        return web.json_response(body, status=503)

    async def not_ready(request: web.Request) -> web.Response:
        body = {"error": "not_ready", "detail": "the worker is starting and waits for its Kafka broker; retry shortly"}
        return web.json_response(body, status=503)

    async def metrics_page(request: web.Request) -> web.Response:
        # Scraped as up, with the broker unreachable: ClvBrokerUnreachable, not ClvWorkerDown.
        body, content_type = waiting_for_broker_page()
        return web.Response(body=body, content_type=content_type.split(";")[0])

    server = web.Application()
    server.router.add_get("/healthz", healthz)
    server.router.add_get("/readyz", readyz)
    server.router.add_get("/metrics", metrics_page)
    # Everything else (the query API, the dashboard) answers as the worker would while not
    # ready: a 503 to retry, not a 404 a client would take for "no such customer".
    server.router.add_route("*", "/{path:.*}", not_ready)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.web_port).start()
    try:
        return await ensure_topics(settings, attempts=None)
    finally:
        await runner.cleanup()


def run() -> None:
    from streamer.shell import allocator

    allocator.fix_trim_threshold()  # before the large buffers of a running worker come and go
    install_log_filters()
    from streamer.shell.app import app, settings

    if settings.event_loop == "uvloop":
        # Faust reads `-L uvloop` from argv when faust is first imported, which has happened by
        # now; this is what that option does (sets uvloop's event loop policy).
        import mode.loop

        mode.loop.use("uvloop")
    asyncio.run(wait_for_broker(settings))
    from streamer.shell.no_auto_create import forbid_auto_create

    forbid_auto_create()  # from here on only the worker's own code creates topics
    from streamer.shell import agents, web  # noqa: F401  (registers agents, tables, pages)

    from streamer.settings import LOG_LEVELS

    sys.argv = [sys.argv[0], "worker", "--loglevel", LOG_LEVELS[settings.log_level]]  # Faust's spelling: warn, crit
    app.main()

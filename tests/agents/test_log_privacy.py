"""No customer id in a log line above debug — also in what aiohttp logs for a request its
HTTP parser refuses (its traceback quotes the raw request line, path and id included)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from streamer.shell.worker import install_log_filters


async def test_a_malformed_request_is_logged_without_its_request_line(caplog: pytest.LogCaptureFixture, unused_tcp_port: int) -> None:
    install_log_filters()
    install_log_filters()  # once only
    assert len(logging.getLogger("aiohttp.server").filters) == 1
    async def customer(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/customers/{customer_id:.+}", customer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
            writer.write("GET /customers/café-secret-id HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            answer = await reader.read(100)
            writer.close()
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records, "aiohttp logged nothing: the test saw no refused request"
    for record in records:
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert "secret-id" not in record.getMessage() and "caf" not in record.getMessage()

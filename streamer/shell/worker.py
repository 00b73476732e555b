"""Start a worker: create topics, then hand over to Faust's worker command."""

from __future__ import annotations

import asyncio
import sys


def run() -> None:
    from streamer.shell.app import app, settings
    from streamer.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    from streamer.shell import agents, web  # noqa: F401  (registers agents, tables, pages)

    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level]
    app.main()

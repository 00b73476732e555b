"""The Faust App — configuration only; the agents, tables and topics import it, never the reverse."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import faust
from faust.tables import TableManager

from streamer import settings as settings_module
from streamer.errors import ConfigError
from streamer.kafka_security import KafkaSecurity
from streamer.shell.recovery import transport_for

settings = settings_module.load()

if not settings.kafka_bootstrap:
    raise ConfigError("KAFKA_BOOTSTRAP is not set: point it at Kafka, or run `streamer demo` to use the embedded broker")



def credentials(security: KafkaSecurity) -> Any:
    """Faust's form of the TLS / SASL settings (None: plaintext)."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.username, password=security.password, mechanism=security.sasl_mechanism, ssl_context=security.ssl_context()
        )
    if security.uses_tls:
        return faust.SSLCredentials(security.ssl_context())
    return None


class StreamerApp(faust.App):
    """faust.App whose table recovery reads changelogs to their real end, and which runs
    ``before_commit`` hooks before committing offsets (see recovery.py)."""

    #: Coroutines the consumer awaits before every offset commit (the state write-back).
    before_commit: list[Callable[[], Awaitable[Any]]]
    #: aiokafka options (TLS, SASL) for the extra clients the shell opens.
    kafka_options: dict[str, Any]
    fetch_max_wait_ms: int

    def _new_transport(self) -> Any:
        return transport_for(self)


class StartNowTableManager(TableManager):
    """Faust's table manager without the second it sleeps when it starts.

    Faust waits 1 s there so that tables defined while the app starts get registered before
    the consumer subscribes to their changelogs; it cost every start (and the ready time) that
    second. Every table here is defined when its module is imported, before the worker starts
    the app (autodiscovery is off), and a table added later still raises "Too late to add
    tables" rather than being missed.
    """

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


app = StreamerApp(
    settings.app_id,
    broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
    store="rocksdb://" if settings.store == "rocksdb" else "memory://",
    datadir=settings.data_dir,
    web_host=settings.web_host,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    # Where other workers send a query for a customer this worker owns (table routing).
    canonical_url=settings.advertised_url,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    # Fast group joins: defaults (session 60 s, rebalance 60 s) made a worker take ~30 s to
    # start on the embedded broker; these make it ~5 s and move a dead worker's partitions
    # within the session timeout.
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.heartbeat_interval,
    broker_rebalance_timeout=settings.rebalance_timeout,
    producer_linger=settings.linger_ms / 1000.0,
    producer_max_batch_size=settings.producer_batch_bytes,
    consumer_max_fetch_size=settings.consumer_fetch_bytes,
    stream_buffer_maxsize=settings.stream_buffer_events,
    broker_max_poll_records=settings.consumer_poll_records,
    consumer_auto_offset_reset="earliest",
    autodiscover=False,
    TableManager=StartNowTableManager,
    web_enabled=True,
    # Faust's own /table/... and /router/... pages would serve any customer's stored state and
    # owner to anyone, past API_TOKEN: the query API (streamer.shell.web) replaces them.
    web_tables_enabled=False,
    web_router_enabled=False,
    broker_credentials=credentials(settings.security),
)
app.before_commit = []
app.kafka_options = settings.security.client_options()
app.fetch_max_wait_ms = settings.fetch_max_wait_ms  # see recovery.StreamerConsumerThread

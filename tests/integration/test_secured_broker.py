"""The worker against a secured broker: TLS (with and without a client certificate) and SASL
(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), configured only through the documented KAFKA_*
variables.

The embedded broker cannot secure its own listener here, so ``secure_proxy.SecureProxy`` does
the broker's half of TLS and SASL in front of it (see that module). What is tested for real is
our side: every client the worker opens (Faust's consumer and producers, the topic admin, the
model-state reader, the broker watch) negotiates TLS, verifies the broker's certificate against
the configured CA, presents its certificate, and authenticates — or the worker stays unready.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.broker import EmbeddedBroker, free_port
from streamer.kafka_security import KafkaSecurity
from tests.integration.conftest import Worker, worker_env
from tests.integration.kafka_helpers import Kafka, cloudevent
from tests.integration.secure_proxy import SecureProxy
from tests.integration.test_broker_outage import http_status, sample

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

USER, PASSWORD = "clv-streamer", "s3cret-Passw0rd"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(folder: Path, name: str, subject: str, ca: tuple[Path, Path], san: str | None = None) -> tuple[Path, Path]:
    """A key and a certificate for ``subject`` signed by ``ca``."""
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
    extensions = folder / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, the broker's certificate for 127.0.0.1 signed by it, a client certificate signed by
    it, and an unrelated CA (to check that verification really happens)."""
    folder = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}
    for ca in ("ca", "other-ca"):
        files[ca], files[f"{ca}-key"] = folder / f"{ca}.pem", folder / f"{ca}.key"
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files[f"{ca}-key"]), "-out", str(files[ca]), "-days", "2", "-subj", f"/CN=clv test {ca}")
    files["server"], files["server-key"] = issue(folder, "server", "/CN=127.0.0.1", (files["ca"], files["ca-key"]), san="IP:127.0.0.1,DNS:localhost")
    files["client"], files["client-key"] = issue(folder, "client", "/CN=clv-streamer-worker", (files["ca"], files["ca-key"]))
    return files


def server_tls(pki: dict[str, Path], client_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["server"], pki["server-key"])
    if client_certificate:
        context.load_verify_locations(pki["ca"])
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[dict[str, object]]:
    """Teardown for what a test starts: brokers, proxies, workers."""
    started: dict[str, list] = {"brokers": [], "proxies": [], "workers": []}
    yield started
    for worker in started["workers"]:
        worker.stop()
    for proxy in started["proxies"]:
        proxy.stop()
    for broker in started["brokers"]:
        broker.stop()


def secure_broker(secured: dict, tmp_path: Path, tls: ssl.SSLContext | None, users: dict[str, str]) -> SecureProxy:
    proxy_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised=f"127.0.0.1:{proxy_port}").start()
    secured["brokers"].append(broker)
    proxy = SecureProxy(upstream_port=broker.port, port=proxy_port, tls=tls, users=users).start()
    secured["proxies"].append(proxy)
    return proxy


def security_env(protocol: str, pki: dict[str, Path], mechanism: str = "", password: str = PASSWORD, client_certificate: bool = False, ca: str = "ca") -> dict[str, str]:
    env = {"KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.endswith("SSL"):
        env["KAFKA_SSL_CAFILE"] = str(pki[ca])
        if client_certificate:
            env.update(KAFKA_SSL_CERTFILE=str(pki["client"]), KAFKA_SSL_KEYFILE=str(pki["client-key"]))
    if protocol.startswith("SASL"):
        env.update(KAFKA_SASL_MECHANISM=mechanism, KAFKA_SASL_USERNAME=USER, KAFKA_SASL_PASSWORD=password)
    return env


def client_options(env: dict[str, str]) -> dict[str, object]:
    """The test's own producer/consumer, secured the same way (with the worker's code)."""
    from streamer.kafka_security import from_env

    return KafkaSecurity.client_options(from_env(lambda name: env.get(name, "")))


def order(customer: str, n: int) -> bytes:
    data = {"order_id": f"{customer}-o{n}", "total": 25.0, "currency": "USD", "margin": 10.0, "products": [{"product_id": "p", "price": 25.0, "quantity": 1, "tier": "basic"}]}
    return cloudevent(f"{customer}-e{n}", "Order Completed", f"2024-0{n + 1}-10T10:00:00Z", customer, data)


CASES = [
    pytest.param("SSL", "", True, id="mutual-tls"),
    pytest.param("SASL_PLAINTEXT", "SCRAM-SHA-256", False, id="sasl-scram-256"),
    pytest.param("SASL_SSL", "SCRAM-SHA-512", True, id="sasl-ssl-scram-512-mutual-tls"),
    pytest.param("SASL_SSL", "PLAIN", False, id="sasl-ssl-plain"),
]


@pytest.mark.parametrize(("protocol", "mechanism", "client_certificate"), CASES)
async def test_worker_scores_through_a_secured_broker(secured, pki, tmp_path: Path, protocol: str, mechanism: str, client_certificate: bool) -> None:
    tls = server_tls(pki, client_certificate) if protocol.endswith("SSL") else None
    users = {USER: PASSWORD} if protocol.startswith("SASL") else {}
    proxy = secure_broker(secured, tmp_path, tls, users)
    security = security_env(protocol, pki, mechanism, client_certificate=client_certificate)
    worker = Worker(f"127.0.0.1:{proxy.port}", worker_env(partitions=2, **security), tmp_path / "w")
    worker.workdir.mkdir()
    secured["workers"].append(worker)
    started = time.monotonic()
    worker.start(timeout_s=60)
    ready_s = time.monotonic() - started
    topics = worker.topics
    customers = [f"secure-{n}" for n in range(6)]
    async with Kafka(worker.bootstrap, [topics["customer-scores"]], **client_options(security)) as kafka:
        for customer in customers:
            await kafka.send(topics["orders"], "orders", customer.encode(), order(customer, 0))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scored = {o.doc["data"]["customer"] for o in kafka.outputs if o.doc and o.doc["data"]["cause"].get("event_id")}
            if scored >= set(customers):
                break
            await asyncio.sleep(0.2)
    assert scored >= set(customers), f"scored {sorted(scored)}:\n{worker.log_tail()}"
    # Every connection went through the secured door and passed it.
    assert len(proxy.connections) >= 3 and all(c.authenticated and not c.refused for c in proxy.connections), proxy.connections
    if users:
        assert {c.user for c in proxy.connections} == {USER} and {c.mechanism for c in proxy.connections} == {mechanism}
    if client_certificate:
        assert {c.peer_subject for c in proxy.connections} == {"commonName=clv-streamer-worker"}
    assert PASSWORD not in worker.log_path.read_text(errors="replace")
    print(f"\n{protocol} {mechanism}: {len(proxy.connections)} connections secured; ready in {ready_s:.1f}s")


@pytest.mark.parametrize(
    ("protocol", "mechanism", "change", "expected_in_log"),
    [
        pytest.param("SASL_SSL", "SCRAM-SHA-512", {"password": "wrong-password"}, "authentication", id="wrong-password"),
        pytest.param("SSL", "", {"ca": "other-ca"}, "certificate verify failed", id="untrusted-broker-certificate"),
    ],
)
async def test_worker_stays_unready_when_security_fails(secured, pki, tmp_path: Path, protocol: str, mechanism: str, change: dict, expected_in_log: str) -> None:
    """A wrong password, or a broker certificate the configured CA did not sign: the worker must
    not get data through, must say why in its log (without the password), and stay alive and
    unready rather than exit."""
    tls = server_tls(pki, client_certificate=False) if protocol.endswith("SSL") else None
    proxy = secure_broker(secured, tmp_path, tls, {USER: PASSWORD} if protocol.startswith("SASL") else {})
    security = security_env(protocol, pki, mechanism, **change)
    worker = Worker(f"127.0.0.1:{proxy.port}", worker_env(partitions=2, **security), tmp_path / "w")
    worker.workdir.mkdir()
    secured["workers"].append(worker)
    from tests.integration.test_broker_outage import launch

    launch(worker)
    statuses = await asyncio.to_thread(sample, f"{worker.url}/readyz", 20.0)
    log = worker.log_path.read_text(errors="replace")
    assert worker.process.poll() is None, f"worker exited:\n{worker.log_tail()}"
    assert http_status(f"{worker.url}/healthz") == 200
    assert all(status != 200 for _, status in statuses), statuses
    assert not any(c.authenticated and c.relayed_bytes for c in proxy.connections if proxy.users), proxy.connections
    assert expected_in_log in log.lower(), worker.log_tail()
    assert "wrong-password" not in log and PASSWORD not in log

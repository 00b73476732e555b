"""Kafka TLS / SASL settings: validated at start with clear messages, turned into the same
aiokafka options for every client, and never a password in what is logged."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from streamer import settings
from streamer.errors import ConfigError
from streamer.kafka_security import KafkaSecurity, from_env


def env_of(values: dict[str, str]):
    return lambda name: values.get(name, settings.SETTINGS_DOC[name][0])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real self-signed certificate and key (openssl), as a CA would issue them."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def test_plaintext_by_default():
    security = from_env(env_of({}))
    assert security == KafkaSecurity()
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert settings.load().security == security


def test_sasl_scram_over_tls(certificate: tuple[Path, Path]):
    cert, _key = certificate
    security = from_env(env_of({
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "clv", "KAFKA_SASL_PASSWORD": "hunter2", "KAFKA_SSL_CAFILE": str(cert),
    }))
    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("clv", "hunter2")
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "hunter2" not in security.describe() and "SCRAM-SHA-256" in security.describe()


def test_mutual_tls_loads_the_client_certificate(certificate: tuple[Path, Path]):
    cert, key = certificate
    security = from_env(env_of({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(cert), "KAFKA_SSL_CERTFILE": str(cert), "KAFKA_SSL_KEYFILE": str(key), "KAFKA_SSL_CHECK_HOSTNAME": "false"}))
    context = security.client_options()["ssl_context"]
    assert context.check_hostname is False
    assert "sasl_mechanism" not in security.client_options()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nowhere/ca.pem"}, "KAFKA_SSL_CAFILE='/nowhere/ca.pem': no such file"),
        ({"KAFKA_SSL_KEYFILE": "/etc/hostname"}, "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE"),
    ],
)
def test_bad_settings_fail_at_start_with_a_clear_message(values: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_env(env_of(values))


def test_a_file_that_is_not_a_certificate_is_refused(tmp_path: Path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS settings do not load"):
        from_env(env_of({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(bogus)}))

"""The worker hands the TLS / SASL settings to Faust in Faust's own form."""

from __future__ import annotations

import ssl

import faust

from streamer.kafka_security import KafkaSecurity
from streamer.shell.app import app, credentials


def test_faust_credentials_follow_the_protocol():
    assert credentials(KafkaSecurity()) is None
    sasl = credentials(KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="u", password="p"))
    assert isinstance(sasl, faust.SASLCredentials) and sasl.mechanism.value == "SCRAM-SHA-512" and sasl.protocol.value == "SASL_PLAINTEXT"
    sasl_tls = credentials(KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", username="u", password="p"))
    assert sasl_tls.protocol.value == "SASL_SSL" and isinstance(sasl_tls.ssl_context, ssl.SSLContext)
    tls = credentials(KafkaSecurity(protocol="SSL"))
    assert isinstance(tls, faust.SSLCredentials)
    assert app.kafka_options == {"security_protocol": "PLAINTEXT"}  # the test environment's

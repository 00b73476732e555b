"""Kafka TLS and SASL from the environment, for every client the service opens.

The Faust worker, the topic admin, the model-state reader, the recovery probe, the demo and
the replay tool all connect with :meth:`KafkaSecurity.client_options` (aiokafka keyword
arguments), so one set of variables secures them all.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streamer.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    check_hostname: bool = True

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (server verified against ``cafile`` or the system store; client
        certificate if given), or None without TLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile or None)
        context.check_hostname = self.check_hostname
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile or None)
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username, sasl_plain_password=self.password)
        return options

    def describe(self) -> str:
        """For logs: the protocol and mechanism, never the password."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}")
        if self.uses_tls:
            parts.append(f"CA {self.cafile or 'system store'}" + (", client certificate" if self.certfile else ""))
        return ", ".join(parts)


def from_env(env: Callable[[str], str]) -> KafkaSecurity:
    """Read and validate the KAFKA_* security variables (``env(name)`` gives each value)."""
    protocol = env("KAFKA_SECURITY_PROTOCOL").upper() or "PLAINTEXT"
    if protocol not in PROTOCOLS:
        raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol!r}: use one of {', '.join(PROTOCOLS)}")
    mechanism = env("KAFKA_SASL_MECHANISM").upper() or "SCRAM-SHA-512"
    if mechanism not in MECHANISMS:
        raise ConfigError(f"KAFKA_SASL_MECHANISM={mechanism!r}: use one of {', '.join(MECHANISMS)}")
    security = KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism,
        username=env("KAFKA_SASL_USERNAME"),
        password=env("KAFKA_SASL_PASSWORD"),
        cafile=env("KAFKA_SSL_CAFILE"),
        certfile=env("KAFKA_SSL_CERTFILE"),
        keyfile=env("KAFKA_SSL_KEYFILE"),
        check_hostname=env("KAFKA_SSL_CHECK_HOSTNAME").lower() not in ("0", "false", "no"),
    )
    if security.uses_sasl and not (security.username and security.password):
        raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
    if security.keyfile and not security.certfile:
        raise ConfigError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate)")
    for name, path in (("KAFKA_SSL_CAFILE", security.cafile), ("KAFKA_SSL_CERTFILE", security.certfile), ("KAFKA_SSL_KEYFILE", security.keyfile)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}={path!r}: no such file")
    if security.uses_tls:
        try:
            security.ssl_context()
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"TLS settings do not load: {exc}") from None
    return security

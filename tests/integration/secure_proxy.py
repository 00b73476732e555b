"""TLS and SASL in front of the embedded broker, for testing the service's Kafka security.

Tansu 0.6.0 cannot secure its listener here (its TLS listener never completed a handshake with
aiokafka, and SCRAM users it is told to create are not stored), so this proxy does the broker's
half of the security exchange and then relays bytes to Tansu unchanged:

- TLS with the server certificate, optionally requiring a client certificate (mutual TLS);
- SASL as Kafka brokers speak it: ``SaslHandshake`` (API key 17) then ``SaslAuthenticate``
  (36), for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802 server side);
- before authentication only ``ApiVersions`` (18) is relayed, as a Kafka broker allows.

Tansu must advertise the proxy's address, so clients reconnect through it. Every connection is
recorded (peer certificate subject, SASL user, outcome) for the test to check.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import threading
from dataclasses import dataclass, field

API_SASL_HANDSHAKE, API_API_VERSIONS, API_SASL_AUTHENTICATE = 17, 18, 36
ILLEGAL_SASL_STATE, UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 34, 33, 58
SCRAM_ITERATIONS = 4096


@dataclass
class Connection:
    """What the proxy saw of one client connection."""

    peer_subject: str | None = None
    mechanism: str | None = None
    user: str | None = None
    authenticated: bool = False
    refused: str | None = None
    relayed_bytes: int = 0


@dataclass
class SecureProxy:
    """Listen on ``port``, relay to ``upstream_port``; TLS if ``tls`` is given, SASL if ``users``."""

    upstream_port: int
    port: int
    tls: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    connections: list[Connection] = field(default_factory=list)

    def start(self) -> "SecureProxy":
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls))
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="secure-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)

    # -- one client ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection()
        self.connections.append(connection)
        peer = writer.get_extra_info("peercert")
        if peer:
            connection.peer_subject = ",".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            if self.users and not await self._authenticate(reader, writer, up_reader, up_writer, connection):
                return
            connection.authenticated = True
            await asyncio.gather(self._pipe(reader, up_writer, connection), self._pipe(up_reader, writer, None))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, connection: Connection | None) -> None:
        try:
            while True:
                chunk = await source.read(65536)
                if not chunk:
                    break
                if connection is not None:
                    connection.relayed_bytes += len(chunk)
                sink.write(chunk)
                await sink.drain()
        finally:
            sink.close()

    async def _authenticate(self, reader, writer, up_reader, up_writer, connection: Connection) -> bool:  # type: ignore[no-untyped-def]
        scram: ScramServer | None = None
        while True:
            frame = await read_frame(reader)
            api_key, api_version, correlation_id = struct.unpack(">hhi", frame[:8])
            (client_id_length,) = struct.unpack(">h", frame[8:10])
            body = frame[10 + max(client_id_length, 0):]
            if api_key == API_API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                writer.write(await read_frame(up_reader, with_size=True))
                await writer.drain()
            elif api_key == API_SASL_HANDSHAKE:
                mechanism = read_string(body)
                error = 0 if mechanism in self.mechanisms else UNSUPPORTED_SASL_MECHANISM
                connection.mechanism = mechanism
                enabled = b"".join(encode_string(m) for m in self.mechanisms)
                send_response(writer, correlation_id, struct.pack(">hi", error, len(self.mechanisms)) + enabled)
                if error:
                    connection.refused = f"mechanism {mechanism}"
                    return False
                if mechanism.startswith("SCRAM-"):
                    scram = ScramServer(mechanism, self.users)
            elif api_key == API_SASL_AUTHENTICATE and connection.mechanism:
                (length,) = struct.unpack(">i", body[:4])
                token = body[4:4 + length]
                if scram is None:  # PLAIN: authzid \0 user \0 password
                    _, user, password = token.decode().split("\0")
                    ok, reply, done = self.users.get(user) == password and bool(password), b"", True
                    connection.user = user
                else:
                    ok, reply, done = scram.step(token)
                    connection.user = scram.user
                extra = struct.pack(">q", 0) if api_version >= 1 else b""
                if not ok:
                    connection.refused = "authentication failed"
                    send_response(writer, correlation_id, struct.pack(">h", SASL_AUTHENTICATION_FAILED) + encode_string("Authentication failed") + struct.pack(">i", 0) + extra)
                    await writer.drain()
                    return False
                send_response(writer, correlation_id, struct.pack(">hh", 0, -1) + struct.pack(">i", len(reply)) + reply + extra)
                await writer.drain()
                if done:
                    return True
            else:
                connection.refused = f"API {api_key} before authentication"
                send_response(writer, correlation_id, struct.pack(">h", ILLEGAL_SASL_STATE))
                await writer.drain()
                return False


class ScramServer:
    """The server side of SCRAM (RFC 5802) for one exchange: first message, then final."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = hashlib.sha256 if mechanism == "SCRAM-SHA-256" else hashlib.sha512
        self.users = users
        self.user: str | None = None
        self.state = "first"

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash).digest()

    def step(self, token: bytes) -> tuple[bool, bytes, bool]:
        """(accepted, reply, finished)."""
        message = token.decode()
        if self.state == "first":
            bare = message.split(",", 2)[2]  # drop the GS2 header "n,,"
            attributes = dict(pair.split("=", 1) for pair in bare.split(","))
            self.user = attributes["n"]
            password = self.users.get(self.user)
            if password is None:
                return False, b"", True
            self.salt = os.urandom(16)
            self.nonce = attributes["r"] + base64.b64encode(os.urandom(18)).decode()
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={SCRAM_ITERATIONS}"
            self.client_first_bare = bare
            self.salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, SCRAM_ITERATIONS)
            self.state = "final"
            return True, self.server_first.encode(), False
        without_proof, _, proof = message.rpartition(",p=")
        if dict(pair.split("=", 1) for pair in without_proof.split(",")).get("r") != self.nonce:
            return False, b"", True
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        client_key = self._hmac(self.salted, b"Client Key")
        stored_key = self.hash(client_key).digest()
        signature = self._hmac(stored_key, auth_message)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if not hmac.compare_digest(self.hash(recovered).digest(), stored_key):
            return False, b"", True
        server_signature = self._hmac(self._hmac(self.salted, b"Server Key"), auth_message)
        return True, b"v=" + base64.b64encode(server_signature), True


async def read_frame(reader: asyncio.StreamReader, with_size: bool = False) -> bytes:
    size_bytes = await reader.readexactly(4)
    (size,) = struct.unpack(">i", size_bytes)
    frame = await reader.readexactly(size)
    return size_bytes + frame if with_size else frame


def send_response(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
    payload = struct.pack(">i", correlation_id) + body
    writer.write(struct.pack(">i", len(payload)) + payload)


def read_string(body: bytes) -> str:
    (length,) = struct.unpack(">h", body[:2])
    return body[2:2 + length].decode()


def encode_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data

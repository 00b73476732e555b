"""One exception tree for the whole package (the httpx way): catch :class:`StreamerError`
to catch everything this package raises on purpose."""

from __future__ import annotations


class StreamerError(Exception):
    """Base class of every error raised by clv-streamer."""


class ConfigError(StreamerError):
    """A setting is missing or invalid; the message names the variable and the fix."""


class BrokerError(StreamerError):
    """The embedded broker could not be found or started."""


class InvalidEvent(StreamerError):
    """An input that must go to the dead-letter topic.

    ``reason`` is a short machine-readable code (see ``schemas/README.md``), ``detail`` a
    sentence a producer team can act on.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

"""Outgoing CloudEvents: customer-scores, segment-changes and dead-letter records.

Ids of score updates and segment changes are derived from their content, so reprocessing the
same input after a crash produces the same ids and downstream services can de-duplicate.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import Any

import orjson

SOURCE = "/clv-streamer"
MAX_RAW_BYTES = 64 * 1024
#: A key longer than this is cut in dead-letter records (customer ids are short; garbage is not).
MAX_KEY_BYTES = 1024
#: ``detail`` of an Event Rejected is at most this long (event-rejected.v1 schema).
MAX_DETAIL_CHARS = 256


def rfc3339(t: float) -> str:
    """Epoch seconds -> ``2025-03-01T12:00:00.000Z``."""
    # One evaluation writes the same moment into every record it emits, twice each (the
    # envelope's time and the data's), so the last answer is kept.
    global _last_time
    if _last_time[0] == t:
        return _last_time[1]
    text = datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _last_time = (t, text)
    return text


_last_time: tuple[float | None, str] = (None, "")


def deterministic_id(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


def _envelope(type_name: str, event_id: str, time: float, subject: str, data: dict[str, Any]) -> bytes:
    # Copied to its exact size: orjson's bytes keep an ~8 KiB allocation each, and outputs
    # wait in the producer's buffer by the thousand (see CustomerState.to_bytes).
    return memoryview(orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": SOURCE,
            "type": type_name,
            "time": rfc3339(time),
            "subject": subject,
            "datacontenttype": "application/json",
            "data": data,
        }
    )).tobytes()


def rounded(scores: dict[str, float]) -> dict[str, float]:
    """Scores to 6 decimals. One evaluation's records all carry its scores: the last dict
    rounded is remembered (held, so its identity cannot be reused; never mutated once scored)."""
    global _last_rounded
    if _last_rounded[0] is scores:
        return _last_rounded[1]
    out = {k: round(v, 6) for k, v in scores.items()}
    _last_rounded = (scores, out)
    return out


_last_rounded: tuple[dict[str, float] | None, dict[str, float]] = (None, {})


def customer_scored(
    customer: str,
    as_of: float,
    cause: dict[str, str],
    scores: dict[str, float],
    inputs: dict[str, Any],
    segments: dict[str, str | None],
    model_version: str,
    drivers: list[dict[str, Any]] | None = None,
) -> bytes:
    cause_key = cause.get("event_id") or cause.get("timer")
    return _envelope(
        "Customer Scored",
        deterministic_id("score", customer, cause_key, as_of),
        as_of,
        customer,
        {
            "customer": customer,
            "model_version": model_version,
            "as_of": rfc3339(as_of),
            "cause": cause,
            "scores": rounded(scores),
            "inputs": inputs,
            "segments": segments,
            "drivers": drivers or [],
        },
    )


def segment_changed(
    customer: str, family: str, old: str | None, new: str | None, at: float, reason: str, scores: dict[str, float]
) -> bytes:
    return _envelope(
        "Segment Changed",
        deterministic_id("seg", customer, family, old, new, at),
        at,
        customer,
        {
            "customer": customer,
            "family": family,
            "from": old,
            "to": new,
            "at": rfc3339(at),
            "reason": reason,
            "scores": rounded(scores),
        },
    )


def event_rejected(
    reason: str,
    detail: str,
    raw: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    wall_now: float,
) -> bytes:
    raw = raw or b""
    kept = raw[:MAX_RAW_BYTES]
    return _envelope(
        "Event Rejected",
        deterministic_id("rej", topic, partition, offset),
        wall_now,
        # The subject would be the customer id, but a rejected record may have none (or a
        # garbage one): name the source position instead.
        _position_subject(topic, partition, offset),
        {
            "reason": reason,
            "detail": detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 1] + "\u2026",
            "source": {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "timestamp_ms": timestamp_ms,
                "key_b64": base64.b64encode(key[:MAX_KEY_BYTES]).decode() if key is not None else None,
            },
            "raw_b64": base64.b64encode(kept).decode(),
            "raw_size": len(raw),
            "raw_truncated": len(kept) < len(raw),
            "rejected_at": rfc3339(wall_now),
        },
    )


def campaign_triggered(
    customer: str,
    trigger: str,
    at: float,
    step: int | None,
    reason: str,
    channel: str,
    scores: dict[str, float],
    segments: dict[str, str | None],
) -> bytes:
    """A campaign to send. The id depends only on the customer, trigger, step and due moment,
    so a re-evaluation after a crash (or a replay) yields the same id for downstream
    de-duplication."""
    data: dict[str, Any] = {"customer": customer, "trigger": trigger}
    if step is not None:
        data["step"] = step
    data.update(at=rfc3339(at), reason=reason, scores=rounded(scores), channel=channel, segments=segments)
    return _envelope("Campaign Triggered", deterministic_id("trg", customer, trigger, step, at), at, customer, data)


#: The envelope's subject has at most this many characters (schemas/envelope.v1.schema.json).
MAX_SUBJECT_CHARS = 128


def _position_subject(topic: str, partition: int, offset: int) -> str:
    """``topic/partition/offset``, the topic cut (with an ellipsis) when Kafka's up to 249
    characters would not fit the subject; ``source.topic`` has it whole.

    >>> _position_subject("orders", 3, 1207)
    'orders/3/1207'
    >>> len(_position_subject("t" * 249, 3, 1207))
    128
    """
    position = f"/{partition}/{offset}"
    if len(topic) + len(position) <= MAX_SUBJECT_CHARS:
        return topic + position
    return topic[: MAX_SUBJECT_CHARS - len(position) - 1] + "\u2026" + position


def customer_digest(customer: str) -> str:
    """SHA-256 (hex) of a customer id: how an erased customer is named afterwards (the audit
    record, the store's erasure marker)."""
    return hashlib.sha256(customer.encode()).hexdigest()


def customer_erased(request_id: str, customer: str, found: bool, removed: list[str], wall_now: float) -> bytes:
    """Audit record of an erasure: the customer appears only as a SHA-256 of their id."""
    return _envelope(
        "Customer Erased",
        deterministic_id("erased", request_id, customer),
        wall_now,
        request_id,
        {
            "request_id": request_id,
            "customer_sha256": customer_digest(customer),
            "found": found,
            "erased_at": rfc3339(wall_now),
            "removed": removed,
        },
    )

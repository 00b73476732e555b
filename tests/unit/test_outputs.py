"""Output records keep their contracts whatever the input they come from."""

from __future__ import annotations

import orjson
import pytest
from corekit import envelope, raw

from streamer import contracts
from streamer.core import outputs
from streamer.core.config import Limits
from streamer.core.events import decode
from streamer.errors import InvalidEvent


def test_a_dead_letter_record_of_a_long_topic_keeps_its_contract():
    """Kafka allows 249-character topic names; the subject allows 128."""
    topic = "t" * 249
    doc = orjson.loads(outputs.event_rejected("bad_json", "x", b"{", topic, 1, 5, None, None, 1.7e9))
    assert contracts.first_error(doc) is None
    assert doc["subject"].endswith("\u2026/1/5") and doc["data"]["source"]["topic"] == topic


@pytest.mark.parametrize("request_id", ["r" * 129, "req\x01x"])
def test_an_erasure_request_whose_id_could_not_be_the_audit_subject_is_refused(request_id: str):
    """The audit record's subject is the request id: an id the subject cannot hold is refused
    at the input (a clear dead letter), not turned into an audit record that breaks its contract."""
    doc = envelope("Erasure Requested", "c-1", 1.7e9, {"request_id": request_id}, "er-1")
    with pytest.raises(InvalidEvent, match="schema_violation: data.request_id"):
        decode(raw(doc), "erasure-requests", b"c-1", Limits(), 1.7e9 + 60)
    audit = orjson.loads(outputs.customer_erased("r" * 128, "c-1", True, ["state"], 1.7e9))
    assert contracts.first_error(audit) is None

"""events.decode: every dead-letter reason, with its exact code, and money normalisation."""

from __future__ import annotations

import copy

import pytest
from corekit import T0, email_doc, envelope, iso, order_doc, raw, refund_doc

from streamer.core.config import DAY, Limits
from streamer.core.events import Event, decode, parse_time
from streamer.errors import InvalidEvent

WALL = T0 + 30 * DAY  # wall clock of every decode below
LIMITS = Limits()
FX = Limits(fx_rates={"USD": 1.0, "EUR": 1.1, "JPY": 0.0065})


def good_order(**kw) -> dict:
    return order_doc("cust-1", T0 + 10 * DAY, "ORD-1", **kw)


def reason_of(value: bytes | None, role: str = "orders", key: bytes | None = b"cust-1", limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode(value, role, key, limits, WALL)
    assert info.value.detail  # always a sentence for the producer
    return info.value.reason


# -- accepted input ---------------------------------------------------------------------------


def test_valid_order_decodes_to_normalised_event():
    doc = order_doc("cust-1", "2025-01-11T02:00:00+02:00", "ORD-1", total=120.0, margin=40.0, discount=15.0,
                    tiers=("basic", "advanced"), eid="evt-1")
    event = decode(raw(doc), "orders", b"cust-1", LIMITS, WALL)
    assert event == Event(
        id="evt-1",
        type="Order Completed",
        time=T0 + 10 * DAY,  # 02:00+02:00 is midnight UTC
        customer="cust-1",
        data={"order_id": "ORD-1", "total": 120.0, "margin": 40.0, "discount": 15.0, "basic": True, "advanced": True},
        source="/test/shop",
    )


def test_order_without_discount_and_one_tier():
    event = decode(raw(good_order(tiers=("advanced",))), "orders", b"cust-1", LIMITS, WALL)
    assert event.data == {"order_id": "ORD-1", "total": 100.0, "margin": 30.0, "discount": 0.0, "basic": False, "advanced": True}


def test_margin_derived_from_cost():
    event = decode(raw(good_order(margin=None, cost=62.5)), "orders", b"cust-1", LIMITS, WALL)
    assert event.data["margin"] == 37.5
    assert event.data["total"] == 100.0


def test_margin_wins_when_both_margin_and_cost_are_sent():
    event = decode(raw(good_order(margin=41.0, cost=50.0)), "orders", b"cust-1", LIMITS, WALL)
    assert event.data["margin"] == 41.0


def test_cost_above_total_gives_negative_margin():
    event = decode(raw(good_order(total=50.0, margin=None, cost=80.0)), "orders", b"cust-1", LIMITS, WALL)
    assert event.data["margin"] == -30.0


def test_fx_conversion_of_order_amounts():
    doc = good_order(total=200.0, margin=50.0, discount=20.0, currency="EUR")
    event = decode(raw(doc), "orders", b"cust-1", FX, WALL)
    assert event.data["total"] == pytest.approx(220.0, abs=1e-9)
    assert event.data["margin"] == pytest.approx(55.0, abs=1e-9)
    assert event.data["discount"] == pytest.approx(22.0, abs=1e-9)


def test_fx_conversion_of_margin_from_cost():
    doc = good_order(total=10_000.0, margin=None, cost=6_000.0, currency="JPY")
    event = decode(raw(doc), "orders", b"cust-1", FX, WALL)
    assert event.data["total"] == pytest.approx(65.0, abs=1e-9)
    assert event.data["margin"] == pytest.approx(26.0, abs=1e-9)


def test_refund_is_converted_and_reduced_to_order_and_total():
    doc = refund_doc("cust-1", T0 + 12 * DAY, "ORD-1", 30.0, "ref-1", currency="EUR")
    doc["data"]["reason"] = "damaged"
    event = decode(raw(doc), "orders", b"cust-1", FX, WALL)
    assert event.type == "Order Refunded"
    assert event.id == "ref-1"
    assert event.data == {"order_id": "ORD-1", "total": pytest.approx(33.0, abs=1e-9)}


def test_non_order_data_passes_through():
    doc = envelope("Review Posted", "cust-1", T0 + 3 * DAY, {"product_id": "p-1", "rating": 4}, "rev-1")
    event = decode(raw(doc), "community-events", b"cust-1", LIMITS, WALL)
    assert (event.type, event.customer, event.time, event.data) == ("Review Posted", "cust-1", T0 + 3 * DAY, {"product_id": "p-1", "rating": 4})


def test_time_boundaries_are_inclusive():
    at_min = order_doc("cust-1", "1990-01-01T00:00:00Z", "ORD-1")
    assert decode(raw(at_min), "orders", b"cust-1", LIMITS, WALL).time == 631_152_000.0
    at_max = order_doc("cust-1", iso(WALL + LIMITS.max_future_skew_s), "ORD-1")
    assert decode(raw(at_max), "orders", b"cust-1", LIMITS, WALL).time == WALL + LIMITS.max_future_skew_s


def test_size_limit_is_inclusive():
    body = raw(good_order())
    padded = body + b" " * (LIMITS.max_event_bytes - len(body))
    assert len(padded) == LIMITS.max_event_bytes
    assert decode(padded, "orders", b"cust-1", LIMITS, WALL).id == "evt-ORD-1"


def test_parse_time():
    assert parse_time("2025-01-01T00:00:00Z") == T0
    assert parse_time("2025-01-01T01:30:00+01:30") == T0
    with pytest.raises(ValueError):
        parse_time("2025-01-01T00:00:00")


# -- every dead-letter reason ----------------------------------------------------------------


def test_bad_json_null_payload():
    assert reason_of(None) == "bad_json"


@pytest.mark.parametrize("value", [b"", b"{", b"order completed for cust-1", b'{"a": 1,}', b"\x1f\x8b\x08\x00", b"NaN"])
def test_bad_json(value):
    assert reason_of(value) == "bad_json"


@pytest.mark.parametrize("value", [b"[]", b'[{"type": "Order Completed"}]', b'"Order Completed"', b"42", b"null", b"true"])
def test_not_an_object(value):
    assert reason_of(value) == "not_an_object"


def test_schema_violation_negative_total():
    assert reason_of(raw(good_order(total=-5.0))) == "schema_violation"


@pytest.mark.parametrize("item", [{}, 1, []])
def test_a_huge_invalid_array_is_reported_by_its_size_after_a_bounded_search(item, monkeypatch):
    """64 KB of array items, each one invalid: jsonschema's detailed pass would list every
    item's errors (87,041 for [{}] * 21,760, over a second of the worker's thread) and its
    message starts with the whole array, so the limit cut the reason off."""
    from streamer import contracts

    consumed = []
    real_best_match = contracts.best_match
    monkeypatch.setattr(contracts, "best_match", lambda errors: real_best_match(consumed.append(list(errors)) or iter(consumed[-1])))
    doc = good_order()
    doc["data"]["products"] = [item] * 20_000
    value = raw(doc)
    assert len(value) <= LIMITS.max_event_bytes
    with pytest.raises(InvalidEvent) as info:
        decode(value, "orders", b"cust-1", LIMITS, WALL)
    assert (info.value.reason, info.value.detail) == ("schema_violation", "data.products: 20000 items, at most 200")
    assert 0 < len(consumed[0]) <= contracts.MAX_ERRORS_SEARCHED


def test_a_customer_id_is_at_most_128_bytes_not_only_128_characters():
    at_limit, emoji = "c" * 128, "\U0001F600" * 128  # 128 characters each; the second is 512 bytes
    assert decode(raw(order_doc(at_limit, T0 + 10 * DAY, "ORD-1")), "orders", at_limit.encode(), LIMITS, WALL).customer == at_limit
    with pytest.raises(InvalidEvent) as info:
        decode(raw(order_doc(emoji, T0 + 10 * DAY, "ORD-1")), "orders", emoji.encode(), LIMITS, WALL)
    assert (info.value.reason, info.value.detail) == ("schema_violation", "subject: a customer id has at most 128 bytes in UTF-8, this one 512")


def test_schema_violation_unknown_data_property_names_the_path():
    doc = good_order()
    doc["data"]["totl"] = 5
    with pytest.raises(InvalidEvent) as info:
        decode(raw(doc), "orders", b"cust-1", LIMITS, WALL)
    assert info.value.reason == "schema_violation"
    assert info.value.detail.startswith("data")
    assert "totl" in info.value.detail


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["data"].pop("margin"),  # neither margin nor cost
        lambda d: d["data"].__setitem__("currency", "usd"),
        lambda d: d["data"].__setitem__("products", []),
        lambda d: d.__setitem__("time", "2025-01-11T00:00:00"),  # no offset
        lambda d: d.__setitem__("specversion", "0.3"),
        lambda d: d.pop("id"),
        lambda d: d.__setitem__("subject", "cust\x01"),
        lambda d: d.__setitem__("id", "evt\x00-1"),  # ids end up in outputs and states
        lambda d: d.__setitem__("id", "evt-1\n"),
        lambda d: d["data"].__setitem__("order_id", "ORD\x1b[31m-1"),
        lambda d: d["data"].__setitem__("order_id", "ORD-1\x85"),
    ],
)
def test_schema_violations(mutate):
    doc = good_order()
    mutate(doc)
    key = doc["subject"].encode() if isinstance(doc.get("subject"), str) else b"cust-1"
    assert reason_of(raw(doc), key=key) == "schema_violation"


def test_schema_violation_impossible_date_that_passes_the_pattern():
    with pytest.raises(InvalidEvent) as info:
        decode(raw(order_doc("cust-1", "2025-02-29T00:00:00Z", "ORD-1")), "orders", b"cust-1", LIMITS, WALL)
    assert info.value.reason == "schema_violation"
    assert info.value.detail.startswith("time:")


def test_schema_violation_refund_of_zero():
    assert reason_of(raw(refund_doc("cust-1", T0, "ORD-1", 0, "ref-1"))) == "schema_violation"


@pytest.mark.parametrize("type_name", ["Order Shipped", "order completed", "", None, 42, "Customer Scored"])
def test_unknown_type(type_name):
    doc = good_order()
    doc["type"] = type_name
    assert reason_of(raw(doc)) == "unknown_type"


def test_missing_type_is_unknown_type():
    doc = good_order()
    del doc["type"]
    assert reason_of(raw(doc)) == "unknown_type"


@pytest.mark.parametrize("subject", [None, "", "   ", 17, ["cust-1"]])
def test_missing_customer_id(subject):
    doc = good_order()
    if subject is None:
        del doc["subject"]
    else:
        doc["subject"] = subject
    assert reason_of(raw(doc)) == "missing_customer_id"


def detail_of(value: bytes, key: bytes | None = b"cust-1") -> str:
    with pytest.raises(InvalidEvent) as info:
        decode(value, "orders", key, LIMITS, WALL)
    return info.value.detail


@pytest.mark.parametrize("subject", ["\u200b", "\u202e", "\ufeff", "\u00a0", "\u2028", "\u200b\u200d\u2060", "\U000e0041", "\u3164", "\u2800", "\ue000"])
def test_a_customer_id_with_nothing_visible_is_missing(subject):
    """A zero-width space, a direction mark or a tag character alone would look like an empty
    id wherever a marketer reads it, as a blank one does."""
    doc = good_order()
    doc["subject"] = subject
    assert reason_of(raw(doc), key=subject.encode()) == "missing_customer_id"


@pytest.mark.parametrize("subject", ["é", "клиент-7", "客户-7", "alice\u200b", "👩‍💻", "\U0001fae9"])
def test_a_customer_id_with_something_visible_is_an_id(subject):
    # U+1FAE9 is newer than this Python's Unicode database (unassigned to it), and shows.
    doc = good_order()
    doc["subject"] = subject
    assert decode(raw(doc), "orders", subject.encode(), LIMITS, WALL).customer == subject


@pytest.mark.parametrize(
    "subject, said",
    [(17, "a JSON number"), (["cust-1"], "a JSON array"), (True, "a JSON boolean"), (None, "null")],
)
def test_a_customer_id_that_is_not_a_string_says_what_it_is(subject, said):
    doc = good_order()
    doc["subject"] = subject
    assert detail_of(raw(doc)).endswith(f"must be a non-empty string; it is {said}")


def test_bytes_that_are_not_utf8_are_named_as_such():
    value = raw(good_order()).replace(b'"ORD-1"', b'"ORD-\xff"')
    position = value.index(b"\xff")
    assert detail_of(value) == f"not valid UTF-8: byte 0xff at position {position}"


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda doc: doc.update(id=list(range(500))), "id: an array of 500 items is not of type 'string'"),
        (lambda doc: doc.update(source={str(i): i for i in range(100)}), "source: an object of 100 properties is not of type 'string'"),
        (
            lambda doc: doc["data"]["products"][0].update(tier="z" * 300),
            "data.products[0].tier: '" + "z" * 40 + "…' (300 characters) is not one of ['basic', 'advanced']",
        ),
    ],
)
def test_a_long_wrong_value_does_not_push_the_reason_out_of_the_message(change, reason):
    """jsonschema's messages begin with the whole value: a long one used to fill the 256
    characters of the detail before the reason was said."""
    doc = good_order()
    change(doc)
    assert detail_of(raw(doc)) == reason


def test_key_mismatch():
    assert reason_of(raw(good_order()), key=b"cust-2") == "key_mismatch"


def test_key_mismatch_when_key_is_missing():
    assert reason_of(raw(good_order()), key=None) == "key_mismatch"


def test_key_is_compared_as_utf8():
    doc = order_doc("kunde-ä", T0 + DAY, "ORD-1")
    assert decode(raw(doc), "orders", "kunde-ä".encode(), LIMITS, WALL).customer == "kunde-ä"
    assert reason_of(raw(doc), key="kunde-ä".encode("latin-1")) == "key_mismatch"


@pytest.mark.parametrize(
    ("doc", "role"),
    [
        (order_doc("cust-1", T0, "ORD-1"), "email-events"),
        (order_doc("cust-1", T0, "ORD-1"), "community-events"),
        (email_doc("cust-1", T0, "m-1"), "orders"),
        (envelope("Referral Made", "cust-1", T0, {"referral_code": "r"}, "r-1"), "email-events"),
        (envelope("Survey Answered", "cust-1", T0, {"survey_id": "s", "goal": "g"}, "s-1"), "community-events"),
    ],
)
def test_wrong_topic(doc, role):
    assert reason_of(raw(doc), role=role) == "wrong_topic"


@pytest.mark.parametrize(
    "time",
    [
        "2999-01-01T00:00:00Z",
        iso(WALL + DAY + 60),  # just beyond the one-day clock skew allowance
        "1900-01-01T00:00:00Z",
        "1989-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
    ],
)
def test_absurd_time(time):
    assert reason_of(raw(order_doc("cust-1", time, "ORD-1"))) == "absurd_value"


def test_absurd_time_respects_limits():
    doc = order_doc("cust-1", "1995-06-01T00:00:00Z", "ORD-1")
    assert reason_of(raw(doc), limits=Limits(min_event_time=T0)) == "absurd_value"
    late = order_doc("cust-1", iso(WALL + 3600), "ORD-1")
    assert reason_of(raw(late), limits=Limits(max_future_skew_s=60)) == "absurd_value"


def test_an_event_more_than_an_hour_ahead_of_the_wall_clock_is_absurd_by_default():
    """A producer stamping local time as UTC (hours ahead) would move the partition's clock
    there and fire every customer's timers early: refused, while seconds of skew are fine."""
    assert decode(raw(order_doc("cust-1", iso(WALL + 3500), "ORD-1")), "orders", b"cust-1", LIMITS, WALL).time == WALL + 3500
    assert reason_of(raw(order_doc("cust-1", iso(WALL + 3 * 3600), "ORD-1"))) == "absurd_value"


def test_absurd_margin_above_total():
    with pytest.raises(InvalidEvent) as info:
        decode(raw(good_order(total=100.0, margin=100.5)), "orders", b"cust-1", LIMITS, WALL)
    assert (info.value.reason, info.value.detail) == ("absurd_value", "margin exceeds the order total")


def test_margin_equal_to_total_is_fine():
    assert decode(raw(good_order(total=100.0, margin=100.0)), "orders", b"cust-1", LIMITS, WALL).data["margin"] == 100.0


def test_absurd_margin_loss():
    assert reason_of(raw(good_order(total=100.0, margin=-1000.5))) == "absurd_value"
    assert decode(raw(good_order(total=100.0, margin=-999.0)), "orders", b"cust-1", LIMITS, WALL).data["margin"] == -999.0


def test_oversized():
    body = raw(good_order())
    too_big = body + b" " * (LIMITS.max_event_bytes - len(body) + 1)
    assert reason_of(too_big) == "oversized"
    assert reason_of(body, limits=Limits(max_event_bytes=len(body) - 1)) == "oversized"


def test_oversized_is_checked_before_parsing():
    assert reason_of(b"x" * (LIMITS.max_event_bytes + 1)) == "oversized"


def test_unsupported_currency():
    assert reason_of(raw(good_order(currency="EUR"))) == "unsupported_currency"
    assert reason_of(raw(refund_doc("cust-1", T0, "ORD-1", 5.0, "ref-1", currency="GBP")), limits=FX) == "unsupported_currency"


# -- order of checks: the reason names the first thing to fix ---------------------------------


def test_order_of_checks():
    doc = good_order(total=-1.0, currency="EUR")
    doc["subject"] = ""
    doc["type"] = "Order Shipped"
    assert reason_of(raw(doc)) == "missing_customer_id"
    doc["subject"] = "cust-1"
    assert reason_of(raw(doc)) == "unknown_type"
    doc["type"] = "Order Completed"
    assert reason_of(raw(doc), role="email-events") == "wrong_topic"
    assert reason_of(raw(doc), key=b"other") == "schema_violation"
    doc["data"]["total"] = 1.0
    doc["data"]["products"][0]["price"] = 1.0
    doc["data"]["margin"] = 0.5
    doc["time"] = "2999-01-01T00:00:00Z"
    assert reason_of(raw(doc), key=b"other") == "key_mismatch"
    assert reason_of(raw(doc)) == "absurd_value"
    doc["time"] = iso(T0)
    assert reason_of(raw(doc)) == "unsupported_currency"
    assert decode(raw(doc), "orders", b"cust-1", FX, WALL).data["total"] == pytest.approx(1.1)


def test_decode_does_not_mutate_its_input_bytes_or_doc():
    doc = good_order(currency="EUR", margin=None, cost=20.0)
    before = copy.deepcopy(doc)
    body = raw(doc)
    decode(body, "orders", b"cust-1", FX, WALL)
    assert doc == before
    assert body == raw(before)


def test_a_control_character_in_an_id_is_named_in_the_reason():
    doc = good_order()
    doc["data"]["order_id"] = "ORD\t1"
    with pytest.raises(InvalidEvent) as info:
        decode(raw(doc), "orders", b"cust-1", LIMITS, WALL)
    assert info.value.reason == "schema_violation" and info.value.detail.startswith("data.order_id:")
    refund = envelope("Order Refunded", "cust-1", "2025-01-02T00:00:00Z", {"order_id": "ORD\x7f", "total": 5.0, "currency": "USD"}, "rf-1")
    assert reason_of(raw(refund)) == "schema_violation"

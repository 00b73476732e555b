"""Purchase days in the shop's time zone (``purchase_day_timezone``): same-day orders are one
purchase, and "same day" is the shop's calendar day, daylight saving time included."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from corekit import DAY, T0, assert_features_close, fold, order, order_doc, raw
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.config import ScoringConfig, day_function, utc_day
from streamer.core.engine import SCORES, DictStore, Engine, Record
from streamer.core.features import compute
from streamer.errors import ConfigError
from streamer.models.online import label_from_orders

NEW_YORK = ScoringConfig(purchase_day_timezone="America/New_York")
#: Zones with daylight saving time, half-hour DST (Lord Howe), quarter-hour offsets.
ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham", "America/Santiago"]
EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def calendar_day(t: float, zone: str) -> float:
    """The answer worked out the slow way: the local date, as days since 1970-01-01."""
    return float(datetime.fromtimestamp(t, ZoneInfo(zone)).date().toordinal() - EPOCH_ORDINAL)


def transitions(zone: str, year: int) -> list[float]:
    """The moments a zone's offset changes in ``year`` (found hour by hour, then bisected)."""
    tz, found = ZoneInfo(zone), []
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    offset = lambda t: datetime.fromtimestamp(t, tz).utcoffset()
    for hour in range(366 * 24):
        a, b = start + hour * 3600, start + (hour + 1) * 3600
        if offset(a) != offset(b):
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == offset(a) else (a, mid)
            found.append(b)
    return found


@pytest.mark.parametrize("zone", ZONES)
def test_days_are_the_zones_calendar_days_around_every_transition(zone: str) -> None:
    day_of = day_function(zone)
    moments = transitions(zone, 2024)
    assert moments or zone == "Asia/Kathmandu"  # the others change offset in 2024
    for moment in moments:
        for delta in (-3601, -1800, -1, -0.001, 0, 0.001, 1, 1799, 3600, 7200):
            t = moment + delta
            assert day_of(t) == calendar_day(t, zone), (zone, t)


@settings(max_examples=300, deadline=None)
@given(t=st.floats(min_value=631_152_000.0, max_value=2_000_000_000.0), zone=st.sampled_from(ZONES))
def test_days_are_the_zones_calendar_days_anywhere(t: float, zone: str) -> None:
    assert day_function(zone)(t) == calendar_day(t, zone)


def test_utc_is_the_fast_path_and_unknown_zones_are_refused() -> None:
    assert day_function("UTC") is utc_day and ScoringConfig().day_of is utc_day
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        day_function("Mars/Olympus")


# 2025-01-01 is a Wednesday; 23:40 and 00:10 UTC are 18:40 and 19:10 in New York (UTC-5).
EVENING = [order("o1", T0 - 20 * 60, 40.0, 10.0), order("o2", T0 + 10 * 60, 60.0, 20.0)]


def test_evening_orders_are_one_purchase_day_in_new_york_and_two_in_utc() -> None:
    utc, ny = compute(fold(EVENING), T0 + DAY, ScoringConfig()), compute(fold(EVENING, NEW_YORK), T0 + DAY, NEW_YORK)
    assert (utc.orders, utc.transactions, utc.repeat_transactions) == (2, 2, 1)
    assert (ny.orders, ny.transactions, ny.repeat_transactions) == (2, 1, 0)
    assert ny.revenue == utc.revenue == 100.0  # revenue adds every order up either way
    assert ny.aov == 50.0 and ny.repeat_mean_value == 0.0 and utc.repeat_mean_value == 60.0


def test_orders_across_new_yorks_midnight_are_two_days_there_and_one_in_utc() -> None:
    late = [order("o1", T0 + 4 * 3600 + 50 * 60, 40.0, 10.0), order("o2", T0 + 5 * 3600 + 10 * 60, 60.0, 20.0)]  # 23:50, 00:10 NY
    assert compute(fold(late), T0 + DAY, ScoringConfig()).transactions == 1
    assert compute(fold(late, NEW_YORK), T0 + DAY, NEW_YORK).transactions == 2


@settings(max_examples=100, deadline=None)
@given(offsets=st.lists(st.integers(0, 40 * 24 * 4), min_size=1, max_size=20), zone=st.sampled_from(ZONES))
def test_folded_orders_count_the_zones_days_like_kept_ones(offsets: list[int], zone: str) -> None:
    """Past max_orders_kept, the archive counts purchase days in the shop's zone too: a state
    that folded matches one that kept every order (orders in time order, quarter hours apart
    so days are shared often)."""
    events = [order(f"o{i:02d}", T0 + q * 900.0, 10.0 + i, 2.0) for i, q in enumerate(sorted(offsets))]
    small = ScoringConfig(max_orders_kept=3, purchase_day_timezone=zone)
    big = ScoringConfig(max_orders_kept=1000, purchase_day_timezone=zone)
    now = T0 + 45 * DAY
    folded, kept = compute(fold(events, small), now, small), compute(fold(events, big), now, big)
    assert kept.transactions == len({calendar_day(e.time, zone) for e in events})
    assert folded.transactions == kept.transactions
    assert_features_close(folded, kept, skip=("bought_basic", "bought_advanced", "purchase_days_in_loyal_window", "loyal_until"))


def test_learner_labels_count_the_shops_days() -> None:
    orders = [(T0 - 20 * 60, 40.0), (T0 + 10 * 60, 60.0), (T0 + 3 * DAY, 5.0)]
    assert label_from_orders(orders, T0 - DAY, 30 * DAY) == (3, 105.0)
    assert label_from_orders(orders, T0 - DAY, 30 * DAY, NEW_YORK.day_of) == (2, 105.0)


def lifecycle_after_evening_orders(config: ScoringConfig) -> str:
    engine, store = Engine(config=config, wall_clock=lambda: T0 + 2 * DAY), DictStore()
    scores = []
    for i, event in enumerate(EVENING):
        doc = order_doc("c1", event.time, event.data["order_id"])
        result = engine.process(Record("orders", "shop.orders", 0, i, b"c1", raw(doc)), store)
        scores += [orjson.loads(o.value) for o in result.outgoing if o.topic_role == SCORES]
    return scores[-1]["data"]["segments"]["lifecycle"]


def test_the_engine_reads_the_shops_days() -> None:
    """Two orders 30 minutes apart one New York evening: a repeat customer by UTC days, still
    new by the shop's."""
    assert lifecycle_after_evening_orders(ScoringConfig()) == "repeat"
    assert lifecycle_after_evening_orders(NEW_YORK) == "new"

"""Per-customer state and the pure update ``apply(state, event) -> state``.

State is built so that applying the same set of events in any order gives the same result
(orders are keyed by ``order_id``, refunds by event id, time fields take the max): late and
out-of-order events then need no special handling, and redelivered events change nothing.
The exception is a customer past ``max_orders_kept`` orders, whose oldest are folded into
aggregates (see ``_fold_oldest`` and ``_refund_archived``).
"""

from __future__ import annotations

import math
import sys
import threading
import zlib

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import zstandard

from streamer.core.config import ScoringConfig
from streamer.core.events import Event
from streamer.errors import InvalidEvent

STATE_VERSION = 1
#: Archived order ids remembered for de-duplication: redeliveries come soon after the
#: original, and by then at most a few orders have been archived since.
ARCHIVED_IDS_KEPT = 200

# Order record layout (a list, not a dict, to keep state small in the table).
O_TIME, O_TOTAL, O_MARGIN, O_DISCOUNT, O_FLAGS = range(5)
FLAG_BASIC, FLAG_ADVANCED = 1, 2

EMAIL_COUNTERS = {
    "Email Delivered": "delivered",
    "Email Opened": "opened",
    "Email Link Clicked": "clicked",
}
COMMUNITY_COUNTERS = {
    "Community Posted": "posts",
    "Community Replied": "replies",
    "Answer Accepted": "answers_accepted",
    "Review Posted": "reviews",
    "Referral Made": "referrals",
}


#: Stored states (the table, its changelog) are compressed against this dictionary (zstd, or
#: deflate in earlier versions): ~890 bytes of state JSON become ~260 (~225 deflated; measured
#: over the shop simulator's customers). The dictionary is a state's text with its usual keys
#: and values, so what repeats from customer to customer costs a few bits. NEVER CHANGE IT:
#: stored states can only be read with the dictionary they were written with. A new one needs
#: a new marker (and this one kept for reading).
STATE_ZDICT = (
    b'"preferences":[],"goal":"","problem":"","answers_accepted":0,"posts":0,"replies":0,"rating_sum":0,'
    b'"unsubscribed":true,"hard_bounced":true,"bounced":0,"survey_request":[0.0,0.0],"vip_welcome":[0.0,0.0],'
    b'"referral_thanks":[0.0,0.0],"advocate_invitation":[0.0,0.0],"reactivation":[0.0,0.0],"win_back":[0.0,0.0],'
    b'"upsell_advanced":[0.0,0.0],"overdue":[0.0,0.0],'
    b'"lifecycle":"new","lifecycle":"active","lifecycle":"loyal","lifecycle":"at_risk","lifecycle":"lapsed",'
    b'"value_tier":"top","value_tier":"high","value_tier":"mid","value_tier":"low",'
    b'"churn_band":"low","churn_band":"medium","churn_band":"high",'
    b'"engagement":"engaged","engagement":"passive","engagement":"dormant","advocate":null,"community":null,"goal":null,'
    b'{"customer":"","partition":0,"last_event_at":1700000000.0,"orders":{"":[1700000000.0,0.0,0.0,0.0,1]},"refunds":{},'
    b'"archive":[0,0.0,0.0,0.0,0,0.0,0.0,0.0],"archived_ids":[],'
    b'"email":{"first_at":1700000000.0,"delivered":0,"opened":0,"last_engaged_at":1700000000.0,"clicked":0},'
    b'"survey":{},"community":{"referrals":0,"last_active_at":1700000000.0,"reviews":0,"joined_at":1700000000.0},"seen":[""],'
    b'"segments":{"lifecycle":"active","value_tier":"mid","churn_band":"low","engagement":"engaged","advocate":null,"community":null,"goal":null},'
    b'"value":0.0,"risk":0.0,"next_due":1700000000.0,"scored_at":1700000000.0,'
    b'"pending":[2,1700000000.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0],'
    b'"triggers":{"onboarding":[1700000000.0,1700000000.0]},"v":1}'
)
#: First byte of a deflated state; a plain JSON one (what earlier versions stored, still
#: read) begins with "{", and a zstd one with zstd's frame magic.
DEFLATED_STATE = b"z"
_DEFLATE_LEVEL = 6  # level 1: ~15 % larger for ~3 µs less
#: A 4 KiB window and small hash tables: the dictionary (1.4 KB) and a usual state (~0.9 KB of
#: JSON) fit in the window, so the bytes are the same as with zlib's defaults (32 KiB, memLevel
#: 8-9), but the compressor needs ~50 KB instead of ~400 KB. With the worker's fixed trim
#: threshold (streamer/shell/allocator.py) glibc maps blocks of 128 KiB and more afresh on
#: every call: 58 µs a state with the defaults, 16 µs with these (measured on bench states).
#: Any window reads back: the reader's 32 KiB window covers a smaller one.
_DEFLATE_WBITS, _DEFLATE_MEMLEVEL = -12, 6

#: The stored forms (``STATE_COMPRESSION``): zstd against ``STATE_ZDICT`` (the default),
#: deflate against it (what earlier versions wrote), or plain JSON. All three read back.
CODECS = ("zstd", "deflate", "none")
#: A zstd frame begins with these bytes (RFC 8878), never "{" or "z": no marker byte needed.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Level 3 (zstd's default) with ``STATE_ZDICT`` as a raw-content dictionary, digested once:
#: ~6 µs to write a bench state (~260 bytes) and ~2.6 µs to read it, against deflate's ~16 and
#: ~4.5 µs (~228 bytes). Measured over 3,000 simulator states; a state is written and read
#: ~1.6 times an event.
_ZSTD_LEVEL = 3
#: A state is bounded (orders, refunds and ids are capped in number, ids in length: a few KB
#: usually, a few hundred KB at worst); a frame that says it holds more than this is
#: corrupt, and is refused before anything that size is allocated.
_ZSTD_MAX_STATE_BYTES = 16 * 1024 * 1024


class _ZstdCodec(threading.local):
    """zstd (de)compressors are not safe to share between threads: one pair per thread, made
    on first use there (the worker codes states on its event-loop thread only)."""

    def __init__(self) -> None:
        dictionary = zstandard.ZstdCompressionDict(STATE_ZDICT, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        dictionary.precompute_compress(level=_ZSTD_LEVEL)
        # No checksum or dictionary id (the dictionary is fixed; Kafka's record CRC covers the
        # bytes); the content size stays, so reading allocates the exact result once.
        self.compress = zstandard.ZstdCompressor(dict_data=dictionary, write_checksum=False, write_dict_id=False).compress
        self.decompress = zstandard.ZstdDecompressor(dict_data=dictionary).decompress


_zstd = _ZstdCodec()


@dataclass
class CustomerState:
    """Everything the scorer knows about one customer. JSON-serialisable, versioned."""

    customer: str
    partition: int = -1
    last_event_at: float = 0.0
    #: order_id -> [time, total, margin, discount, flags]
    orders: dict[str, list[float]] = field(default_factory=dict)
    #: order_id -> {refund event id: amount}; may name an order not seen yet (late order).
    refunds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Orders folded out of ``orders`` when more than ``max_orders_kept``:
    #: [orders, revenue, margin, discount, distinct days, first time, last time,
    #:  value of the first purchase day, latest time on the purchase day before the last one
    #:  (0: none, or a state stored before it was kept)]
    archive: list[float] = field(default_factory=lambda: [0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0])
    #: Ids of the most recently archived orders, so their redelivery is still recognised.
    archived_ids: list[str] = field(default_factory=list)
    #: What each of the last ``len(archived_left)`` archived orders (aligned with the end of
    #: ``archived_ids``) still has to refund: a refund of a folded order is capped by its own
    #: order, not only by the whole archive. Shorter than ``archived_ids`` in states stored
    #: before it was kept.
    archived_left: list[float] = field(default_factory=list)
    email: dict[str, Any] = field(default_factory=dict)
    survey: dict[str, Any] = field(default_factory=dict)
    community: dict[str, Any] = field(default_factory=dict)
    #: Recent non-order event ids, newest last, bounded (de-duplication of redeliveries).
    seen: list[str] = field(default_factory=list)
    #: Last published segment per family.
    segments: dict[str, str | None] = field(default_factory=dict)
    #: Last published formula CLV (what the partition's value-tier ranking holds).
    value: float | None = None
    #: Last published churn risk (the churn band's score): the partition's risk histogram.
    risk: float | None = None
    #: Next event time at which a segment may change with no new event (lapse, at risk...).
    next_due: float | None = None
    #: Event time of the last score update (what a timer's explanation compares with).
    scored_at: float | None = None
    #: The prediction in flight for the online learners (a Snapshot list), labelled when its
    #: horizon has passed in event time.
    pending: list[float] | None = None
    #: Campaign triggers: name -> [last fired at, latest due moment handled]; what makes a
    #: timer-driven trigger fire once per due moment and cooldowns hold across restarts.
    triggers: dict[str, list[float]] = field(default_factory=dict)
    v: int = STATE_VERSION

    def to_bytes(self, codec: str = "zstd") -> bytes:
        """The stored form: JSON compressed against ``STATE_ZDICT`` by zstd (the default) or
        deflate, or plain JSON (``codec="none"``). The result is a fresh bytes object of its
        exact size (orjson's own output keeps an ~8 KiB allocation: kept in a table, each state
        cost ~8 KB of memory)."""
        if codec == "zstd":
            # Copied to its exact size: zstd's result keeps the allocation of its worst-case
            # bound (~1 KB for a state), which stayed resident with every state in memory
            # (measured: 953 against 313 bytes a stored state).
            return memoryview(_zstd.compress(orjson.dumps(self))).tobytes()
        if codec == "deflate":
            compressor = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, _DEFLATE_WBITS, _DEFLATE_MEMLEVEL, zlib.Z_DEFAULT_STRATEGY, STATE_ZDICT)
            return DEFLATED_STATE + compressor.compress(orjson.dumps(self)) + compressor.flush()
        if codec == "none":
            return memoryview(orjson.dumps(self)).tobytes()
        raise ValueError(f"unknown state codec {codec!r}: one of {', '.join(CODECS)}")

    @classmethod
    def from_bytes(cls, raw: bytes) -> "CustomerState":
        """Read a stored state in any of the stored forms, whatever the writer's codec was."""
        if raw[:4] == ZSTD_MAGIC:
            try:
                size = zstandard.frame_content_size(raw)
                if not 0 <= size <= _ZSTD_MAX_STATE_BYTES:
                    raise ValueError(f"corrupt state: a frame of {size} bytes")
                raw = _zstd.decompress(raw)
            except zstandard.ZstdError as exc:
                raise ValueError(f"corrupt state: {exc}") from None
        elif raw[:1] == DEFLATED_STATE:
            inflate = zlib.decompressobj(-15, STATE_ZDICT)
            try:
                raw = inflate.decompress(memoryview(raw)[1:]) + inflate.flush()
            except zlib.error as exc:
                raise ValueError(f"corrupt state: {exc}") from None
            if not inflate.eof:
                raise ValueError("corrupt state: truncated")
        doc = orjson.loads(raw)
        version = doc.get("v")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported state version {version}")
        doc["customer"] = sys.intern(doc["customer"])  # see streamer.core.events.decode
        if len(doc["archive"]) == 8:  # stored before the archive kept its previous purchase day
            doc["archive"].append(0.0)
        return cls(**doc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def copy(self) -> "CustomerState":
        """A copy whose containers can be changed without touching this one.

        Cheaper than ``copy.deepcopy`` (the per-event hot path): order records are lists that
        are only ever replaced, never changed in place, so they may be shared.
        """
        return CustomerState(
            customer=self.customer,
            partition=self.partition,
            last_event_at=self.last_event_at,
            orders=dict(self.orders),
            refunds={order_id: dict(by_event) for order_id, by_event in self.refunds.items()},
            archive=list(self.archive),
            archived_ids=list(self.archived_ids),
            archived_left=list(self.archived_left),
            email=dict(self.email),
            survey=dict(self.survey),
            community=dict(self.community),
            seen=list(self.seen),
            segments=dict(self.segments),
            value=self.value,
            risk=self.risk,
            next_due=self.next_due,
            scored_at=self.scored_at,
            pending=self.pending,
            triggers={name: list(marks) for name, marks in self.triggers.items()},
            v=self.v,
        )


def event_key(event: Event) -> str:
    """What identifies an event for de-duplication: its id is unique per ``source`` only
    (CloudEvents), so two producers may both send id ``42``. A source has no whitespace
    (envelope schema), so the space keeps the pair unambiguous."""
    return f"{event.source} {event.id}"


def is_duplicate(state: CustomerState, event: Event) -> bool:
    """True when ``event`` has already been applied to ``state``.

    Keys are (source, id) pairs; states written before that kept bare ids, which still
    match here until they age out (a redelivery comes soon after the original)."""
    if event.type == "Order Completed":
        order_id = event.data["order_id"]
        return order_id in state.orders or order_id in state.archived_ids
    key = event_key(event)
    if event.type == "Order Refunded":
        by_event = state.refunds.get(event.data["order_id"], ())
        # A refund of an order already folded into the archive is remembered in ``seen``.
        return key in by_event or event.id in by_event or key in state.seen
    return key in state.seen or event.id in state.seen


def apply(state: CustomerState, event: Event, config: ScoringConfig) -> CustomerState:
    """Return the state after ``event``; ``state`` itself is not modified.

    A duplicate (same order id, same refund event id, or a recently seen event id) returns
    ``state`` unchanged, so redelivery never double counts.
    """
    if is_duplicate(state, event):
        return state
    new = state.copy()
    new.last_event_at = max(new.last_event_at, event.time)
    handler = _HANDLERS.get(event.type)
    if handler is None:
        raise ValueError(f"no state handler for {event.type!r}")
    handler(new, event, config)
    if event.type not in ("Order Completed", "Order Refunded"):  # those are keyed in orders / refunds
        _remember(new, event_key(event), config)
    return new


def _remember(state: CustomerState, key: str, config: ScoringConfig) -> None:
    state.seen.append(key)
    if len(state.seen) > config.dedup_ids_kept:
        del state.seen[: len(state.seen) - config.dedup_ids_kept]


def _order_completed(state: CustomerState, event: Event, config: ScoringConfig) -> None:
    data = event.data
    flags = (FLAG_BASIC if data["basic"] else 0) | (FLAG_ADVANCED if data["advanced"] else 0)
    state.orders[data["order_id"]] = [event.time, data["total"], data["margin"], data["discount"], flags]
    if len(state.orders) > config.max_orders_kept:
        _fold_oldest(state, config)


def _fold_oldest(state: CustomerState, config: ScoringConfig) -> None:
    """Move the oldest kept order into the archive aggregates, net of its refunds."""
    order_id = min(state.orders, key=lambda oid: (state.orders[oid][O_TIME], oid))
    order = state.orders.pop(order_id)
    refunds = state.refunds.pop(order_id, {})
    for key in refunds:  # their entry goes: a redelivery must still be known (as after the fold)
        _remember(state, key, config)
    day_of = config.day_of
    void = is_void(order, refunds)
    total, margin = net_of_refunds(order, refunds)
    state.archived_ids.append(order_id)
    state.archived_left.append(0.0 if void else max(total, 0.0))
    if len(state.archived_ids) > ARCHIVED_IDS_KEPT:
        del state.archived_ids[0]
    if len(state.archived_left) > len(state.archived_ids):
        del state.archived_left[0]
    if void:
        return  # returned: nothing to add up (its id is kept above, for de-duplication)
    arch = state.archive
    day = day_of(order[O_TIME])
    # The archive counts the distinct days of *its* orders. Folding goes oldest first, so a
    # folded order is on the archive's last day or a later one; only that last day can also
    # be a kept day, which features.compute subtracts once.
    new_day = arch[4] == 0 or day != day_of(arch[6])
    if new_day and arch[4]:
        arch[8] = arch[6]  # the archive's last day becomes its day before the last one
    arch[0] += 1
    arch[1] += total
    arch[2] += margin
    arch[3] += order[O_DISCOUNT]
    arch[4] += 1 if new_day else 0
    arch[5] = order[O_TIME] if arch[0] == 1 else min(arch[5], order[O_TIME])
    arch[6] = max(arch[6], order[O_TIME])
    if day == day_of(arch[5]):
        arch[7] += total  # the first purchase day's value (Gamma-Gamma leaves it out)


def net_of_refunds(order: list[float], refunds: dict[str, float]) -> tuple[float, float]:
    """(total, margin) of an order after its refunds; margin shrinks in proportion."""
    total = order[O_TOTAL]
    refunded = min(math.fsum(refunds.values()), total) if refunds else 0.0  # exact: any order
    if total <= 0:
        return total, order[O_MARGIN]
    share = (total - refunded) / total
    return total - refunded, order[O_MARGIN] * share


def is_void(order: list[float], refunds: dict[str, float] | None) -> bool:
    """A fully refunded order: returned, so no purchase at all (not counted as an order or a
    purchase day, not a product bought), where a partial refund only lowers its value."""
    if not refunds or order[O_TOTAL] <= 0:
        return False
    return net_of_refunds(order, refunds)[0] <= 0


def _order_refunded(state: CustomerState, event: Event, config: ScoringConfig) -> None:
    order_id, amount = event.data["order_id"], event.data["total"]
    if order_id not in state.orders and order_id in state.archived_ids:
        _refund_archived(state, order_id, amount)
        _remember(state, event_key(event), config)  # no refunds entry to keep its key in
        return
    kept = sum(map(len, state.refunds.values()))
    if kept >= config.max_refunds_kept:
        raise InvalidEvent(
            "absurd_value",
            f"the customer already has {kept} refunds on kept orders and orders not seen yet (at most {config.max_refunds_kept})",
        )
    state.refunds.setdefault(order_id, {})[event_key(event)] = amount


def _refund_archived(state: CustomerState, order_id: str, amount: float) -> None:
    """A refund of an order already folded into the archive (a customer of more than
    ``max_orders_kept`` orders): the order's margin is gone, so the refund comes off the
    archive's revenue and its margin at the archive's average margin rate. It is capped by
    what that order still had to refund (as a refund before the fold is capped by its order),
    and never takes the archive below 0. Refunded before the fold, the same order would have
    been netted exactly."""
    arch = state.archive
    taken = min(amount, max(arch[1], 0.0))
    # archived_left is aligned with the end of archived_ids (shorter in older states).
    slot = len(state.archived_left) - (len(state.archived_ids) - state.archived_ids.index(order_id))
    if slot >= 0:
        taken = min(taken, state.archived_left[slot])
        state.archived_left[slot] -= max(taken, 0.0)
    if taken <= 0:
        return
    margin_rate = arch[2] / arch[1]
    arch[1] -= taken
    arch[2] -= taken * margin_rate


def _email(state: CustomerState, event: Event, config: ScoringConfig) -> None:
    email = state.email
    # When email contact began: a recipient who has not engaged yet gets a grace period
    # before being called dormant.
    email["first_at"] = min(email.get("first_at", event.time), event.time)
    counter = EMAIL_COUNTERS.get(event.type)
    if counter:
        email[counter] = email.get(counter, 0) + 1
    if event.type in ("Email Opened", "Email Link Clicked"):
        email["last_engaged_at"] = max(email.get("last_engaged_at", 0.0), event.time)
    elif event.type == "Email Bounced":
        if event.data["bounce_type"] == "hard":
            email["hard_bounced"] = True
        else:
            email["soft_bounces"] = email.get("soft_bounces", 0) + 1
    elif event.type == "Unsubscribed":
        email["unsubscribed"] = True


def _survey(state: CustomerState, event: Event, config: ScoringConfig) -> None:
    # Newest answer wins, by event time, so a late older answer does not overwrite it.
    if event.time >= state.survey.get("at", float("-inf")):
        state.survey = {"at": event.time, **{k: event.data[k] for k in ("goal", "problem", "preferences") if k in event.data}}


def _community(state: CustomerState, event: Event, config: ScoringConfig) -> None:
    community = state.community
    if event.type == "Community Joined":
        community["joined_at"] = min(community.get("joined_at", event.time), event.time)
        return
    counter = COMMUNITY_COUNTERS[event.type]
    community[counter] = community.get(counter, 0) + 1
    if event.type == "Review Posted":
        community["rating_sum"] = community.get("rating_sum", 0) + event.data["rating"]
    community["last_active_at"] = max(community.get("last_active_at", 0.0), event.time)


_HANDLERS = {
    "Order Completed": _order_completed,
    "Order Refunded": _order_refunded,
    "Email Delivered": _email,
    "Email Opened": _email,
    "Email Link Clicked": _email,
    "Email Bounced": _email,
    "Unsubscribed": _email,
    "Survey Answered": _survey,
    "Community Joined": _community,
    "Community Posted": _community,
    "Community Replied": _community,
    "Answer Accepted": _community,
    "Review Posted": _community,
    "Referral Made": _community,
}

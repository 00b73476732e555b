"""The rules file (TOML): thresholds, horizons, segment families and campaign triggers.

One declarative place for what marketers tune; infrastructure stays in the environment
(:mod:`streamer.settings`). :func:`load` validates the whole file and reports *every* problem
with its key path, so a bad file fails at start with a message that says what to fix.
``rules.default.toml`` (shipped with the package) documents every key and parses to exactly
:class:`~streamer.core.config.ScoringConfig`'s defaults.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from streamer.core.config import TRIGGER_NAMES, GoalRule, ScoringConfig, TriggerRule, day_function, goal_words
from streamer.core.families import CHURN_SCORES, FAMILIES
from streamer.errors import ConfigError

DEFAULT_FILE = Path(__file__).with_name("rules.default.toml")
CHANNELS = ("email", "onsite", "any")


class _Problems:
    """Collects every problem of a file instead of stopping at the first."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")


def _number(p: _Problems, path: str, value: Any, low: float | None = None, high: float | None = None, integer: bool = False, open_low: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        p.add(path, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        return None
    if value != value or value in (float("inf"), float("-inf")):
        p.add(path, f"must be finite, got {value!r}")
        return None
    if low is not None and (value <= low if open_low else value < low):
        p.add(path, f"must be {'greater than' if open_low else 'at least'} {low:g}, got {value!r}")
        return None
    if high is not None and value > high:
        p.add(path, f"must be at most {high:g}, got {value!r}")
        return None
    return value


def _strings(p: _Problems, path: str, value: Any, allowed: tuple[str, ...] | None = None, empty: str | None = None) -> tuple[str, ...] | None:
    """A list of names; ``empty``: why an empty list cannot be meant (None: it may be empty)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(path, f"expected a list of non-empty strings, got {value!r}")
        return None
    if not value and empty is not None:
        p.add(path, f"is empty: {empty}")
        return None
    if allowed is not None:
        for v in value:
            if v not in allowed:
                p.add(path, f"unknown {v!r}{_hint(v, allowed)}; known: {', '.join(allowed)}")
                return None
    if len(set(value)) != len(value):
        p.add(path, "names a value twice")
        return None
    return tuple(value)


def _timezone(p: _Problems, path: str, value: Any) -> str | None:
    """An IANA time zone name the tz database knows."""
    if not isinstance(value, str) or not value:
        p.add(path, f"expected a time zone name such as 'Europe/Berlin', got {value!r}")
        return None
    try:
        day_function(value)
    except ConfigError as exc:
        p.add(path, str(exc))
        return None
    return value


def _bands(p: _Problems, path: str, value: Any, high: float | None = None) -> tuple[tuple[str, float], ...] | None:
    if not isinstance(value, dict) or not value:
        p.add(path, f"expected a table of name = lowest value, got {value!r}")
        return None
    floors = []
    for name, floor in value.items():
        number = _number(p, f"{path}.{name}", floor, 0.0, high)
        if number is None:
            return None
        floors.append((name, float(number)))
    if [f for _, f in floors] != sorted((f for _, f in floors), reverse=True) or len({f for _, f in floors}) != len(floors):
        p.add(path, "lowest values must strictly decrease, highest band first")
        return None
    if floors[-1][1] != 0.0:
        p.add(path, f"the last band ({floors[-1][0]!r}) must start at 0 so every value has a band")
        return None
    if len(floors) < 2:
        p.add(path, "needs at least two bands: with one, every customer is in it and nobody ever changes band")
        return None
    return tuple(floors)


def _hint(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _table(p: _Problems, path: str, value: Any, known: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as a table with only ``known`` keys (unknown ones are reported)."""
    if not isinstance(value, dict):
        p.add(path, f"expected a table, got {value!r}")
        return {}
    for key in value:
        if key not in known:
            p.add(f"{path}.{key}" if path else key, f"unknown key{_hint(key, known)}")
    return {k: v for k, v in value.items() if k in known}


# key -> (ScoringConfig field, checker) for the flat number settings.
Checker = Callable[[_Problems, str, Any], Any]
_SCORES: dict[str, tuple[str, Checker]] = {
    "annual_discount_rate": ("annual_discount_rate", lambda p, k, v: _number(p, k, v, 0.0, 10.0)),
    "expected_lifetime_years": ("expected_lifetime_years", lambda p, k, v: _number(p, k, v, 0.0, 100.0)),
    "prior_interval_days": ("prior_interval_days", lambda p, k, v: _number(p, k, v, 1.0)),
    "btyd_horizon_days": ("btyd_horizon_days", lambda p, k, v: _number(p, k, v, 1.0)),
    "learn_horizon_days": ("learn_horizon_days", lambda p, k, v: _number(p, k, v, 1.0)),
    "purchase_day_timezone": ("purchase_day_timezone", lambda p, k, v: _timezone(p, k, v)),
}
_LIFECYCLE: dict[str, tuple[str, Checker]] = {
    "at_risk_threshold": ("at_risk_threshold", lambda p, k, v: _number(p, k, v, 0.0, 0.999, open_low=True)),
    "lapse_days": ("lapse_days", lambda p, k, v: _number(p, k, v, 1.0)),
    "loyal_orders": ("loyal_orders", lambda p, k, v: _number(p, k, v, 1, integer=True)),
    "loyal_window_days": ("loyal_window_days", lambda p, k, v: _number(p, k, v, 1.0)),
}
_VALUE_TIER: dict[str, tuple[str, Checker]] = {
    "tiers": ("value_tiers", lambda p, k, v: _bands(p, k, v, 1.0)),
    "hysteresis": ("value_tier_hysteresis", lambda p, k, v: _number(p, k, v, 0.0, 0.5)),
    "min_population": ("value_tier_min_population", lambda p, k, v: _number(p, k, v, 1, integer=True)),
}
# Sub-rule dataclass fields: key -> checker.
_CHURN_BAND: dict[str, Checker] = {
    "scores": lambda p, k, v: _strings(p, k, v, CHURN_SCORES, empty="the churn band needs a score to band (or leave churn_band out of segments.families)"),
    "bands": lambda p, k, v: _bands(p, k, v, 1.0),
    "hysteresis": lambda p, k, v: _number(p, k, v, 0.0, 0.5),
    "recheck_days": lambda p, k, v: _number(p, k, v, 0.0, open_low=True),
}
_ENGAGEMENT: dict[str, Checker] = {
    "window_days": lambda p, k, v: _number(p, k, v, 0.0, open_low=True),
    "grace_days": lambda p, k, v: _number(p, k, v, 0.0),
}
_COMMUNITY: dict[str, Checker] = {
    "contributor_actions": lambda p, k, v: _number(p, k, v, 1, integer=True),
    "super_user_actions": lambda p, k, v: _number(p, k, v, 1, integer=True),
    "super_user_active_days": lambda p, k, v: _number(p, k, v, 0.0, open_low=True),
}
_ADVOCATE: dict[str, Checker] = {
    "referrals": lambda p, k, v: _number(p, k, v, 1, integer=True),
    "reviews": lambda p, k, v: _number(p, k, v, 1, integer=True),
}
_TRIGGER_COMMON = ("enabled", "channel", "cooldown_days")
#: Each trigger's own parameter keys.
_TRIGGER_PARAMS: dict[str, tuple[str, ...]] = {
    "onboarding": ("steps_days",),
    "upsell_advanced": ("after_days",),
    "survey_request": ("after_days",),
    "overdue": ("factor",),
    "advocate_invitation": ("value_tiers",),
}


def _flat(p: _Problems, section: str, doc: dict[str, Any], spec: dict[str, tuple[str, Checker]], out: dict[str, Any]) -> None:
    for key, value in _table(p, section, doc, tuple(spec)).items():
        field_name, check = spec[key]
        checked = check(p, f"{section}.{key}", value)
        if checked is not None:
            out[field_name] = checked


def _rule(p: _Problems, section: str, doc: Any, spec: dict[str, Checker], base: Any) -> Any:
    changes = {}
    for key, value in _table(p, section, doc, tuple(spec)).items():
        checked = spec[key](p, f"{section}.{key}", value)
        if checked is not None:
            changes[key] = checked
    return replace(base, **changes)


def _goal(p: _Problems, section: str, doc: Any, base: GoalRule) -> GoalRule:
    known = _table(p, section, doc, ("categories",))
    if "categories" not in known:
        return base
    categories = known["categories"]
    if not isinstance(categories, dict) or not categories:
        p.add(f"{section}.categories", "expected a table of segment = [keywords]")
        return base
    parsed = {}
    for name, words in categories.items():
        keywords = _strings(p, f"{section}.categories.{name}", words, empty="a category without keywords matches no goal")
        if keywords is None:
            continue
        # A goal is matched word by word: "home studio" or "mixing-desk" could never match.
        phrases = [w for w in keywords if len(goal_words(w)) != 1]
        if phrases:
            p.add(f"{section}.categories.{name}", f"keywords are single words of letters and digits; {', '.join(map(repr, phrases))} would never match")
            continue
        parsed[name] = tuple(next(iter(goal_words(w))) for w in keywords)
    if "other" in parsed:
        p.add(f"{section}.categories.other", "'other' is the segment for goals that match no category")
    return GoalRule(categories=MappingProxyType(parsed))


def _trigger(p: _Problems, name: str, doc: Any, base: TriggerRule, value_tiers: tuple[str, ...]) -> TriggerRule:
    section = f"triggers.{name}"
    params = _TRIGGER_PARAMS.get(name, ())
    known = _table(p, section, doc, _TRIGGER_COMMON + params)
    changes: dict[str, Any] = {}
    if "enabled" in known:
        if isinstance(known["enabled"], bool):
            changes["enabled"] = known["enabled"]
        else:
            p.add(f"{section}.enabled", f"expected true or false, got {known['enabled']!r}")
    if "channel" in known:
        if known["channel"] in CHANNELS:
            changes["channel"] = known["channel"]
        else:
            p.add(f"{section}.channel", f"expected one of {', '.join(CHANNELS)}, got {known['channel']!r}")
    if "cooldown_days" in known and (v := _number(p, f"{section}.cooldown_days", known["cooldown_days"], 0.0)) is not None:
        changes["cooldown_days"] = float(v)
    if "steps_days" in known:
        steps = known["steps_days"]
        if not isinstance(steps, list) or not steps:
            p.add(f"{section}.steps_days", f"expected a non-empty list of days, got {steps!r}")
        elif None not in [_number(p, f"{section}.steps_days[{i}]", s, 0.0) for i, s in enumerate(steps)]:
            if steps != sorted(set(steps)):
                p.add(f"{section}.steps_days", "steps must be in increasing order, without repeats")
            else:
                changes["days"] = tuple(float(s) for s in steps)
    if "after_days" in known and (v := _number(p, f"{section}.after_days", known["after_days"], 0.0)) is not None:
        changes["days"] = (float(v),)
    if "factor" in known and (v := _number(p, f"{section}.factor", known["factor"], 0.0, open_low=True)) is not None:
        changes["factor"] = float(v)
    if "value_tiers" in known and (tiers := _strings(p, f"{section}.value_tiers", known["value_tiers"], value_tiers, empty="nobody could be invited (or set enabled = false)")) is not None:
        changes["value_tiers"] = tiers
    return replace(base, **changes)


#: Transition triggers that read a segment family's changes: trigger -> family.
_TRIGGER_FAMILY = {"reactivation": "churn_band", "advocate_invitation": "community"}


def _check_trigger_needs(p: _Problems, triggers: dict[str, TriggerRule], families: tuple[str, ...], tiers: tuple[str, ...]) -> None:
    """What an enabled trigger needs from the rest of the file, which its own section cannot
    check: a trigger on a family that is off, or on value tiers that were renamed, would be
    valid on its own and never fire."""
    for name, family in _TRIGGER_FAMILY.items():
        rule = triggers.get(name)
        if rule is not None and rule.enabled and family not in families:
            p.add(f"triggers.{name}", f"needs the {family!r} family in segments.families (or set enabled = false)")
    rule = triggers.get("advocate_invitation")
    if rule is not None and rule.enabled and (unknown := [t for t in rule.value_tiers if t not in tiers]):
        p.add("triggers.advocate_invitation.value_tiers", f"names tiers {', '.join(map(repr, unknown))} that segments.value_tier.tiers does not have ({', '.join(tiers)})")


def parse(doc: dict[str, Any], base: ScoringConfig | None = None) -> ScoringConfig:
    """A :class:`ScoringConfig` from a parsed rules document; raises :class:`ConfigError`
    listing every problem."""
    base = base or ScoringConfig()
    p = _Problems()
    top = _table(p, "", doc, ("scores", "segments", "triggers"))
    flat: dict[str, Any] = {}
    _flat(p, "scores", top.get("scores", {}), _SCORES, flat)
    segs = _table(p, "segments", top.get("segments", {}), ("families", "lifecycle", "value_tier", *FAMILIES))
    _flat(p, "segments.lifecycle", segs.get("lifecycle", {}), _LIFECYCLE, flat)
    _flat(p, "segments.value_tier", segs.get("value_tier", {}), _VALUE_TIER, flat)
    if "families" in segs and (names := _strings(p, "segments.families", segs["families"], tuple(FAMILIES))) is not None:
        flat["families"] = names
    flat["churn_band"] = _rule(p, "segments.churn_band", segs.get("churn_band", {}), _CHURN_BAND, base.churn_band)
    flat["engagement"] = _rule(p, "segments.engagement", segs.get("engagement", {}), _ENGAGEMENT, base.engagement)
    flat["community"] = _rule(p, "segments.community", segs.get("community", {}), _COMMUNITY, base.community)
    flat["advocate"] = _rule(p, "segments.advocate", segs.get("advocate", {}), _ADVOCATE, base.advocate)
    flat["goal"] = _goal(p, "segments.goal", segs.get("goal", {}), base.goal)
    community = flat["community"]
    if community.super_user_actions < community.contributor_actions:
        p.add("segments.community.super_user_actions", "must be at least contributor_actions")
    tiers = tuple(name for name, _ in flat.get("value_tiers", base.value_tiers))
    triggers = dict(base.triggers)
    for name, trigger_doc in _table(p, "triggers", top.get("triggers", {}), TRIGGER_NAMES).items():
        triggers[name] = _trigger(p, name, trigger_doc, triggers.get(name, TriggerRule()), tiers)
    flat["triggers"] = MappingProxyType(triggers)
    _check_trigger_needs(p, triggers, flat.get("families", base.families), tiers)
    if p.lines:
        raise ConfigError("invalid rules:\n  " + "\n  ".join(p.lines))
    return replace(base, **flat)


def load(path: str | Path, base: ScoringConfig | None = None) -> ScoringConfig:
    """Read and validate a rules file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"rules file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"rules file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {path} is not valid TOML: {exc}") from None
    try:
        return parse(doc, base)
    except ConfigError as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None


def describe(config: ScoringConfig) -> list[str]:
    """What a rules file sets, one line per family and trigger, for `streamer config check`."""
    lines = [
        f"scores: discount {config.annual_discount_rate:g}/year, lifetime {config.expected_lifetime_years:g} years, "
        f"BTYD horizon {config.btyd_horizon_days:g} days, learning horizon {config.learn_horizon_days:g} days, "
        f"purchase days in {config.purchase_day_timezone}",
        f"lifecycle: at_risk at churn risk {config.at_risk_threshold:g}, lapsed after {config.lapse_days:g} days, "
        f"loyal at {config.loyal_orders} purchase days in {config.loyal_window_days:g}",
        "value_tier: " + ", ".join(f"{n} ≥ {q:g}" for n, q in config.value_tiers) + f" (hysteresis {config.value_tier_hysteresis:g})",
        "families on: " + (", ".join(config.families) or "none"),
    ]
    for name in TRIGGER_NAMES:
        rule = config.triggers.get(name)
        if rule is None or not rule.enabled:
            lines.append(f"trigger {name}: off")
            continue
        extra = ""
        if rule.days:
            extra = f", days {', '.join(f'{d:g}' for d in rule.days)}"
        if name == "overdue":
            extra = f", factor {rule.factor:g}"
        if name == "advocate_invitation":
            extra = f", tiers {', '.join(rule.value_tiers)}"
        lines.append(f"trigger {name}: on, {rule.channel}, cooldown {rule.cooldown_days:g} days{extra}")
    return lines


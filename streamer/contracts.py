"""Event contracts: JSON Schema (draft 2020-12) loading and validation.

The schemas live in ``schemas/`` (see ``schemas/README.md``); every event is a
CloudEvents 1.0 structured-mode object whose ``data`` is checked against the
schema of its ``type``. This module imports only the standard library,
``jsonschema``, ``referencing`` and ``fastjsonschema`` (the compiled check of the hot path),
so it can be used outside the Faust app.
"""

from __future__ import annotations

import functools
import json
import itertools
import math
import re
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import referencing
import referencing.exceptions
from jsonschema.exceptions import best_match
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SCHEMA_DIR",
    "INPUT_TYPES",
    "OUTPUT_TYPES",
    "TYPE_SLUGS",
    "load_registry",
    "schema_for_type",
    "validator_for_type",
    "first_error",
]

#: Folder holding ``<slug>.v<N>.schema.json``: a link to the top-level schemas/ in a checkout,
#: a copy in a wheel.
SCHEMA_DIR: Path = Path(__file__).parent / "schemas"

INPUT_TYPES: dict[str, str] = {
    "Order Completed": "orders",
    "Order Refunded": "orders",
    "Email Delivered": "email-events",
    "Email Opened": "email-events",
    "Email Link Clicked": "email-events",
    "Email Bounced": "email-events",
    "Unsubscribed": "email-events",
    "Survey Answered": "email-events",
    "Community Joined": "community-events",
    "Community Posted": "community-events",
    "Community Replied": "community-events",
    "Answer Accepted": "community-events",
    "Review Posted": "community-events",
    "Referral Made": "community-events",
    "Erasure Requested": "erasure-requests",
}
"""Input event type name -> topic role it must arrive on."""

OUTPUT_TYPES: dict[str, str] = {
    "Customer Scored": "customer-scores",
    "Segment Changed": "segment-changes",
    "Campaign Triggered": "campaign-triggers",
    "Event Rejected": "dead-letter",
    "Customer Erased": "audit",
}
"""Output event type name -> topic role it is produced to."""

TYPE_SLUGS: dict[str, str] = {
    name: name.lower().replace(" ", "-") for name in (*INPUT_TYPES, *OUTPUT_TYPES)
}
"""Event type name -> schema slug (``"Order Completed"`` -> ``"order-completed"``)."""

_URN = "urn:clv-streamer:schema:{slug}:v{version}"
_MAX_MESSAGE = 256  # fits the `detail` of an Event Rejected
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def load_registry(schema_dir: Path | None = None) -> referencing.Registry:
    """Read every ``*.schema.json`` in *schema_dir* (default `SCHEMA_DIR`) into a registry keyed by ``$id``."""
    folder = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
    resources = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        uri = contents.get("$id") if isinstance(contents, dict) else None
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"{path}: schema has no $id")
        if uri in seen:
            raise ValueError(f"{path}: duplicate $id {uri!r} (also in {seen[uri]})")
        seen[uri] = path
        resources.append((uri, DRAFT202012.create_resource(contents)))
    if not resources:
        raise FileNotFoundError(f"no *.schema.json files in {folder}")
    return referencing.Registry().with_resources(resources).crawl()


@functools.lru_cache(maxsize=1)
def _registry() -> referencing.Registry:
    """The registry of `SCHEMA_DIR`, read once."""
    return load_registry()


def _urn(type_name: str, version: int) -> str:
    return _URN.format(slug=TYPE_SLUGS[type_name], version=version)


def schema_for_type(type_name: str, version: int = 1) -> dict:
    """Return the schema document for *type_name* / *version*; `KeyError` if there is none."""
    urn = _urn(type_name, version)
    try:
        return _registry().contents(urn)
    except referencing.exceptions.NoSuchResource:
        raise KeyError(f"no schema {urn!r}") from None


@functools.lru_cache(maxsize=None)
def validator_for_type(type_name: str, version: int = 1) -> jsonschema.Draft202012Validator:
    """Return a (cached) validator for *type_name* / *version*; `KeyError` for an unknown type or version."""
    schema = schema_for_type(type_name, version)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _inline_refs(node: Any) -> Any:
    """Copy of a schema with every ``$ref`` to another schema replaced by that schema."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            target = dict(_registry().contents(node["$ref"]))
            target.pop("$id", None)
            target.pop("$schema", None)
            return _inline_refs(target)
        return {k: _inline_refs(v) for k, v in node.items() if k not in ("$id", "$schema")}
    if isinstance(node, list):
        return [_inline_refs(item) for item in node]
    return node


@functools.lru_cache(maxsize=None)
def fast_check_for_type(type_name: str, version: int = 1) -> Any:
    """A compiled checker (fastjsonschema) for the same schema: raises on invalid, ~30× faster.

    The schemas use only keywords whose meaning draft-07 and 2020-12 share, so compiling them as
    draft-07 gives the same verdicts; tests/unit/test_schemas.py checks that both agree.
    ``use_default=False``: validation must never fill defaults into the caller's document.
    """
    return fastjsonschema.compile(_inline_refs(schema_for_type(type_name, version)), use_default=False)


def _format_path(path: Any) -> str:
    """Render a jsonschema error path as ``data.products[0].price`` (``(root)`` when empty)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(root)"


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "\u2026"


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, made friendlier for anyOf-of-required and long patterns."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "anyOf" and all(
        isinstance(branch, dict) and set(branch) == {"required"} for branch in error.validator_value
    ):
        names = [name for branch in error.validator_value for name in branch["required"]]
        return "at least one of " + ", ".join(map(repr, names)) + " is required"
    if error.validator == "pattern" and isinstance(schema.get("description"), str):
        return f"{_shown(error.instance)} does not match the expected format ({schema['description']})"
    if error.validator in _SIZE_WORDS and isinstance(error.instance, (list, dict, str)):
        # jsonschema writes the whole value first ("[{}, {}, ...] is too long"): for a long
        # one the reason was cut off at the message limit. Say its size instead.
        unit, bound = _SIZE_WORDS[error.validator]
        return f"{len(error.instance)} {unit}, {bound} {error.validator_value}"
    whole = repr(error.instance)
    if error.message.startswith(whole):
        # Most of jsonschema's messages begin with the whole value ("[0, 1, ...] is not of
        # type 'string'"): a long one pushed the reason past the message limit.
        return _shown(error.instance) + error.message[len(whole):]
    return error.message


#: Longest value quoted whole in a message; a longer one is shortened (see ``_shown``).
_MAX_VALUE_SHOWN = 60


def _shown(value: Any) -> str:
    r"""A value as a message quotes it: whole when short, else named by its kind and size, with
    its beginning for a string.

    >>> _shown("abc"), _shown("x" * 300)
    ("'abc'", "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' (300 characters)")
    >>> print(_shown("\x01" * 20))  # short, but long once escaped: cut, its quotes kept whole
    '\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01…' (20 characters)
    >>> print(_shown("it's " * 60))
    "it's it's it's it's it's it's it's it's …" (300 characters)
    >>> _shown(list(range(1000)))
    'an array of 1000 items'
    """
    whole = repr(value)
    if len(whole) <= _MAX_VALUE_SHOWN:
        return whole
    if isinstance(value, str):
        keep = min(len(value), 40)
        while len(repr(value[:keep])) > 42:
            keep -= 1
        quoted = repr(value[:keep])  # with its own quotes: ' or ", whichever repr chose
        return f"{quoted[:-1]}\u2026{quoted[-1]} ({len(value)} characters)"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} properties"
    return whole[:_MAX_VALUE_SHOWN] + "\u2026"


#: Size keywords -> (what is counted, the bound's word), for short messages.
_SIZE_WORDS = {
    "maxItems": ("items", "at most"),
    "minItems": ("items", "at least"),
    "maxProperties": ("properties", "at most"),
    "minProperties": ("properties", "at least"),
    "maxLength": ("characters", "at most"),
    "minLength": ("characters", "at least"),
}
#: Errors the detailed pass looks at before it picks the best one. A crafted document can hold
#: tens of thousands of errors (every item of a 64 KB array): all of them cost over a second
#: of the worker's one thread, a few dozen cost well under a millisecond.
MAX_ERRORS_SEARCHED = 32


def _non_finite(doc: Any) -> str | None:
    """Path of the first NaN / Infinity in *doc* (Python's json module accepts them; JSON does not)."""
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{_format_path(path)}: {value!r} is not a finite JSON number"
        elif isinstance(value, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(value))))
    return None


def _version_of(doc: dict, type_name: str) -> int:
    """Schema version named by ``dataschema`` (1 when absent or not a URN of this type)."""
    dataschema = doc.get("dataschema")
    prefix = _URN.format(slug=TYPE_SLUGS[type_name], version="")
    if isinstance(dataschema, str) and dataschema.startswith(prefix):
        digits = dataschema[len(prefix):]
        if digits.isascii() and digits.isdigit() and not digits.startswith("0") and len(digits) < 6:
            return int(digits)
    return 1


def first_error(doc: dict, finite: bool = False) -> str | None:
    """Validate *doc* against the schema of ``doc["type"]`` (a known type name).

    The version comes from ``dataschema`` when it names an existing schema of this
    type, else 1 (whose schema then reports a mismatching ``dataschema``). Returns
    None when valid, else one short message (at most 256 characters) naming the
    JSON path, e.g. ``"data.total: -5 is less than the minimum of 0"``. NaN and
    Infinity anywhere in *doc* are errors too; ``finite=True`` says the caller knows there
    are none (orjson refuses them when parsing), which skips walking the document.
    """
    type_name = doc["type"]
    version = _version_of(doc, type_name)
    try:
        validator = validator_for_type(type_name, version)
    except KeyError:
        validator = validator_for_type(type_name, version := 1)
    try:
        # Hot path: the compiled check. Only an invalid document pays for jsonschema's
        # detailed, human-readable error below.
        fast_check_for_type(type_name, version)(doc)
    except fastjsonschema.JsonSchemaException:
        pass
    else:
        message = None if finite else _non_finite(doc)
        return _short(message) if message else None
    error = best_match(itertools.islice(validator.iter_errors(doc), MAX_ERRORS_SEARCHED))
    if error is not None:
        return _short(f"{_format_path(error.absolute_path)}: {_message(error)}")
    message = _non_finite(doc)
    return _short(message) if message else None

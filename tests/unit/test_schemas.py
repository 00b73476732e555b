"""Contract tests: schema files, examples, README tables and streamer.contracts."""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # allow running plain `pytest` without an installed package
    sys.path.insert(0, str(ROOT))

from streamer import contracts  # noqa: E402
from streamer.contracts import (  # noqa: E402
    INPUT_TYPES,
    OUTPUT_TYPES,
    SCHEMA_DIR,
    TYPE_SLUGS,
    first_error,
    load_registry,
    schema_for_type,
    validator_for_type,
)

EXAMPLES = SCHEMA_DIR / "examples"
INVALID = EXAMPLES / "invalid"
SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.schema.json"))
VALID_EXAMPLES = sorted(EXAMPLES.glob("*.json"))
INVALID_EXAMPLES = sorted(INVALID.glob("*.json"))
ALL_TYPES = {**INPUT_TYPES, **OUTPUT_TYPES}
SLUG_TO_TYPE = {slug: name for name, slug in TYPE_SLUGS.items()}
EXAMPLE_NAME = re.compile(r"^(?P<slug>[a-z0-9-]+)\.v(?P<version>[1-9][0-9]*)\.[a-z0-9-]+\.json$")

# What each invalid example must be rejected for (path prefix of the message).
EXPECTED_INVALID_PATHS = {
    "order-completed.v1.negative-total.json": "data.total: ",
    "order-completed.v1.missing-subject.json": "(root): 'subject'",
    "order-completed.v1.unknown-data-property.json": "data: Additional properties",
    "order-completed.v1.bad-currency.json": "data.currency: ",
    "order-completed.v1.neither-margin-nor-cost.json": "data: at least one of 'margin', 'cost'",
    "order-completed.v1.quantity-zero.json": "data.products[0].quantity: ",
    "order-completed.v1.time-without-offset.json": "time: ",
    "order-completed.v1.uppercase-extension.json": "(root): 'TraceParent'",
    "order-completed.v1.wrong-specversion.json": "specversion: ",
    "order-refunded.v1.zero-total.json": "data.total: ",
    "review-posted.v1.rating-7.json": "data.rating: ",
    "email-bounced.v1.unknown-bounce-type.json": "data.bounce_type: ",
    "survey-answered.v1.no-answers.json": "data: at least one of",
    "segment-changed.v1.from-is-number.json": "data.from: ",
    "event-rejected.v1.unknown-reason.json": "data.reason: ",
    "customer-scored.v1.missing-churn-risk.json": "data.scores: 'churn_risk'",
    "community-posted.v1.subject-with-control-char.json": "subject: ",
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# ---------------------------------------------------------------- schema files


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_ids(SCHEMA_FILES))
def test_schema_file_is_valid_2020_12_with_matching_id(path: Path) -> None:
    schema = _load(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    slug, version = path.name.removesuffix(".schema.json").rsplit(".v", 1)
    assert schema["$id"] == f"urn:clv-streamer:schema:{slug}:v{version}"
    assert schema.get("title") and schema.get("description")


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_ids(SCHEMA_FILES))
def test_type_schemas_reference_envelope_and_fix_type(path: Path) -> None:
    schema = _load(path)
    slug = path.name.split(".v")[0]
    if slug == "envelope":
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == {"specversion", "id", "source", "type", "time", "subject", "data"}
        return
    assert slug in SLUG_TO_TYPE, f"schema {path.name} has no type in contracts.TYPE_SLUGS"
    envelope_ref, own = schema["allOf"]
    assert envelope_ref == {"$ref": "urn:clv-streamer:schema:envelope:v1"}
    assert own["properties"]["type"] == {"const": SLUG_TO_TYPE[slug]}
    assert own["properties"]["data"]["additionalProperties"] is False


@pytest.mark.parametrize("type_name", sorted(ALL_TYPES))
def test_every_type_has_schema_and_example(type_name: str) -> None:
    slug = TYPE_SLUGS[type_name]
    assert (SCHEMA_DIR / f"{slug}.v1.schema.json").is_file()
    assert schema_for_type(type_name)["$id"] == f"urn:clv-streamer:schema:{slug}:v1"
    assert list(EXAMPLES.glob(f"{slug}.v1.*.json")), f"no example for {type_name}"


def test_no_schema_without_a_type() -> None:
    slugs = {p.name.split(".v")[0] for p in SCHEMA_FILES} - {"envelope"}
    assert slugs == set(TYPE_SLUGS.values())


def test_order_examples_cover_margin_cost_and_tiers() -> None:
    orders = [_load(p)["data"] for p in EXAMPLES.glob("order-completed.v1.*.json")]
    assert any("margin" in d for d in orders) and any("cost" in d for d in orders)
    tiers = {item["tier"] for d in orders for item in d["products"]}
    assert tiers == {"basic", "advanced"}


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize("path", VALID_EXAMPLES, ids=_ids(VALID_EXAMPLES))
def test_valid_example(path: Path) -> None:
    match = EXAMPLE_NAME.match(path.name)
    assert match, f"bad example file name {path.name}"
    doc = _load(path)
    assert doc["type"] == SLUG_TO_TYPE[match["slug"]]
    assert first_error(doc) is None


@pytest.mark.parametrize("path", INVALID_EXAMPLES, ids=_ids(INVALID_EXAMPLES))
def test_invalid_example(path: Path) -> None:
    match = EXAMPLE_NAME.match(path.name)
    assert match, f"bad example file name {path.name}"
    doc = _load(path)
    assert doc["type"] == SLUG_TO_TYPE[match["slug"]]
    message = first_error(doc)
    assert isinstance(message, str) and message and len(message) <= 256
    assert ": " in message  # "<json path>: <what is wrong>"
    expected = EXPECTED_INVALID_PATHS.get(path.name)
    if expected is not None:
        assert message.startswith(expected), message


def test_invalid_examples_exist() -> None:
    assert len(INVALID_EXAMPLES) >= 5
    assert set(EXPECTED_INVALID_PATHS) <= {p.name for p in INVALID_EXAMPLES}


# ---------------------------------------------------------------- README tables


def _readme_tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    slugs: dict[str, str] = {}
    topic = None
    in_outputs = False
    for line in (SCHEMA_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^Topic `([a-z-]+)`", line)
        if heading:
            topic = heading[1]
        if line.startswith("## Output events"):
            in_outputs, topic = True, None
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if in_outputs:
            row = cells[:3] if len(cells) >= 3 else []
            m = [re.fullmatch(r"`([^`]+)`(?: \(.*\))?", c) for c in row]
            if row and all(m):
                out_topic, type_name, slug = (x[1] for x in m)
                outputs[type_name], slugs[type_name] = out_topic, slug
        elif topic and len(cells) >= 2:
            m = [re.fullmatch(r"`([^`]+)`", c) for c in cells[:2]]
            if all(m):
                inputs[m[0][1]], slugs[m[0][1]] = topic, m[1][1]
    return inputs, outputs, slugs


def test_readme_tables_match_contracts() -> None:
    inputs, outputs, slugs = _readme_tables()
    assert len(inputs) == 15 and len(outputs) == 5
    assert inputs == INPUT_TYPES
    assert outputs == OUTPUT_TYPES
    assert slugs == TYPE_SLUGS


def test_envelope_type_enum_lists_every_type() -> None:
    envelope = _load(SCHEMA_DIR / "envelope.v1.schema.json")
    assert set(envelope["properties"]["type"]["enum"]) == set(ALL_TYPES)


def test_event_rejected_reasons_match_readme() -> None:
    readme = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    sentence = readme.split("`Event Rejected` data: `reason` (one of", 1)[1].split(")", 1)[0]
    reasons = re.findall(r"`([a-z_]+)`", sentence)
    schema = schema_for_type("Event Rejected")
    assert schema["allOf"][1]["properties"]["data"]["properties"]["reason"]["enum"] == reasons


# ---------------------------------------------------------------- contracts API


def test_validator_is_cached_and_unknown_type_raises() -> None:
    assert validator_for_type("Order Completed") is validator_for_type("Order Completed")
    with pytest.raises(KeyError):
        validator_for_type("Order Placed")
    with pytest.raises(KeyError):
        validator_for_type("Order Completed", 99)


def test_load_registry_from_other_folder(tmp_path: Path) -> None:
    for path in SCHEMA_FILES:
        shutil.copy(path, tmp_path / path.name)
    registry = load_registry(tmp_path)
    assert registry.contents("urn:clv-streamer:schema:envelope:v1")["title"]
    with pytest.raises(FileNotFoundError):
        load_registry(tmp_path / "nothing-here")


def test_first_error_message_format() -> None:
    doc = _load(EXAMPLES / "order-completed.v1.basic-product.json")
    doc["data"]["total"] = -5
    assert first_error(doc) == "data.total: -5 is less than the minimum of 0"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_rejected(value: float) -> None:
    doc = _load(EXAMPLES / "customer-scored.v1.after-order.json")
    doc["data"]["inputs"]["revenue"] = value  # free-form object: only the finiteness check catches it
    assert first_error(doc) == f"data.inputs.revenue: {value!r} is not a finite JSON number"
    doc = _load(EXAMPLES / "order-completed.v1.basic-product.json")
    doc["data"]["margin"] = value
    message = first_error(doc)
    assert message is not None and message.startswith("data.margin: ")


@pytest.mark.parametrize(
    "time",
    ["2025-03-01 12:00:00Z", "2025-02-30T12:00:00Z", "2025-03-01T12:00:60Z", "2025-03-01T24:00:00Z",
     "2025-03-01T12:00:00+0100", "2025-03-01t12:00:00z", "2025-03-01T12:00:00Z\n", "0000-03-01T12:00:00Z"],
)
def test_bad_times_rejected(time: str) -> None:
    doc = _load(EXAMPLES / "order-completed.v1.basic-product.json")
    doc["time"] = time
    message = first_error(doc)
    assert message is not None and message.startswith("time: ")


def test_dataschema_must_match_type_and_version() -> None:
    doc = _load(EXAMPLES / "order-completed.v1.basic-product.json")
    doc["dataschema"] = "urn:clv-streamer:schema:order-completed:v7"
    assert (first_error(doc) or "").startswith("dataschema: ")
    doc["dataschema"] = "urn:clv-streamer:schema:order-refunded:v1"
    assert (first_error(doc) or "").startswith("dataschema: ")
    del doc["dataschema"]
    assert first_error(doc) is None


def test_extensions() -> None:
    doc = _load(EXAMPLES / "order-completed.v1.basic-product.json")
    doc.update(partitionkey="cust-000123", sampled=True, sequence=42)
    assert first_error(doc) is None
    for bad in ({"trace_id": "x"}, {"averyveryverylongname1": "x"}, {"nested": {"a": 1}}, {"data_base64": "eA=="}):
        assert first_error({**doc, **bad}) is not None, bad


def test_long_messages_are_truncated() -> None:
    doc = _load(EXAMPLES / "order-completed.v1.basic-product.json")
    doc["data"] = "x" * 10_000
    message = first_error(doc)
    assert message is not None and message.startswith("data: ") and len(message) <= 256


# ---------------------------------------------------------------- property-based mutations

_VALID_DOCS = [_load(p) for p in VALID_EXAMPLES]


def _data_schema(type_name: str) -> dict:
    return schema_for_type(type_name)["allOf"][1]["properties"]["data"]


def _envelope() -> dict:
    return _load(SCHEMA_DIR / "envelope.v1.schema.json")


def _allowed_types(prop: dict) -> set[str] | None:
    """JSON types a property schema accepts, or None when it does not constrain the type."""
    if "const" in prop or "enum" in prop:
        values = prop.get("enum", [prop.get("const")])
        return {_json_type(v) for v in values}
    declared = prop.get("type")
    if declared is None:
        return None
    types = {declared} if isinstance(declared, str) else set(declared)
    if "number" in types:
        types.add("integer")
    return types


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_SAMPLES = {"null": None, "boolean": True, "integer": 7, "number": 2.5, "string": "x",
            "array": [], "object": {}}


@st.composite
def _drop_required(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(_VALID_DOCS)))
    envelope_keys = [k for k in _envelope()["required"] if k != "type"]
    data_keys = [k for k in _data_schema(doc["type"]).get("required", []) if k in doc["data"]]
    where, key = draw(st.sampled_from([("envelope", k) for k in envelope_keys] + [("data", k) for k in data_keys]))
    del (doc if where == "envelope" else doc["data"])[key]
    return doc


@st.composite
def _wrong_type(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(_VALID_DOCS)))
    envelope_props = _envelope()["properties"]
    data_props = _data_schema(doc["type"])["properties"]
    targets = [("envelope", k, envelope_props[k]) for k in doc if k in envelope_props and k != "type"]
    targets += [("data", k, data_props[k]) for k in doc["data"] if k in data_props]
    targets = [t for t in targets if _allowed_types(t[2]) is not None]
    where, key, prop = draw(st.sampled_from(targets))
    allowed = _allowed_types(prop) or set()
    wrong = sorted(t for t in _SAMPLES if t not in allowed)
    (doc if where == "envelope" else doc["data"])[key] = copy.deepcopy(_SAMPLES[draw(st.sampled_from(wrong))])
    return doc


@st.composite
def _unknown_data_key(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(_VALID_DOCS)))
    known = set(_data_schema(doc["type"])["properties"])
    key = draw(st.text(min_size=1, max_size=30).filter(lambda k: k not in known))
    doc["data"][key] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5)))
    return doc


@st.composite
def _bad_extension_name(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(_VALID_DOCS)))
    known = set(_envelope()["properties"])
    key = draw(st.text(min_size=1, max_size=30).filter(
        lambda k: k not in known and not re.fullmatch(r"[a-z0-9]{1,20}", k)))
    doc[key] = "x"
    return doc


_settings = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(_drop_required())
def test_dropping_a_required_key_is_reported(doc: dict) -> None:
    assert first_error(doc)


@_settings
@given(_wrong_type())
def test_wrong_type_is_reported(doc: dict) -> None:
    assert first_error(doc)


@_settings
@given(_unknown_data_key())
def test_unknown_data_property_is_reported(doc: dict) -> None:
    assert first_error(doc)


@_settings
@given(_bad_extension_name())
def test_bad_extension_name_is_reported(doc: dict) -> None:
    assert first_error(doc)


def test_module_has_no_faust_import() -> None:
    source = Path(contracts.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+faust", source, re.M)


def _verdicts(doc: dict) -> tuple[bool, bool]:
    """(compiled fast check says valid, jsonschema says valid) for *doc*."""
    import fastjsonschema

    try:
        contracts.fast_check_for_type(doc["type"])(doc)
        fast = True
    except fastjsonschema.JsonSchemaException:
        fast = False
    slow = contracts.validator_for_type(doc["type"]).is_valid(doc)
    return fast, slow


def _example_docs() -> list[dict]:
    return [json.loads(p.read_text()) for p in (*VALID_EXAMPLES, *INVALID_EXAMPLES)]


@pytest.mark.parametrize("doc", _example_docs(), ids=_ids([*VALID_EXAMPLES, *INVALID_EXAMPLES]))
def test_fast_check_agrees_with_jsonschema_on_examples(doc: dict) -> None:
    if doc.get("type") not in ALL_TYPES:
        pytest.fail("every example names a known type")
    fast, slow = _verdicts(doc)
    assert fast == slow


@_settings
@given(st.one_of(_drop_required(), _wrong_type(), _unknown_data_key(), _bad_extension_name(), st.sampled_from(_VALID_DOCS)))
def test_fast_check_agrees_with_jsonschema_on_mutations(doc: dict) -> None:
    fast, slow = _verdicts(doc)
    assert fast == slow


def test_fast_check_never_fills_defaults() -> None:
    doc = json.loads(next(p for p in VALID_EXAMPLES if p.name.startswith("order-completed")).read_text())
    doc["data"].pop("discount", None)
    before = copy.deepcopy(doc)
    assert first_error(doc) is None
    assert doc == before


def test_schemas_are_found_inside_the_package() -> None:
    # An installed wheel has no top-level schemas/: the package carries them (pyproject
    # package-data over the streamer/schemas link), and contracts looks there.
    assert contracts.SCHEMA_DIR == Path(contracts.__file__).parent / "schemas"
    names = {p.name for p in contracts.SCHEMA_DIR.glob("*.schema.json")}
    assert "order-completed.v1.schema.json" in names and len(names) == 21

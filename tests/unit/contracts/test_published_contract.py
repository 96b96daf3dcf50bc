"""docs/ is the contract partners build on: current, complete, compatible, PHI-free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops import contracts
from shared.topics import ALL

# Field names that could only hold personal or clinical detail.
PHI_NAMES = ("name", "email", "phone", "contact", "note", "score", "phq", "gad", "reason", "text")
SAFE_STRING_FORMATS = {"uuid", "date-time", "date"}


@pytest.fixture(scope="module")
def generated() -> dict[Path, str]:
    return dict(contracts.generated_files())


def test_committed_docs_are_current(generated: dict[Path, str]) -> None:
    stale = [
        str(path.relative_to(contracts.ROOT))
        for path, text in generated.items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `make docs`: stale {stale}"
    readme = contracts.README.read_text()
    table = contracts.flow_table(contracts.service_brokers())
    assert contracts.readme_with_flow(readme, table) == readme, "run `make docs`: README flow"


def test_no_breaking_change_against_the_committed_schemas() -> None:
    assert contracts.breaks_against_committed() == {}


def test_asyncapi_lists_every_topic_with_a_non_empty_payload_schema(
    generated: dict[Path, str],
) -> None:
    document = json.loads(generated[contracts.ASYNCAPI_PATH])
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {topic.name for topic in ALL} <= addresses
    for message in document["components"]["messages"].values():
        ref = message["payload"].get("$ref", "")
        payload = (
            document["components"]["schemas"][ref.split("/")[-1]] if ref else message["payload"]
        )
        assert payload.get("properties"), f"{message['title']} has an empty payload schema"


def _string_leaves(schema: dict[str, Any], node: dict[str, Any], path: str) -> list[str]:
    node = contracts._resolve(schema, node)
    found = []
    for option in node.get("anyOf", []):
        found += _string_leaves(schema, option, path)
    for name, child in node.get("properties", {}).items():
        if any(word in name.lower() for word in PHI_NAMES):
            found.append(f"{path}{name}: name suggests PHI")
        found += _string_leaves(schema, child, f"{path}{name}.")
    if isinstance(node.get("items"), dict):
        found += _string_leaves(schema, node["items"], f"{path}[].")
    if node.get("type") == "string" and not (
        node.get("format") in SAFE_STRING_FORMATS or "enum" in node or "pattern" in node
    ):
        found.append(f"{path.rstrip('.')}: free text")
    return found


@pytest.mark.parametrize("topic", [t for t in ALL if t.public], ids=lambda t: t.name)
def test_public_topic_schemas_have_no_field_that_can_hold_phi(topic: Any) -> None:
    schema = contracts.event_schema(topic)
    assert _string_leaves(schema, schema, "") == []


def test_the_phi_check_would_catch_a_free_text_field() -> None:
    schema = contracts.event_schema(
        next(t for t in ALL if t.name.startswith("intake.consultation"))
    )
    assert _string_leaves(schema, schema, "")


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def test_compatibility_check_flags_removed_narrowed_and_newly_required_fields() -> None:
    old = _schema(
        {"a": {"type": "string"}, "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}, ["a"]
    )
    assert contracts.breaking_changes(old, _schema({"b": {"type": "integer"}}, [])) == [
        "a: field removed or renamed",
        "b: type narrowed, no longer ['null']",
    ]
    new_required = _schema({**old["properties"], "c": {"type": "string"}}, ["a", "c"])
    assert contracts.breaking_changes(old, new_required) == ["c: new required field"]


def test_compatibility_check_accepts_a_new_optional_field() -> None:
    old = _schema({"a": {"type": "string"}}, ["a"])
    new = _schema({"a": {"type": "string"}, "b": {"type": "string"}}, ["a"])
    assert contracts.breaking_changes(old, new) == []

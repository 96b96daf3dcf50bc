"""The published contract, generated from code: AsyncAPI, JSON Schemas, event flow.

`python -m ops.contracts` (make docs) rewrites docs/; it refuses a change that
would break partners inside a major version (see `breaking_changes`).
tests/unit/contracts check that docs/ is current and that no break slipped in.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from chassis import retention
from shared.topics import ALL, Topic

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ASYNCAPI_PATH = DOCS / "asyncapi.json"
WEBHOOKS_OPENAPI_PATH = ROOT / "docs" / "webhooks-openapi.json"
SCHEMAS_DIR = DOCS / "schemas"
README = ROOT / "README.md"
FLOW_START, FLOW_END = "<!-- event-flow:start -->", "<!-- event-flow:end -->"
RETENTION_START, RETENTION_END = "<!-- redis-retention:start -->", "<!-- redis-retention:end -->"

SERVICES = ("intake", "scheduler", "notifier", "webhooks")


DOCUMENTED_SERVER = "127.0.0.1:9092"


def service_brokers() -> dict[str, KafkaBroker]:
    """Each service's broker, as its composition root builds it (nothing connects)."""
    from services.intake.config import Settings as IntakeSettings
    from services.intake.main import create_app as intake
    from services.notifier.config import Settings as NotifierSettings
    from services.notifier.main import create_app as notifier
    from services.scheduler.config import Settings as SchedulerSettings
    from services.scheduler.main import create_app as scheduler
    from services.webhooks.config import Settings as WebhooksSettings
    from services.webhooks.main import create_app as webhooks

    # The committed document names the local default server, whatever KAFKA_BOOTSTRAP_SERVERS
    # the generating shell (or a test session on other ports) has: it must not change with it.
    server = {"KAFKA_BOOTSTRAP_SERVERS": DOCUMENTED_SERVER}
    apps = {
        "intake": intake(IntakeSettings(**server)),  # type: ignore[arg-type]
        "scheduler": scheduler(SchedulerSettings(**server)),  # type: ignore[arg-type]
        "notifier": notifier(NotifierSettings(**server)),  # type: ignore[arg-type]
        "webhooks": webhooks(WebhooksSettings(**server)),  # type: ignore[arg-type]
    }
    return {name: app.state.runtime.broker for name, app in apps.items()}


def asyncapi(brokers: dict[str, KafkaBroker]) -> dict[str, Any]:
    spec = AsyncAPI(
        *brokers.values(),
        title="KAP platform events",
        version="1.0.0",
        description=(
            "Domain events of the KAP client lifecycle. Every message is keyed by client id "
            "and carries CloudEvents 1.0 attributes as Kafka headers (binary mode): ce_id, "
            "ce_source, ce_type, ce_specversion, ce_time, ce_subject (client id), plus the "
            "extensions ce_clinicid, ce_correlationid and ce_causationid. Topics under "
            "'public.' are for partners and carry no PHI; their events also carry "
            "ce_clientsequence (1, 2, 3... per client across the public topics)."
        ),
        schema_version="3.0.0",
    ).to_specification()
    document: dict[str, Any] = json.loads(spec.to_json())
    return document


def event_schema(topic: Topic) -> dict[str, Any]:
    schema = topic.event.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://kap.example/schemas/{topic.name}.json",
        "title": topic.event.__name__,
        "description": topic.description,
        "x-topic": topic.name,
        "x-public": topic.public,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def consumers(brokers: dict[str, KafkaBroker]) -> dict[str, list[str]]:
    """Which services subscribe to each topic, read from their brokers."""
    found: dict[str, list[str]] = {}
    for service, broker in brokers.items():
        for subscriber in broker.subscribers:
            for topic in getattr(subscriber, "topics", ()):
                name = str(getattr(topic, "name", topic))
                found.setdefault(name, []).append(service)
    return found


def flow_table(brokers: dict[str, KafkaBroker]) -> str:
    consumed = consumers(brokers)
    rows = ["| topic | producer | consumers | event |", "|---|---|---|---|"]
    for topic in ALL:
        readers = ", ".join(
            [*sorted(set(consumed.get(topic.name, []))), *(["partners"] if topic.public else [])]
        )
        schema = f"[{topic.event.__name__}](docs/schemas/{topic.name}.json)"
        rows.append(f"| `{topic.name}` | {', '.join(topic.producers)} | {readers} | {schema} |")
    return "\n".join(rows)


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generated_files(brokers: dict[str, KafkaBroker] | None = None) -> Iterator[tuple[Path, str]]:
    brokers = brokers or service_brokers()
    yield ASYNCAPI_PATH, _dump(asyncapi(brokers))
    yield WEBHOOKS_OPENAPI_PATH, _dump(webhooks_openapi())
    for topic in ALL:
        yield SCHEMAS_DIR / f"{topic.name}.json", _dump(event_schema(topic))


def webhooks_openapi() -> dict[str, Any]:
    """The webhook service's HTTP API (partners' admin and delivery log), for partners."""
    from services.webhooks.config import Settings
    from services.webhooks.main import create_app

    app = create_app(Settings(KAFKA_BOOTSTRAP_SERVERS=DOCUMENTED_SERVER))
    return app.openapi()


def readme_with_flow(readme: str, table: str) -> str:
    return _between(readme, FLOW_START, FLOW_END, table)


def readme_with_retention(readme: str) -> str:
    """The README's Redis keys section, from the one table (chassis/retention.py)."""
    return _between(readme, RETENTION_START, RETENTION_END, retention.markdown())


def _between(readme: str, start: str, end: str, table: str) -> str:
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{table}\n{end}{tail}"


# --- compatibility -----------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return node


def _types(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    node = _resolve(schema, node)
    if "anyOf" in node:
        return set().union(*(_types(schema, option) for option in node["anyOf"]))
    kind = node.get("type", "any")
    return set(kind) if isinstance(kind, list) else {kind}


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    path: str = "",
    old_root: dict[str, Any] | None = None,
    new_root: dict[str, Any] | None = None,
) -> list[str]:
    """What a reader of `old` would trip over in `new`: a removed or renamed field,
    a narrowed type, a new required field, a removed enum value."""
    old_root, new_root = old_root or old, new_root or new
    old, new = _resolve(old_root, old), _resolve(new_root, new)
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{path}{name}: field removed or renamed")
    for name in set(new.get("required", [])) - set(old.get("required", [])):
        problems.append(f"{path}{name}: new required field")
    for name, old_field in old_props.items():
        if name not in new_props:
            continue
        new_field = new_props[name]
        lost = _types(old_root, old_field) - _types(new_root, new_field)
        if lost and "any" not in _types(new_root, new_field):
            problems.append(f"{path}{name}: type narrowed, no longer {sorted(lost)}")
        old_enum = set(_resolve(old_root, old_field).get("enum", []))
        new_enum = set(_resolve(new_root, new_field).get("enum", []))
        if old_enum and new_enum and old_enum - new_enum:
            problems.append(f"{path}{name}: enum values removed {sorted(old_enum - new_enum)}")
        problems += breaking_changes(old_field, new_field, f"{path}{name}.", old_root, new_root)
        old_items, new_items = old_field.get("items"), new_field.get("items")
        if isinstance(old_items, dict) and isinstance(new_items, dict):
            problems += breaking_changes(
                old_items, new_items, f"{path}{name}[].", old_root, new_root
            )
    return problems


def breaks_against_committed() -> dict[str, list[str]]:
    found = {}
    for topic in ALL:
        committed = SCHEMAS_DIR / f"{topic.name}.json"
        if committed.exists():
            problems = breaking_changes(json.loads(committed.read_text()), event_schema(topic))
            if problems:
                found[topic.name] = problems
    return found


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--allow-breaking", action="store_true", help="only with a new major topic")
    options = args.parse_args(argv)
    breaks = breaks_against_committed()
    if breaks and not options.allow_breaking:
        for topic, problems in breaks.items():
            print(f"breaking change in {topic}: " + "; ".join(problems), file=sys.stderr)
        print("add a new major version topic instead (see README, Events)", file=sys.stderr)
        return 1
    brokers = service_brokers()
    SCHEMAS_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in generated_files(brokers):
        path.write_text(text)
    README.write_text(
        readme_with_retention(readme_with_flow(README.read_text(), flow_table(brokers)))
    )
    print(f"wrote {ASYNCAPI_PATH.relative_to(ROOT)}, {len(ALL)} schemas, README event flow")
    return 0


if __name__ == "__main__":
    sys.exit(main())

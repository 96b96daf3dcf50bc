"""kapctl: the operator's command line for a KAP deployment.

Every command talks to Kafka (and the clinics file), `outcomes` to the
scheduler's HTTP API, `partners` to the webhook service's admin API; none
needs a service's code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from chassis.clinic_registry import (
    ClinicRefused,
    checked_clinic,
    read_registry,
    registry_producer,
    write_clinic,
)
from chassis.clinics import hash_api_key
from chassis.config import ServiceSettings
from chassis.kafka import apply_topics, client_options, configured_topics
from ops import audit, export, operations, outcomes, rebuild
from ops.clinic_registry import SECTION_CHECKS
from ops.reading import MissingTopics
from shared.topics import ALL, RECORD_TOPICS


def _bootstrap(args: argparse.Namespace) -> str:
    return str(args.bootstrap or ServiceSettings().kafka_bootstrap_servers)


def _security() -> dict[str, Any]:
    """The services' own Kafka login and TLS (KAFKA_SECURITY_PROTOCOL and the rest)."""
    return client_options(ServiceSettings())


def _topics_apply(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    replication = args.replication_factor or settings.topic_replication_factor
    # Sized as the services would create them (KAP_TOPIC_PARTITIONS, retention).
    topics = configured_topics(settings)
    created = asyncio.run(apply_topics(_bootstrap(args), replication, topics, _security()))
    present = 2 * len(ALL) + len(RECORD_TOPICS) - len(created)
    print(f"{len(created)} topic(s) created, {present} already present")
    for name in created:
        print(f"  + {name}")
    return 0


def _topics_list(_: argparse.Namespace) -> int:
    width = max(len(t.name) for t in ALL)
    for topic in configured_topics(ServiceSettings()):
        name, producer = f"{topic.name:<{width}}", f"{','.join(topic.producers):<9}"
        print(f"{name}  {topic.partitions:>2}p  {producer}  {topic.description}")
    return 0


def _lag(args: argparse.Namespace) -> int:
    lags = asyncio.run(
        operations.consumer_lag(
            _bootstrap(args),
            args.group or operations.OPERATED_GROUPS,
            security=_security(),
        )
    )
    if args.json:
        print(json.dumps([{**vars(lag), "lag": lag.behind} for lag in lags]))
        return 0
    print(f"{'group':<15} {'topic':<42} {'part':>4} {'committed':>9} {'end':>9} {'lag':>6}")
    for lag in lags:
        if lag.behind or args.all:
            print(
                f"{lag.group:<15} {lag.topic:<42} {lag.partition:>4} "
                f"{lag.committed:>9} {lag.end:>9} {lag.behind:>6}"
            )
    total = sum(lag.behind for lag in lags)
    print(f"total lag: {total} message(s) across {len(lags)} partition(s)")
    return 0


def _dlq_list(args: argparse.Namespace) -> int:
    letters = asyncio.run(
        operations.dead_letters(_bootstrap(args), args.topic, security=_security())
    )
    for letter in letters[-args.limit :]:
        print(json.dumps(letter.summary()))
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


def _dlq_replay(args: argparse.Namespace) -> int:
    replayed = asyncio.run(
        operations.replay_dead_letters(
            _bootstrap(args), args.topic, args.client or (), security=_security()
        )
    )
    print(f"replayed {replayed} dead letter(s) to their topics")
    return 0


def _timeline(args: argparse.Namespace) -> int:
    journal = asyncio.run(
        audit.read_journal(_bootstrap(args), [args.client_id], security=_security())
    )
    for record in journal.timeline(args.client_id):
        print(f"{record.time}  {record.topic:<42} {record.id}")
    return 0


def _export(args: argparse.Namespace) -> int:
    history = asyncio.run(
        export.client_history(_bootstrap(args), args.client_id, security=_security())
    )
    text = json.dumps(history, indent=2, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"{len(history['events'])} event(s) of {args.client_id} written to {args.out}")
    else:
        print(text)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    try:
        counts = asyncio.run(
            rebuild.rebuild_service(
                args.service,
                args.redis,
                clinic=args.clinic,
                force=args.force,
                follow=args.until_caught_up,
            )
        )
    except (rebuild.TargetNotEmpty, MissingTopics, NotImplementedError) as error:
        print(f"kapctl: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"service": args.service, **counts.summary()}, indent=2))
    return 0


def _audit(args: argparse.Namespace) -> int:
    since = datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    journal = asyncio.run(
        audit.read_journal(
            _bootstrap(args),
            args.client or None,
            clinics=args.clinic or (),
            since=since,
            security=_security(),
        )
    )
    clinics_file = args.clinics_file or ServiceSettings().clinics_file
    findings = audit.audit_topics(
        journal,
        maildir=Path(args.maildir) if args.maildir else None,
        sms_log=Path(args.sms_log) if args.sms_log else None,
        clinics_file=Path(clinics_file) if clinics_file else None,
    )
    counts = audit.summary_of(findings)
    # A sink not given is not checked: leave its counts out rather than print a zero.
    unchecked = ("mail",) * (not args.maildir) + ("sms",) * (not args.sms_log)
    for sink in unchecked:
        del counts[f"{sink}_resends"], counts[f"{sink}_mismatches"]
    clients = len({r.key for r in journal.records})
    print(f"audited {len(journal.records)} event(s) of {clients} client(s)", file=sys.stderr)
    if args.detail:
        for name, n in sorted(findings.detail.items()):
            print(f"  {name}: {n}", file=sys.stderr)
    print("AUDIT " + json.dumps(counts, sort_keys=True))
    failing = findings.failures()
    if failing:
        print(f"kapctl: audit found {json.dumps(failing, sort_keys=True)}", file=sys.stderr)
    return 1 if failing else 0


def _outcomes(args: argparse.Namespace) -> int:
    keys = args.api_key or [os.environ.get("KAP_API_KEY", "")]
    if len(keys) not in (1, len(args.clinic)) or not all(keys):
        raise ValueError("give one --api-key for every --clinic, or one for all ($KAP_API_KEY)")
    keys = keys * len(args.clinic) if len(keys) == 1 else keys
    by_clinic = dict(zip(args.clinic, keys, strict=True))

    async def fetch_all() -> dict[str, dict[str, object]]:
        return {c: await outcomes.fetch_outcomes(args.url, c, k) for c, k in by_clinic.items()}

    found = asyncio.run(fetch_all())
    if args.json:
        print(json.dumps(found))
    else:
        for table in found.values():
            print("\n".join(outcomes.table_lines(table)), end="\n\n")
    chart = outcomes.write_chart(found, Path(args.chart))
    print(f"chart: {chart}", file=sys.stderr)
    return 0


def _clinics_upsert(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    clinic: dict[str, Any] = {"id": args.id}
    for field in ("name", "timezone", "staff_email"):
        if getattr(args, field):
            clinic[field] = getattr(args, field)
    for given in (args.section_file, args.entry):
        if given:
            clinic.update(json.loads(Path(given).read_text()))
    if args.file or (settings.clinics_source == "file" and not args.registry):
        path = Path(args.file or settings.clinics_file)
        # Checked before the file is written: never leave one the services would reject.
        action = operations.upsert_clinic(
            path, clinic, args.api_key, check=lambda entry: checked_clinic(entry, SECTION_CHECKS)
        )
        print(f"clinic {args.id} {action} in {path}")
        return 0

    async def upsert() -> str:
        topic = args.topic or settings.clinics_topic
        found = await read_registry(_bootstrap(args), topic, security=_security())
        current = found.get(args.id)
        live = current is not None and not current.retired
        entry = {**(current.config if live and current else {}), **clinic}
        if args.api_key:
            entry["api_key_sha256"] = hash_api_key(args.api_key)
        async with registry_producer(_bootstrap(args), _security()) as send:
            await write_clinic(send, entry, SECTION_CHECKS, _actor(), registry=topic)
        return "updated" if live else "added"

    print(f"clinic {args.id} {asyncio.run(upsert())} in the registry")
    return 0


def _clinics_import(args: argparse.Namespace) -> int:
    """Every clinic of a clinics file into the registry: all checked before any is written."""
    settings = ServiceSettings()
    entries = json.loads(Path(args.file).read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{args.file}: a clinics file is a JSON list of clinics")
    for n, entry in enumerate(entries):
        try:
            checked_clinic(entry, SECTION_CHECKS)
        except ClinicRefused as refused:
            raise ValueError(f"{args.file}: clinic #{n} ({entry.get('id')!r}): {refused}") from None

    async def publish() -> None:
        topic = args.topic or settings.clinics_topic
        async with registry_producer(_bootstrap(args), _security()) as send:
            for entry in entries:
                await write_clinic(send, entry, SECTION_CHECKS, _actor(), registry=topic)

    asyncio.run(publish())
    print(f"{len(entries)} clinic(s) imported into the registry")
    return 0


def _clinics_retire(args: argparse.Namespace) -> int:
    settings = ServiceSettings()

    async def retire() -> None:
        async with registry_producer(_bootstrap(args), _security()) as send:
            await write_clinic(
                send,
                {"id": args.id},
                SECTION_CHECKS,
                _actor(),
                registry=args.topic or settings.clinics_topic,
                retired=True,
            )

    asyncio.run(retire())
    print(f"clinic {args.id} retired in the registry")
    return 0


def _clinics_list(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    topic = args.topic or settings.clinics_topic
    found = asyncio.run(read_registry(_bootstrap(args), topic, security=_security()))
    for clinic_id, record in sorted(found.items()):
        state = "retired" if record.retired else "live"
        print(f"{clinic_id:<40} {state:<7} {record.changed_at.isoformat()}  {record.changed_by}")
    return 0


def _actor() -> str:
    return f"kapctl:{os.environ.get('USER') or 'unknown'}"


# `kapctl partners`: the webhook service's admin API (services/webhooks/api.py).

PUBLIC_TYPES = [t.name for t in ALL if t.public]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ApiRefused(Exception):
    """The service answered an error: its HTTP status and its `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.detail = detail


def _detail(answer: httpx.Response) -> str:
    """The API's `detail`, one line: FastAPI's 422 list as `field: message; ...`."""
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = [str(part) for part in item.get("loc") or ()]
            parts.append(f"{'.'.join(loc[1:] or loc) or 'request'}: {item.get('msg')}")
        return "; ".join(parts)
    if detail is not None:
        return str(detail)
    return answer.text.strip()[:200] or answer.reason_phrase or "no detail"


class WebhooksAdmin:
    """The webhook service's admin routes, called with the admin key (`X-Admin-Key`)."""

    def __init__(self, client: httpx.AsyncClient, admin_key: str) -> None:
        self.client = client
        self.headers = {"X-Admin-Key": admin_key, "X-Admin-Actor": _actor()}

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The answer's JSON (None for an empty answer); raises ApiRefused on an error."""
        answer = await self.client.request(
            method, path, json=body, params=params, headers=self.headers
        )
        if not answer.is_success:
            raise ApiRefused(answer.status_code, _detail(answer))
        return answer.json() if answer.content else None


PartnerCall = Callable[[WebhooksAdmin, argparse.Namespace], Awaitable[int]]


def webhooks_client(url: str) -> httpx.AsyncClient:
    """The HTTP client the partners commands use on --url (tests replace it)."""
    return httpx.AsyncClient(base_url=url, timeout=30)


def _seconds(text: str) -> int:
    """Seconds, or N followed by s, m, h or d (24h, 90m, 7d)."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (seconds, or a number followed by s, m, h or d)"
        )
    return int(match[1]) * _UNITS[match[2] or "s"]


def _instant(text: str) -> str:
    """An ISO 8601 instant (UTC unless it says), or a duration ago (2h, 30m, 7d)."""
    if re.fullmatch(r"\d+[smhd]?", text.strip()):
        return (datetime.now(UTC) - timedelta(seconds=_seconds(text))).isoformat()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 instant nor a duration ago: {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _print_lines(items: list[Any], what: str) -> None:
    for item in items:
        print(json.dumps(item))
    print(f"{len(items)} {what}", file=sys.stderr)


async def _partners_create(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "url": args.target,
        "event_types": args.types,
        "clinics": args.clinics,
    }
    print(json.dumps(await api.call("POST", "/partners", body), indent=2))
    print(
        "kapctl: the secret and api_key are shown once, now: give them to the partner "
        "(`kapctl partners rotate` makes a new secret; a lost api_key needs a new partner)",
        file=sys.stderr,
    )
    return 0


async def _partners_list(api: WebhooksAdmin, _: argparse.Namespace) -> int:
    _print_lines(await api.call("GET", "/partners"), "partner(s)")
    return 0


async def _partners_show(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    print(json.dumps(await api.call("GET", f"/partners/{args.id}"), indent=2))
    return 0


async def _partners_update(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    given = {
        "name": args.name,
        "url": args.target,
        "event_types": args.types,
        "clinics": args.clinics,
        "enabled": args.enabled,
    }
    change = {field: value for field, value in given.items() if value is not None}
    if not change:
        raise ValueError(
            "nothing to change: give --name, --target, --types, --clinics, --enable or --disable"
        )
    print(json.dumps(await api.call("PATCH", f"/partners/{args.id}", change), indent=2))
    return 0


async def _partners_rotate(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    body = {} if args.keep_old_for is None else {"keep_old_for_s": args.keep_old_for}
    rotated = await api.call("POST", f"/partners/{args.id}/rotate-secret", body)
    print(json.dumps(rotated, indent=2))
    print(
        f"kapctl: the new secret is shown once, now; the old one also signs until "
        f"{rotated['old_valid_until']}",
        file=sys.stderr,
    )
    return 0


async def _partners_replay(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    body = {"since": args.since} | ({"until": args.until} if args.until else {})
    print(json.dumps(await api.call("POST", f"/partners/{args.id}/replay", body)))
    return 0


async def _partners_deliveries(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        params["since"] = args.since
    found = await api.call("GET", f"/partners/{args.id}/deliveries", params=params)
    _print_lines(found, "deliveries")
    return 0


async def _partners_dead_letters(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    _print_lines(await api.call("GET", f"/partners/{args.id}/dead-letters"), "dead letter(s)")
    return 0


async def _partners_delete(api: WebhooksAdmin, args: argparse.Namespace) -> int:
    await api.call("DELETE", f"/partners/{args.id}")
    print(f"partner {args.id} deleted")
    return 0


async def partners(args: argparse.Namespace, client: httpx.AsyncClient | None = None) -> int:
    """A `kapctl partners` command, through `client` if given (a test's, on the app),
    else a client on --url. The API's refusal is printed with its detail: exit 2 for
    a 4xx, 1 for a 5xx or a service not reached."""
    admin_key = args.admin_key or os.environ.get("KAP_ADMIN_API_KEY")
    if not admin_key:
        raise ValueError("give --admin-key or set $KAP_ADMIN_API_KEY")
    call: PartnerCall = args.call
    try:
        if client is not None:
            return await call(WebhooksAdmin(client, admin_key), args)
        async with webhooks_client(args.url) as own:
            return await call(WebhooksAdmin(own, admin_key), args)
    except ApiRefused as refused:
        print(f"kapctl: {refused}", file=sys.stderr)
        return 2 if 400 <= refused.status < 500 else 1
    except httpx.TransportError as error:
        reason = str(error) or type(error).__name__
        print(f"kapctl: the webhook service at {args.url}: {reason}", file=sys.stderr)
        return 1


def _partners(args: argparse.Namespace) -> int:
    return asyncio.run(partners(args))


def _partner_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    partner = commands.add_parser(
        "partners",
        help="webhook partners: create, change, rotate, replay, delete (the webhook service)",
        description="Calls the webhook service's admin API with the admin key. A partner's "
        "secret and API key are shown once, when it is created.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        metavar="URL",
        default=os.environ.get("KAP_WEBHOOKS_URL", "http://127.0.0.1:8004"),
        help="the webhook service (default: $KAP_WEBHOOKS_URL or http://127.0.0.1:8004)",
    )
    common.add_argument(
        "--admin-key",
        dest="admin_key",
        metavar="KEY",
        help="the admin key (default: $KAP_ADMIN_API_KEY)",
    )
    actions = partner.add_subparsers(dest="action", required=True)

    def action(
        name: str, call: PartnerCall, summary: str, with_id: bool = True
    ) -> argparse.ArgumentParser:
        parsed = actions.add_parser(name, parents=[common], help=summary, description=summary)
        if with_id:
            parsed.add_argument("id", metavar="ID", help="the partner's id")
        parsed.set_defaults(run=_partners, call=call)
        return parsed

    create = action(
        "create", _partners_create, "add a partner: prints it with its secrets, once", with_id=False
    )
    create.add_argument("--name", required=True, metavar="NAME")
    create.add_argument(
        "--target", required=True, metavar="URL", help="the URL events are POSTed to"
    )
    create.add_argument(
        "--types",
        nargs="+",
        default=list(PUBLIC_TYPES),
        metavar="TYPE",
        help="public event types (default: every public topic)",
    )
    create.add_argument(
        "--clinics", nargs="+", required=True, metavar="CLINIC", help="the clinics it may hear of"
    )
    action("list", _partners_list, "every partner, as JSON lines (never a secret)", with_id=False)
    action("show", _partners_show, "one partner, as JSON (never a secret)")
    update = action("update", _partners_update, "change a partner; --disable stops deliveries")
    update.add_argument("--name")
    update.add_argument("--target", metavar="URL", help="the URL events are POSTed to")
    update.add_argument("--types", nargs="+", metavar="TYPE", help="public event types")
    update.add_argument("--clinics", nargs="+", metavar="CLINIC")
    enabled = update.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    rotate = action("rotate", _partners_rotate, "a new signing secret, printed once")
    rotate.add_argument(
        "--keep-old-for",
        dest="keep_old_for",
        type=_seconds,
        metavar="DURATION",
        help="how long the old secret still signs: seconds or Ns/Nm/Nh/Nd (service's default: 24h)",
    )
    replay = action("replay", _partners_replay, "send a partner past events again")
    replay.add_argument(
        "--since",
        required=True,
        type=_instant,
        metavar="WHEN",
        help="an ISO 8601 instant (UTC unless it says) or a duration ago, e.g. 2h",
    )
    replay.add_argument(
        "--until", type=_instant, metavar="WHEN", help="an ISO 8601 instant (default: now)"
    )
    deliveries = action("deliveries", _partners_deliveries, "a partner's deliveries, newest first")
    deliveries.add_argument(
        "--since", type=_instant, metavar="WHEN", help="an ISO 8601 instant or a duration ago"
    )
    deliveries.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N (default 100)"
    )
    action("dead-letters", _partners_dead_letters, "a partner's events given up on")
    action("delete", _partners_delete, "remove a partner (its deliveries stop)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kapctl", description="Operate a KAP deployment.")
    root.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)"
    )
    commands = root.add_subparsers(dest="command", required=True)

    topics = commands.add_parser("topics", help="the topics defined in shared/topics.py")
    topic_commands = topics.add_subparsers(dest="action", required=True)
    apply = topic_commands.add_parser("apply", help="create missing topics and dead-letter topics")
    apply.add_argument(
        "--replication-factor", type=int, help="(default: $KAP_TOPIC_REPLICATION_FACTOR)"
    )
    apply.set_defaults(run=_topics_apply)
    topic_commands.add_parser("list", help="print the topic catalogue").set_defaults(
        run=_topics_list
    )

    lag = commands.add_parser("lag", help="consumer lag per group and partition")
    lag.add_argument("--group", action="append", help="a consumer group (default: every service's)")
    lag.add_argument("--all", action="store_true", help="also partitions with no lag")
    lag.add_argument("--json", action="store_true", help="machine-readable output")
    lag.set_defaults(run=_lag)

    dlq = commands.add_parser("dlq", help="dead letters: list and replay")
    dlq_commands = dlq.add_subparsers(dest="action", required=True)
    listing = dlq_commands.add_parser("list", help="dead letters with their reasons (JSON lines)")
    listing.add_argument("--topic", help="only those of this original topic")
    listing.add_argument("--limit", type=int, default=100, help="the newest N (default 100)")
    listing.set_defaults(run=_dlq_list)
    replay = dlq_commands.add_parser("replay", help="send dead letters back to their topic, once")
    replay.add_argument("--topic", help="only those of this original topic")
    replay.add_argument("--client", action="append", help="only this client's letters (repeatable)")
    replay.set_defaults(run=_dlq_replay)

    timeline = commands.add_parser("timeline", help="a client's events, read from the topics")
    timeline.add_argument("client_id")
    timeline.set_defaults(run=_timeline)

    exported = commands.add_parser(
        "export",
        help="a client's whole history, read back from the topics, as JSON (records request)",
    )
    exported.add_argument("client_id")
    exported.add_argument("--out", help="write to this file (default: stdout)")
    exported.set_defaults(run=_export)

    rebuilt = commands.add_parser(
        "rebuild",
        help="rebuild a service's Redis state from the topics into an empty Redis",
        description="Replays the topics the service consumes and produces, in Kafka order, "
        "through its own code into --redis (publishing and sending nothing), then prints "
        "the records read per topic and the keys written. Stop the service first, or point "
        "it at the rebuilt Redis after. Kafka and clinics come from the service's settings.",
    )
    rebuilt.add_argument("service", choices=rebuild.COVERED)
    rebuilt.add_argument("--redis", required=True, help="the target Redis URL (e.g. a spare db)")
    rebuilt.add_argument("--clinic", help="only this clinic's events and keys")
    rebuilt.add_argument(
        "--until-caught-up",
        action="store_true",
        help="after the end offsets found at the start, read on until nothing new is found",
    )
    rebuilt.add_argument(
        "--force", action="store_true", help="write even if the target holds keys already"
    )
    rebuilt.set_defaults(run=_rebuild)

    check = commands.add_parser(
        "audit",
        help="rebuild the schedule from the topics and count what went wrong (exit 1 if any)",
        description="Reads only the topics, the mailbox and the SMS log: overlaps, course "
        "rules, repeated boosters and notifications, stale reminders, mail and SMS that do not "
        "match their NotificationSent, lost requests. Prints `AUDIT {json}`.",
    )
    check.add_argument("--client", action="append", help="only this client (repeatable)")
    check.add_argument("--clinic", action="append", help="only this clinic (repeatable)")
    check.add_argument(
        "--since", help="only clients first seen on Kafka at or after this ISO instant (one run)"
    )
    check.add_argument("--maildir", help="the SMTP sink's folder of .eml files, to match mail")
    check.add_argument("--sms-log", dest="sms_log", help="the SMS sink's JSON lines, to match SMS")
    check.add_argument(
        "--clinics-file",
        dest="clinics_file",
        help="time zones and policies (default: $KAP_CLINICS_FILE)",
    )
    check.add_argument("--detail", action="store_true", help="also each count's parts, on stderr")
    check.set_defaults(run=_audit)

    outcome = commands.add_parser(
        "outcomes",
        help="a clinic's cohort outcomes (PHQ-9) as a table, and a PNG chart",
        description="Reads the scheduler's GET /v1/clinics/{clinic}/outcomes: prints each "
        "clinic's cohorts by month of course end and measure point, and writes a chart of "
        "the mean PHQ-9 by measure point with its 95% interval, one line per clinic.",
    )
    outcome.add_argument(
        "--clinic", action="append", required=True, help="a clinic id (repeatable)"
    )
    outcome.add_argument(
        "--api-key",
        action="append",
        help="each --clinic's key, in order, or one for all (default: $KAP_API_KEY)",
    )
    outcome.add_argument(
        "--url",
        default=os.environ.get("KAP_SCHEDULER_URL", "http://127.0.0.1:8002"),
        help="the scheduler (default: $KAP_SCHEDULER_URL or http://127.0.0.1:8002)",
    )
    outcome.add_argument("--chart", default="outcomes.png", help="the PNG to write")
    outcome.add_argument("--json", action="store_true", help="print the API's answers as JSON")
    outcome.set_defaults(run=_outcomes)

    clinics = commands.add_parser(
        "clinics", help="the clinic registry (KAP_CLINICS_SOURCE=topic) or the clinics file"
    )
    clinic_commands = clinics.add_subparsers(dest="action", required=True)
    upsert = clinic_commands.add_parser(
        "upsert",
        help="add or update a clinic, checked as the services check it",
        description="Writes to the registry topic when $KAP_CLINICS_SOURCE is topic or "
        "--registry is given (merged with the clinic's current record), else edits the "
        "clinics file. A configuration any service would refuse is refused, naming the field.",
    )
    upsert.add_argument("id")
    upsert.add_argument("--name")
    upsert.add_argument("--timezone", help="IANA zone, e.g. Europe/Lisbon")
    upsert.add_argument("--staff-email", dest="staff_email")
    upsert.add_argument("--api-key", help="stored as its SHA-256 only")
    upsert.add_argument(
        "--section-file", help="JSON with per-service sections (scheduler, notifier)"
    )
    upsert.add_argument("--entry", help="JSON of the clinic's entry (any fields, as in the file)")
    upsert.add_argument("--file", help="edit this clinics file (default: $KAP_CLINICS_FILE)")
    upsert.add_argument("--registry", action="store_true", help="write to the registry topic")
    upsert.add_argument("--topic", help="the registry topic (default: $KAP_CLINICS_TOPIC)")
    upsert.set_defaults(run=_clinics_upsert)
    imports = clinic_commands.add_parser(
        "import", help="every clinic of a clinics file into the registry (all checked first)"
    )
    imports.add_argument("file")
    imports.add_argument("--topic", help="the registry topic (default: $KAP_CLINICS_TOPIC)")
    imports.set_defaults(run=_clinics_import)
    retire = clinic_commands.add_parser("retire", help="retire a clinic in the registry")
    retire.add_argument("id")
    retire.add_argument("--topic", help="the registry topic (default: $KAP_CLINICS_TOPIC)")
    retire.set_defaults(run=_clinics_retire)
    listing = clinic_commands.add_parser("list", help="the clinics in the registry")
    listing.add_argument("--topic", help="the registry topic (default: $KAP_CLINICS_TOPIC)")
    listing.set_defaults(run=_clinics_list)
    _partner_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (OSError, ConnectionError, ValueError) as error:
        print(f"kapctl: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a one-line answer, not a stack trace, for operators
        print(f"kapctl: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The secured deployment's ACLs follow the topic catalogue and stay current."""

from __future__ import annotations

from pathlib import Path

import pytest

from chassis.kafka import group_id
from ops import acls
from ops.contracts import consumers, service_brokers
from ops.operations import OPERATED_GROUPS, REPLAY_GROUP, dlq_topics
from shared.topics import (
    ALL,
    BY_NAME,
    CLINIC_REGISTRY,
    DLQ_SUFFIX,
    RECORD_TOPICS,
    SERVICES,
    STAFF_SIGN_INS,
)

SCRIPT = Path(__file__).resolve().parents[3] / "compose" / "secure" / "acls.sh"


def test_committed_acl_script_is_current() -> None:
    assert SCRIPT.read_text() == acls.script(), "run `python -m ops.acls > compose/secure/acls.sh`"


def test_partners_read_only_public_topics_in_their_own_groups() -> None:
    partner = [rule for rule in acls.rules() if "partner" in rule.principals]
    assert all(rule.principals == ("partner",) for rule in partner)
    assert partner == [
        acls.Rule(("partner",), ("Read", "Describe"), topics=("public.",), prefixed=True),
        acls.Rule(
            ("partner",),
            ("Read", "Describe"),
            topics=tuple(t.dead_letters for t in ALL if t.public),
            deny=True,
        ),
        acls.Rule(("partner",), ("Read",), groups=("partner-",), prefixed=True),
    ]


def test_a_service_writes_only_what_it_produces_and_its_dead_letters() -> None:
    producers = {t.name: t.producers for t in (*ALL, *RECORD_TOPICS)}
    for rule in acls.rules():
        if "Write" not in rule.operations:
            continue
        assert not rule.prefixed
        for service in rule.principals:
            if service == acls.CONSOLE:
                continue  # below: it replays to topics others produce
            for topic in rule.topics:
                if topic.endswith(DLQ_SUFFIX):
                    assert topic.removesuffix(DLQ_SUFFIX) in BY_NAME
                else:
                    assert service in producers[topic], (service, topic)
    assert len(ALL) > 0


def test_a_service_reads_only_in_its_own_group() -> None:
    for rule in acls.rules():
        if rule.groups and rule.principals not in (("partner",), (acls.CONSOLE,)):
            assert [f"kap-{p}" for p in rule.principals] == list(rule.groups)


# --- the console -------------------------------------------------------------------------


def allowed(principal: str, operation: str) -> tuple[set[str], set[str], bool]:
    """The topics and groups `principal` may do `operation` on, and whether on the cluster,
    with Kafka's implications (Read, Write... imply Describe). Prefixed rules count as
    their prefix (asserted on separately)."""
    implied = {"Describe": {"Describe", "Read", "Write", "Delete", "Alter"}}
    ops = implied.get(operation, {operation})
    topics: set[str] = set()
    groups: set[str] = set()
    cluster = False
    for rule in acls.rules():
        if principal in rule.principals and ops & set(rule.operations):
            topics |= set(rule.topics)
            groups |= set(rule.groups)
            cluster = cluster or rule.cluster
    return topics, groups, cluster


@pytest.fixture(scope="module")
def consumed() -> set[str]:
    return set(consumers(service_brokers()))


def test_the_console_is_a_principal_with_its_password_variable() -> None:
    assert acls.CONSOLE in acls.PRINCIPALS
    assert acls.CONSOLE not in SERVICES  # not a service of the event flow: no group, no DLQ
    assert acls.password_variable(acls.CONSOLE) == "KAP_CONSOLE_PASSWORD"
    assert 'user console "${KAP_CONSOLE_PASSWORD:-console-secret}"' in acls.script()


def test_the_console_rules_are_its_own_but_for_the_runtimes_start_up() -> None:
    shared = [r for r in acls.rules() if acls.CONSOLE in r.principals and len(r.principals) > 1]
    assert all(set(r.principals) == {*SERVICES, acls.CONSOLE} for r in shared)
    assert all(not r.prefixed and not r.groups and not r.cluster for r in shared)
    assert not any(r.prefixed for r in acls.rules() if acls.CONSOLE in r.principals)


def test_the_console_writes_its_audit_and_replays_dead_letters_to_consumed_topics(
    consumed: set[str],
) -> None:
    writes, groups, cluster = allowed(acls.CONSOLE, "Write")
    assert STAFF_SIGN_INS.name in writes
    # A dead letter goes back to the topic a service consumed it from; nothing else.
    assert writes == consumed | {STAFF_SIGN_INS.name}
    assert not groups
    assert not cluster
    assert not any(name.endswith(DLQ_SUFFIX) for name in writes)
    assert CLINIC_REGISTRY.name not in writes  # configuration is the scheduler's
    assert allowed(acls.CONSOLE, "IdempotentWrite")[2]  # the broker's idempotent producer


def test_the_console_reads_every_dead_letter_topic_and_the_registry_only() -> None:
    reads, groups, cluster = allowed(acls.CONSOLE, "Read")
    assert reads == {*dlq_topics(), CLINIC_REGISTRY.name}
    # Joins and commits in the replay group only: not a service's, not a partner's.
    assert groups == {REPLAY_GROUP}
    assert not cluster
    assert not any(name.startswith("public.") and name in BY_NAME for name in reads)
    assert not any(group.startswith("partner-") for group in groups)


def test_the_console_describes_the_operated_groups_for_their_lag(consumed: set[str]) -> None:
    topics, groups, _ = allowed(acls.CONSOLE, "Describe")
    assert groups == {*OPERATED_GROUPS, REPLAY_GROUP}
    assert {group_id(s) for s in ("scheduler", "notifier", "webhooks")} == set(OPERATED_GROUPS)
    # Their topics' end offsets: every consumed topic is described.
    assert consumed <= topics


def test_the_console_creates_what_its_start_up_applies_by_name_not_on_the_cluster() -> None:
    created, groups, cluster = allowed(acls.CONSOLE, "Create")
    described = allowed(acls.CONSOLE, "Describe")[0]
    # chassis.service.ServiceRuntime.start: the catalogue, each topic's DLQ, the record
    # topics and the audit topics this service produces.
    applied = {name for t in ALL for name in (t.name, t.dead_letters)}
    applied |= {t.name for t in (*RECORD_TOPICS, STAFF_SIGN_INS)}
    assert created == applied
    assert applied <= described
    assert not cluster
    assert not groups

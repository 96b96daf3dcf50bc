"""The secured deployment's ACLs follow the topic catalogue and stay current."""

from __future__ import annotations

from pathlib import Path

from ops import acls
from shared.topics import ALL, BY_NAME, DLQ_SUFFIX, RECORD_TOPICS

SCRIPT = Path(__file__).resolve().parents[3] / "compose" / "secure" / "acls.sh"


def test_committed_acl_script_is_current() -> None:
    assert SCRIPT.read_text() == acls.script(), "run `python -m ops.acls > compose/secure/acls.sh`"


def test_partners_read_only_public_topics_in_their_own_groups() -> None:
    partner = [rule for rule in acls.rules() if "partner" in rule.principals]
    assert all(rule.principals == ("partner",) for rule in partner)
    assert partner == [
        acls.Rule(("partner",), ("Read", "Describe"), topics=("public.",), prefixed=True),
        acls.Rule(("partner",), ("Read",), groups=("partner-",), prefixed=True),
    ]


def test_a_service_writes_only_what_it_produces_and_its_dead_letters() -> None:
    producers = {t.name: t.producers for t in (*ALL, *RECORD_TOPICS)}
    for rule in acls.rules():
        if "Write" not in rule.operations:
            continue
        assert not rule.prefixed
        for service in rule.principals:
            for topic in rule.topics:
                if topic.endswith(DLQ_SUFFIX):
                    assert topic.removesuffix(DLQ_SUFFIX) in BY_NAME
                else:
                    assert service in producers[topic], (service, topic)
    assert len(ALL) > 0


def test_a_service_reads_only_in_its_own_group() -> None:
    for rule in acls.rules():
        if rule.groups and rule.principals != ("partner",):
            assert [f"kap-{p}" for p in rule.principals] == list(rule.groups)

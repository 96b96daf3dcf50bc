"""The secured deployment's ACLs follow the topic catalogue and stay current."""

from __future__ import annotations

from pathlib import Path

from ops import acls
from shared.topics import ALL, BY_NAME, DLQ_SUFFIX

SCRIPT = Path(__file__).resolve().parents[3] / "compose" / "secure" / "acls.sh"


def test_committed_acl_script_is_current() -> None:
    assert SCRIPT.read_text() == acls.script(), "run `python -m ops.acls > compose/secure/acls.sh`"


def test_partners_read_only_public_topics_in_their_own_groups() -> None:
    partner = [rule for rule in acls.rules() if "User:partner" in rule]
    assert {rule[rule.index("--operation") + 1] for rule in partner} == {"Read"}
    assert [rule for rule in partner if "--topic" in rule] == [
        ["--allow-principal", "User:partner", "--operation", "Read", "--operation", "Describe",
         "--topic", "public.", "--resource-pattern-type", "prefixed"]
    ]  # fmt: skip
    assert any("--group" in rule and "partner-" in rule for rule in partner)


def test_a_service_writes_only_what_it_produces_and_its_dead_letters() -> None:
    for rule in acls.rules():
        if "Write" not in rule or "--topic" not in rule:
            continue
        service = rule[1].removeprefix("User:")
        topic = rule[rule.index("--topic") + 1]
        if topic.endswith(DLQ_SUFFIX):
            assert topic.removesuffix(DLQ_SUFFIX) in BY_NAME
        else:
            assert service in BY_NAME[topic].producers, (service, topic)
    assert len(ALL) > 0

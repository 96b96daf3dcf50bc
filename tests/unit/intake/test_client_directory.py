"""The clinic's client directory: how names, phones and queries are normalised into
the terms a search compares (services/intake/directory.py), and its key's retention."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chassis import retention
from services.intake import directory
from services.intake.directory import normalise
from services.intake.store import directory_key
from shared import events as ev


def contact(name: str, phone: str | None = "+351912345678") -> ev.Contact:
    return ev.Contact(name=name, email="a@example.org", phone=phone)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Ana Silva", "ana silva"),
        ("  JOÃO   Conceição ", "joao conceicao"),
        ("Zoë Ångström-Müller", "zoe angstrom muller"),
        ("O'Brien", "obrien"),
        ("D\u2019Ávila", "davila"),  # a typographic apostrophe
        ("Søren Łukasz Æsir", "soren lukasz aesir"),
        ("Straße", "strasse"),
        ("Ｊｏｓé", "jose"),  # fullwidth letters (NFKD)
        ("Anne-Marie\tdu\nBois", "anne marie du bois"),
        ("Ελένη", "ελενη"),  # other scripts kept, accents stripped
        ("!!!", ""),
    ],
)
def test_a_name_is_normalised_without_case_accents_or_punctuation(
    text: str, normalised: str
) -> None:
    assert normalise(text) == normalised


def test_normalising_twice_changes_nothing() -> None:
    once = normalise("Ïñês Çåvaco-D'Ørey")
    assert normalise(once) == once == "ines cavaco dorey"


def test_each_word_of_the_name_starts_a_term() -> None:
    assert directory.name_terms("Ana Maria da Silva") == [
        "ana maria da silva",
        "maria da silva",
        "da silva",
        "silva",
    ]


def test_a_long_name_keeps_a_bounded_number_of_terms() -> None:
    terms = directory.name_terms(" ".join(["x"] * 100))
    assert len(terms) == directory.MAX_NAME_WORDS


@pytest.mark.parametrize(
    ("phone", "terms"),
    [
        ("+351912345678", ["351912345678", "912345678"]),  # three-digit code
        ("+15551234567", ["15551234567", "5551234567"]),  # NANP
        ("+79161234567", ["79161234567", "9161234567"]),
        ("+447700900123", ["447700900123", "7700900123"]),
        ("+61412345678", ["61412345678", "412345678"]),
        ("+3531234567", ["3531234567", "1234567"]),  # Ireland: 353, not 35
        (None, []),
    ],
)
def test_a_phone_is_indexed_by_its_e164_and_national_digits(
    phone: str | None, terms: list[str]
) -> None:
    assert directory.phone_terms(phone) == terms


def test_entries_carry_the_normalised_name_and_the_client() -> None:
    client = uuid.uuid4()
    entries = directory.entries(contact("Ana Silva"), client)
    parsed = {directory.Entry.parse(e) for e in entries}
    assert parsed == {directory.Entry("ana silva", str(client))}
    assert {e.split("\x00")[0] for e in entries} == {
        "n:ana silva",
        "n:silva",
        "p:351912345678",
        "p:912345678",
    }


def test_a_changed_name_or_phone_leaves_entries_to_take() -> None:
    client = uuid.uuid4()
    before = directory.entries(contact("Ana Silva"), client)
    after = directory.entries(contact("Ana Costa", "+351933333333"), client)
    assert all(directory.Entry.parse(e).name == "ana silva" for e in before - after)
    assert not any("silva" in e or "912345678" in e for e in after)


def _prefixes(text: str) -> Any:
    found = directory.query(text)
    return found.prefixes if found else None


@pytest.mark.parametrize(
    ("text", "prefixes"),
    [
        ("Silva", ("n:silva",)),
        ("  joão C ", ("n:joao c",)),
        ("MARIA sil", ("n:maria sil",)),
        ("912345", ("p:912345",)),
        ("+351 912-345", ("p:351912345",)),
        ("(0912) 345", ("p:0912345", "p:912345")),  # a trunk 0 as typed, and without
        ("00351 91", ("p:0035191", "p:35191")),
        ("Ana 2", ("n:ana 2",)),
        ("a.", None),  # one letter: too short to search
        ("--", None),
        ("+1 ", None),  # one digit
        ("é ", None),
    ],
)
def test_a_query_searches_names_or_phone_digits(text: str, prefixes: Any) -> None:
    assert _prefixes(text) == prefixes


def test_a_query_matches_a_contact_by_any_word_or_phone_prefix() -> None:
    ana = contact("Ana Conceição Silva")
    for text in ("ana", "CONCEI", "silv", "conceicao sil", "91234", "+35191", "0912"):
        found = directory.query(text)
        assert found is not None, text
        assert found.matches(ana), text
    for text in ("ilva", "silva ana", "12345", "35292"):
        found = directory.query(text)
        assert found is not None, text
        assert not found.matches(ana), text


def test_the_directory_key_carries_the_clinic_tag_and_has_a_retention_rule() -> None:
    key = directory_key("lisbon")
    assert key == "intake:{lisbon}:directory"
    rule = retention.rule_for(key)
    assert rule is not None
    assert (rule.owner, rule.ttl) == ("intake", "never")

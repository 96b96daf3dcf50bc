"""The clinic's client directory: the search terms of a client's name and phone (pure).

Staff find a client by typing the start of any word of the name or some leading
digits of the phone. The store keeps one sorted set per clinic (`intake:{c}:directory`,
every score 0) whose members are `<kind>:<term>\\x00<name>\\x00<client id>`; a search
is a ZRANGEBYLEX over the members starting with `<kind>:<query>`. `<name>` is the
normalised full name, so matches sort by name without loading the records.

- name terms (`n:`): the normalised name from each of its first `MAX_NAME_WORDS` words
  on ("ana maria silva", "maria silva", "silva"), so "silva" and "maria sil" find
  Ana Maria Silva, and "ana" finds her with the names starting so;
- phone terms (`p:`): the E.164 digits ("351912345678") and the national number's
  ("912345678", after the country code), so either one's leading digits find her.

Normalised: NFKD, combining marks stripped (accents), case folded, a few letters NFKD
keeps whole folded to ASCII (ø, ł, æ...), apostrophes dropped (O'Brien: "obrien"),
anything else neither letter nor digit a space, spaces collapsed. A query is
normalised the same way. Terms hold PHI: they live in the value of a clinic's key,
never in a key's name, and are never logged.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from shared import events as ev

NAME, PHONE = "n:", "p:"
SEPARATOR = "\x00"
# Suffixes of the name kept as terms: enough for any real name's words, while a
# pathological 200-character name of one-letter words stays a few members.
MAX_NAME_WORDS = 8
# The shortest query searched (after normalisation): shorter ones would list the clinic.
MIN_QUERY = 2

# Letters NFKD leaves whole (no combining mark to strip), as people type them in ASCII.
_FOLD = str.maketrans(
    {
        "ø": "o",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "ħ": "h",
        "\u0131": "i",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
    }
)
_DROPPED = frozenset("'’ʼ`´")  # noqa: RUF001 (apostrophes, typographic ones too)
# What people type between a phone's digits.
_PHONE_PUNCTUATION = frozenset("+-()./ ")

# E.164 country codes are prefix-free: +1 and +7 are the one-digit codes, these the
# two-digit ones, every other code has three digits.
_TWO_DIGIT_CODES = frozenset({
    "20", "27",
    "30", "31", "32", "33", "34", "36", "39",
    "40", "41", "43", "44", "45", "46", "47", "48", "49",
    "51", "52", "53", "54", "55", "56", "57", "58",
    "60", "61", "62", "63", "64", "65", "66",
    "81", "82", "84", "86",
    "90", "91", "92", "93", "94", "95", "98",
})  # fmt: skip


def normalise(text: str) -> str:
    """`text` as the directory compares it.

    "  Conceição  D'Ávila-Løvø" -> "conceicao davila lovo".
    """
    kept = []
    for char in unicodedata.normalize("NFKD", text.casefold()):
        if unicodedata.combining(char) or char in _DROPPED:
            continue
        kept.append(char if char.isalnum() else " ")
    return " ".join("".join(kept).translate(_FOLD).split())


def country_code_length(digits: str) -> int:
    """How many of an E.164 number's digits (no "+") are its country code."""
    if digits[:1] in ("1", "7"):
        return 1
    return 2 if digits[:2] in _TWO_DIGIT_CODES else 3


def name_terms(name: str) -> list[str]:
    words = normalise(name).split()
    return list(dict.fromkeys(" ".join(words[i:]) for i in range(min(len(words), MAX_NAME_WORDS))))


def phone_terms(phone: str | None) -> list[str]:
    if not phone:
        return []
    digits = "".join(char for char in phone if char.isascii() and char.isdigit())
    national = digits[country_code_length(digits) :]
    return list(dict.fromkeys(term for term in (digits, national) if term))


def terms(contact: ev.Contact) -> list[str]:
    """Every prefix-searchable term of the contact, each with its kind."""
    return [NAME + t for t in name_terms(contact.name)] + [
        PHONE + t for t in phone_terms(contact.phone)
    ]


def entries(contact: ev.Contact, client_id: UUID | str) -> set[str]:
    """The client's members of the directory."""
    name = normalise(contact.name)
    return {SEPARATOR.join((term, name, str(client_id))) for term in terms(contact)}


@dataclass(frozen=True)
class Entry:
    """A member of the directory, read back: which client, and their normalised name."""

    name: str
    client_id: str

    @classmethod
    def parse(cls, member: str | bytes) -> Entry:
        text = member.decode() if isinstance(member, bytes) else member
        _, name, client_id = text.rsplit(SEPARATOR, 2)
        return cls(name, client_id)


@dataclass(frozen=True)
class Query:
    """What a search looks for: prefixes of the directory's members (kind and term)."""

    prefixes: tuple[str, ...]

    def matches(self, contact: ev.Contact) -> bool:
        """Whether the contact (as it is now) has a term with one of the prefixes."""
        return any(term.startswith(p) for term in terms(contact) for p in self.prefixes)


def query(text: str) -> Query | None:
    """The search `text` asks for, or None: nothing searchable (under `MIN_QUERY`).

    Digits alone (with what people type between them: "+351 912-345") search the
    phones: as typed, and without leading zeros (a trunk "0" or an international
    "00": "0912..." and "00351912..." find +351912...). Anything else searches names.
    """
    stripped = text.strip()
    compact = [char for char in stripped if char not in _PHONE_PUNCTUATION]
    if compact and all(char.isascii() and char.isdigit() for char in compact):
        digits = "".join(compact)
        return _query(PHONE, (digits, digits.lstrip("0")))
    return _query(NAME, (normalise(stripped),))


def _query(kind: str, candidates: Iterable[str]) -> Query | None:
    kept = tuple(dict.fromkeys(kind + c for c in candidates if len(c) >= MIN_QUERY))
    return Query(kept) if kept else None

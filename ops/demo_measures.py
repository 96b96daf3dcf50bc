"""The demo's clients answer their measures as clients would: from the link in the mail.

Each client has a course of PHQ-9 scores drawn once from the published figures
(protocol rule 15: about 60% respond, about 30% remit at the end of a course,
with spread); an answer stands on that course as far as the doses held so far
(the staff's view of the client's schedule): before the first dose, the start;
after the sixth, the end. The
answers go in over HTTP, by following the link in the mail the sink received
(GET the form, POST it as a browser would): the outcomes are then computed by
the auditor from the answers on the topics (ops/audit_measures.py), never from
these parameters.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from ops.demo import Person

LINK = re.compile(r"https?://[^\s\"'<>]+/m/[A-Za-z0-9._~-]+")
ANSWERS = 0.9  # the share of links a client answers
RESPOND, REMIT = 0.62, 0.31  # Mindbloom's 62.8% and 32.6%, a little under (rule 15)
DOSES = 6
POLL_S = 0.2


@dataclass(frozen=True)
class Course:
    """One client's PHQ-9 and GAD-7 from before the first dose to the end of the course."""

    phq9_from: int
    phq9_to: int
    gad7_from: int
    gad7_to: int

    def at(self, doses_held: int) -> tuple[int, int]:
        """The scores of an answer given after `doses_held` doses of the course."""
        done = min(doses_held / DOSES, 1.0)
        return (
            round(self.phq9_from + (self.phq9_to - self.phq9_from) * done),
            round(self.gad7_from + (self.gad7_to - self.gad7_from) * done),
        )


def course_of(person_number: int, run: str) -> Course:
    rng = random.Random(zlib.crc32(f"{run}/{person_number}".encode()))  # noqa: S311 - demo data
    start = rng.randint(10, 19)  # moderate to moderately severe, as clinics enrol
    draw = rng.random()
    if draw < REMIT:
        end = rng.randint(0, 4)
    elif draw < RESPOND:
        end = rng.randint(5, start // 2)
    else:
        end = rng.randint(start // 2 + 1, min(start + 2, 24))
    gad_start = rng.randint(7, 16)
    return Course(start, end, gad_start, max(0, round(gad_start * end / start)))


def items(total: int, count: int, *, last_zero: bool = False) -> list[int]:
    """`count` answers of 0-3 summing to `total` (item 9 of a PHQ-9 kept 0: no alert)."""
    usable = count - 1 if last_zero else count
    if not 0 <= total <= 3 * usable:
        raise ValueError(f"{total} cannot be spread over {usable} items of 0-3")
    answers = [total // usable] * usable
    for i in range(total % usable):
        answers[i] += 1
    return answers + ([0] if last_zero else [])


class _Form(HTMLParser):
    """The radio groups (in the order shown) and hidden fields of the measure form."""

    def __init__(self) -> None:
        super().__init__()
        self.radios: list[str] = []
        self.hidden: dict[str, str] = {}
        self.action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action") or None
        if tag == "input" and a.get("type") == "radio" and a.get("name") not in self.radios:
            self.radios.append(a["name"])
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")


def filled(html: str, phq9: int, gad7: int) -> dict[str, str]:
    """The form's fields answered: the PHQ-9 group first, then the GAD-7 (by their names)."""
    form = _Form()
    form.feed(html)
    phq = [n for n in form.radios if "phq" in n.lower()]
    gad = [n for n in form.radios if "gad" in n.lower()]
    if len(phq) != 9 or len(gad) != 7:
        raise ValueError(f"the form asks {len(phq)} PHQ-9 and {len(gad)} GAD-7 items")
    values = items(phq9, 9, last_zero=True) + items(gad7, 7)
    return {**form.hidden, **{n: str(v) for n, v in zip(phq + gad, values, strict=True)}}


# How many medicine doses a client has had so far (the staff's view of their schedule).
DosesHeld = Callable[["Person"], Awaitable[int]]


@dataclass
class Answering:
    """The clients of one run answering the links their mail and texts bring.

    Reading the sinks runs in a worker thread: the demo's staff share this event
    loop, and a check-in late by a few real milliseconds is a session missed.
    """

    maildir: Path
    sms_log: Path
    crowd: dict[str, Person]  # by e-mail address and by phone number
    run: str
    doses_held: DosesHeld
    seen: set[str] = field(default_factory=set)  # mail files read
    texts_at: int = 0  # bytes of the SMS log read
    answered: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count

    async def loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                await self.answer_new(http)
                if stop.is_set():
                    return
                await asyncio.sleep(POLL_S)

    async def answer_new(self, http: httpx.AsyncClient) -> None:
        for to, link in await asyncio.to_thread(self._new_links):
            if (person := self.crowd.get(to)) is not None:
                await self.answer(http, person, link)

    def _new_links(self) -> list[tuple[str, str]]:
        return [
            (to, found.group(0))
            for to, text in [*self._new_mail(), *self._new_texts()]
            if (found := LINK.search(text)) is not None
        ]

    def _new_mail(self) -> list[tuple[str, str]]:
        found = []
        for entry in sorted(os.scandir(self.maildir), key=lambda e: e.name):
            if entry.name in self.seen or not entry.name.endswith(".eml"):
                continue
            self.seen.add(entry.name)
            raw = Path(entry.path).read_bytes()
            if b"/m/" not in raw:
                continue  # no measure link: not parsed
            mail: EmailMessage = message_from_bytes(raw, policy=policy.default)
            body = mail.get_body(preferencelist=("plain", "html"))
            text = body.get_content() if body is not None else ""
            found.append((str(mail["To"] or "").strip().lower(), text))
        return found

    def _new_texts(self) -> list[tuple[str, str]]:
        if not self.sms_log.exists():
            return []
        with self.sms_log.open("rb") as log:
            log.seek(self.texts_at)
            chunk = log.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]  # the provider may be writing the last line
        self.texts_at += len(whole)
        entries = [json.loads(line) for line in whole.splitlines() if line.strip()]
        return [(str(e.get("to", "")), str(e.get("body", ""))) for e in entries]

    async def answer(self, http: httpx.AsyncClient, person: Person, url: str) -> None:
        rng = random.Random(zlib.crc32(url.encode()))  # noqa: S311 - demo data
        if rng.random() >= ANSWERS:
            return
        form = await http.get(url)
        self.statuses[form.status_code] = self.statuses.get(form.status_code, 0) + 1
        if form.status_code != 200:
            return
        phq9, gad7 = course_of(person.number, self.run).at(await self.doses_held(person))
        sent = await http.post(url, data=filled(form.text, phq9, gad7))
        self.statuses[sent.status_code] = self.statuses.get(sent.status_code, 0) + 1
        self.answered += sent.is_success

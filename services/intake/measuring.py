"""The measure form's use cases: a client opens a link and answers it.

A link is read (signature, then expiry on the injected clock), counted against the
form's rate limits, and only then looked at further. Opening changes nothing
(mail scanners follow links); the answer is recorded through `IntakeService`, which
uses the link up in the same write. Invalid links are refused before any Redis
call: guessing a signature costs the guesser, not the clinic's slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from chassis.clinics import Clinic, ClinicDirectory
from chassis.clock import Clock
from chassis.measure_links import LinkExpired, LinkInvalid, MeasureLink, MeasureLinks
from services.intake import measures
from services.intake.limits import Limit, RateLimiter
from services.intake.service import AlreadyAnswered, IntakeService, NotFound, Retry

# Longer than any token this deployment mints; anything longer is not one.
MAX_TOKEN = 1024
NO_KEY = Retry(None, "")


@dataclass(frozen=True)
class FormLimits:
    per_address: int
    per_client: int


class Expired(Exception):
    """A genuine link past its expiry: the page names the clinic to ask for a new one."""

    def __init__(self, link: MeasureLink, clinic: Clinic) -> None:
        super().__init__("measure link expired")
        self.link = link
        self.clinic = clinic


class LinkUsed(Exception):
    """The link's measure was answered already: a link is used once."""

    def __init__(self, clinic: Clinic) -> None:
        super().__init__("measure already answered")
        self.clinic = clinic


@dataclass(frozen=True)
class Opened:
    link: MeasureLink
    clinic: Clinic


@dataclass(frozen=True)
class Refused:
    """The answers are incomplete or wrong: the form again, with what was given."""

    opened: Opened
    reading: measures.FormReading


@dataclass(frozen=True)
class Thanked:
    clinic: Clinic
    at_risk: bool


class MeasureForms:
    def __init__(
        self,
        intake: IntakeService,
        links: MeasureLinks,
        clinics: ClinicDirectory,
        limiter: RateLimiter,
        limits: FormLimits,
        clock: Clock,
    ) -> None:
        self._intake = intake
        self._links = links
        self._clinics = clinics
        self._limiter = limiter
        self._limits = limits
        self._clock = clock

    async def open(self, token: str, address: str) -> Opened:
        """The form to show; LinkInvalid, Expired, LinkUsed or RateLimited otherwise."""
        opened = await self._admit(token, address)
        link = opened.link
        if await self._intake.measure_answered(opened.clinic.id, link.client_id, link.measure_id):
            raise LinkUsed(opened.clinic)
        return opened

    async def submit(self, token: str, address: str, fields: dict[str, str]) -> Thanked | Refused:
        opened = await self.open(token, address)
        reading = measures.read_form(fields)
        scores = reading.scores
        if scores is None:
            return Refused(opened, reading)
        link, clinic = opened.link, opened.clinic
        how = measures.Answered(source="link", measure_id=link.measure_id)
        try:
            await self._intake.record_measure(clinic.id, link.client_id, scores, how, NO_KEY)
        except NotFound as unknown:
            # Signed here, for a client intake does not hold (removed since): not usable.
            raise LinkInvalid("no such client") from unknown
        except AlreadyAnswered as twice:  # answered between the check above and the write
            raise LinkUsed(clinic) from twice
        return Thanked(clinic, at_risk=scores.phq9_item9 > 0)

    async def _admit(self, token: str, address: str) -> Opened:
        if len(token) > MAX_TOKEN:
            raise LinkInvalid("too long for a measure link")
        try:
            link = self._links.read(token, self._clock.now())
        except LinkExpired as expired:
            clinic = await self._counted(expired.link, address)
            raise Expired(expired.link, clinic) from expired
        return Opened(link, await self._counted(link, address))

    async def _counted(self, link: MeasureLink, address: str) -> Clinic:
        clinic = self._clinics.get(link.clinic_id)
        if clinic is None:
            raise LinkInvalid("the link's clinic is not served here")
        await self._limiter.hit(
            clinic.id,
            Limit("form:address", address, self._limits.per_address),
            Limit("form:client", str(link.client_id), self._limits.per_client),
        )
        return clinic

"""The PHQ-9 and GAD-7 as clients read them: the standard wording and answer options.

Both are in the public domain (developed by Drs. Spitzer, Williams, Kroenke and
colleagues, with an educational grant from Pfizer); the wording is kept as published.
The item order here is the order of `QuestionnaireResponse.items`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import Instrument

OPTIONS: tuple[tuple[int, str], ...] = (
    (0, "Not at all"),
    (1, "Several days"),
    (2, "More than half the days"),
    (3, "Nearly every day"),
)


@dataclass(frozen=True)
class Questionnaire:
    instrument: Instrument
    title: str
    stem: str
    items: tuple[str, ...]

    def field(self, number: int) -> str:
        """The form field of item `number` (1-based), e.g. phq9_9."""
        return f"{self.instrument.value}_{number}"


PHQ9 = Questionnaire(
    Instrument.PHQ9,
    "PHQ-9",
    "Over the last 2 weeks, how often have you been bothered by any of the following problems?",
    (
        "Little interest or pleasure in doing things",
        "Feeling down, depressed, or hopeless",
        "Trouble falling or staying asleep, or sleeping too much",
        "Feeling tired or having little energy",
        "Poor appetite or overeating",
        "Feeling bad about yourself — or that you are a failure or have let yourself or your "
        "family down",
        "Trouble concentrating on things, such as reading the newspaper or watching television",
        "Moving or speaking so slowly that other people could have noticed? Or the opposite — "
        "being so fidgety or restless that you have been moving around a lot more than usual",
        "Thoughts that you would be better off dead or of hurting yourself in some way",
    ),
)
GAD7 = Questionnaire(
    Instrument.GAD7,
    "GAD-7",
    "Over the last 2 weeks, how often have you been bothered by the following problems?",
    (
        "Feeling nervous, anxious or on edge",
        "Not being able to stop or control worrying",
        "Worrying too much about different things",
        "Trouble relaxing",
        "Being so restless that it is hard to sit still",
        "Becoming easily annoyed or irritable",
        "Feeling afraid as if something awful might happen",
    ),
)
# What the form shows, in order: the token names no instruments, so both, always.
FORM: tuple[Questionnaire, ...] = (PHQ9, GAD7)

"""A phone number is E.164 only in ASCII digits: regex \\d takes any Unicode digit."""

from __future__ import annotations

import pytest

from services.intake.api import ConsultationRequestIn
from shared import events as ev
from tests.unit.intake.test_input_validation import refused_fields, request

ARABIC_INDIC = "\u0665\u0665\u0665\u0661\u0662\u0663\u0664\u0665\u0666\u0667"


@pytest.mark.parametrize(
    "phone",
    [
        "+1" + ARABIC_INDIC,  # Arabic-Indic digits are digits to \d, not to E.164
        "+1555\u0661\u0662\u0663\u0664567",
        "+1\uff15\uff15\uff15\uff11\uff12\uff13\uff14",  # fullwidth digits
        "+15551234567\n",
    ],
)
def test_a_phone_of_non_ascii_digits_is_not_e164(phone: str) -> None:
    assert "phone" in refused_fields(ConsultationRequestIn, request(phone=phone))
    assert "phone" in refused_fields(ev.Contact, {"name": "A", "email": "a@b.c", "phone": phone})


def test_an_ascii_e164_phone_passes() -> None:
    assert ConsultationRequestIn.model_validate(request(phone="+15551234567")).phone
    assert ev.Contact(name="A", email="a@b.c", phone="+351912345678").phone

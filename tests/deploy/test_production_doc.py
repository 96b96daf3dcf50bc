"""docs/production.md lists every setting a service reads: an operator moving to
production reads that page, and a setting missing there is one nobody sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from services.console.config import Settings as ConsoleSettings
from services.intake.config import Settings as IntakeSettings
from services.notifier.config import Settings as NotifierSettings
from services.scheduler.config import Settings as SchedulerSettings
from services.webhooks.config import Settings as WebhooksSettings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "production.md"


def _variables(settings: type[BaseSettings]) -> set[str]:
    return {str(f.validation_alias) for f in settings.model_fields.values() if f.validation_alias}


@pytest.mark.parametrize(
    "settings",
    [IntakeSettings, SchedulerSettings, NotifierSettings, WebhooksSettings, ConsoleSettings],
)
def test_every_setting_is_on_the_production_page(settings: type[BaseSettings]) -> None:
    page = PAGE.read_text()
    missing = sorted(v for v in _variables(settings) if f"`{v}`" not in page)
    assert not missing, f"docs/production.md does not mention {missing}"

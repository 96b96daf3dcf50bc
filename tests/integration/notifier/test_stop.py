"""A stopping notifier's delivery loop ends by itself, not by being cut short.

The supervisor asks its loops to stop (`Supervisor.stopping`) and cancels only
those still running after half the stop timeout: a loop that ignored the
request held every notifier shutdown for 5 s and was then cancelled.
"""

from __future__ import annotations

import pytest

from services.notifier.config import Settings
from services.notifier.main import create_app
from tests.helpers import serving
from tests.integration.notifier.support import ManualClock

pytestmark = pytest.mark.integration


async def test_the_delivery_loop_ends_when_asked_to_stop(
    notifier_settings: Settings, clock: ManualClock
) -> None:
    app = create_app(notifier_settings, clock)
    async with serving(app):
        pass
    assert app.state.runtime.supervisor.cut_short == []

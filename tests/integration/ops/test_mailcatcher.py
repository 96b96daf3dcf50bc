"""The SMTP sink the demo and its auditor read: each copy kept with when its hand-over
began (MAIL) and when the sink accepted it (the end of DATA), from the sink's clock."""

from __future__ import annotations

import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from ops import mailcatcher
from ops.audit import mails_in
from tests.integration.notifier.support import free_port

pytestmark = pytest.mark.integration


async def test_each_copy_is_kept_with_when_its_hand_over_began_and_ended(tmp_path: Path) -> None:
    port = free_port()
    controller = mailcatcher.start("127.0.0.1", port, tmp_path)
    try:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Message-ID"] = "a@x.example", "b@y.example", "<n1@kap>"
        mail.set_content("hello")
        before = time.time()
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            await smtp.send_message(mail)
        after = time.time()
    finally:
        controller.stop()

    [(accepted, began, kept)] = mailcatcher.read_mails_accepted(tmp_path)
    assert kept["Message-ID"] == "<n1@kap>"
    assert accepted is not None
    assert began is not None
    assert before <= began <= accepted <= after
    [copy] = mails_in(tmp_path)
    assert (copy.began_at, copy.accepted_at) == (began, accepted)

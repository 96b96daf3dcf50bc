"""A real local SMTP server for tests and the demo (aiosmtpd).

Every accepted message is written as an .eml file into a folder, so a test (or
a person) can read exactly what the notifier sent. Recipients at
`reject.example` are refused with 550, to exercise permanent failures.

    python -m ops.mailcatcher --port 1025 --maildir .infra/mail
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

REJECTED_DOMAIN = "reject.example"


class MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        maildir.mkdir(parents=True, exist_ok=True)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # When the hand-over began (the sender's first command of the mail): what was checked
        # true before it cannot have seen a change made while the mail was on the wire.
        envelope.began_ns = time.time_ns()  # type: ignore[attr-defined]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower().endswith("@" + REJECTED_DOMAIN):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        began = getattr(envelope, "began_ns", None) or time.time_ns()
        name = f"{time.time_ns()}-{began}-{uuid.uuid4().hex[:8]}.eml"
        content = envelope.original_content or b""
        temporary = self.maildir / f".{name}.tmp"
        temporary.write_bytes(content)
        temporary.rename(self.maildir / name)  # readers never see half a message
        return "250 Message accepted for delivery"


def read_mails(maildir: Path) -> list[EmailMessage]:
    """Every message the server accepted, oldest first."""
    return [mail for _, _, mail in read_mails_accepted(maildir)]


def read_mails_accepted(
    maildir: Path,
) -> list[tuple[float | None, float | None, EmailMessage]]:
    """Every message the server accepted, oldest first, with when (real time, s) it was
    accepted and when its hand-over began (its MAIL command).

    Both are read from the file's name (`handle_DATA` names it by time_ns); None for a
    file named otherwise (put there by hand or by another tool).
    """
    mails = []
    for path in sorted(maildir.glob("*.eml")):
        parsed: Any = message_from_bytes(path.read_bytes(), policy=policy.default)
        stamps = path.name.split("-")
        accepted = int(stamps[0]) / 1e9 if len(stamps) > 1 and stamps[0].isdigit() else None
        began = int(stamps[1]) / 1e9 if len(stamps) > 2 and stamps[1].isdigit() else None
        mails.append((accepted, began, parsed))
    return mails


def start(host: str, port: int, maildir: Path) -> Controller:
    controller = Controller(MaildirHandler(maildir), hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=Path(".infra/mail"))
    args = parser.parse_args()
    controller = start(args.host, args.port, args.maildir)
    print(f"smtp listening on {args.host}:{args.port}, mail in {args.maildir}", flush=True)

    async def wait_for_signal() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(wait_for_signal())
    controller.stop()


if __name__ == "__main__":
    main()

"""The ways out: email over SMTP and SMS through a Twilio-style REST provider.

A channel either hands the message over or says whether trying again can help:
`TransientSendError` (server unreachable, busy, 4xx SMTP, HTTP 5xx, timeouts) or
`PermanentSendError` (the address or number is refused). Reasons name codes,
never the address, number or text, so they can travel in events and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from datetime import datetime
from email.charset import QP, Charset
from email.errors import MessageError
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr
from typing import Protocol
from uuid import UUID

import aiosmtplib
import httpx

from services.notifier.templates import RenderedMessage

SEND_TIMEOUT_S = 10.0
# SMTP connections per process: mails handed over at once. The send window's opening
# puts a clinic's night of reminders on one instant; with 16, make demo's reminders
# waited for a connection in a third of the late cases, with 32 in none.
DEFAULT_CONNECTIONS = 32
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable bodies, as EmailMessage would write them


class SendError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """Trying again later may work."""


class PermanentSendError(SendError):
    """This message will never get through as it is."""


@dataclass(frozen=True)
class Outgoing:
    notification_id: UUID
    to: str
    rendered: RenderedMessage
    sender_name: str
    at: datetime
    # The channel's own encoding of everything but the hand-over instant, made ahead
    # (Sender.prepare): at the instant itself only the time is added.
    prepared: bytes | None = None


class Sender(Protocol):
    def prepare(self, outgoing: Outgoing) -> Outgoing:
        """`outgoing` with the costly encoding done ahead of its instant (PermanentSendError
        if it can never be sent as it is)."""
        ...

    async def send(self, outgoing: Outgoing) -> None: ...


def message_id(notification_id: UUID) -> str:
    """One Message-ID per notification, so a duplicate is visible in any mailbox."""
    return f"<{notification_id}@kap>"


class EmailChannel:
    """Mail over a small pool of SMTP connections per process, opened when needed and kept.

    A connection per mail costs a TCP handshake, EHLO and QUIT each time (measured:
    the largest single cost of a confirmation in make bench). Up to `connections`
    mails go at once, each on a connection of its own (messages falling due
    together are not queued behind one slow exchange); one that fails is
    dropped, so a later send opens a fresh one.
    """

    def __init__(
        self, host: str, port: int, sender: str, connections: int = DEFAULT_CONNECTIONS
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._idle: list[aiosmtplib.SMTP] = []
        self._turns = asyncio.Semaphore(max(connections, 1))

    def prepare(self, outgoing: Outgoing) -> Outgoing:
        """The mail composed ahead but for its Date, which is the hand-over instant.

        Composing takes about a millisecond of CPU: messages falling due at one
        instant (the send window opening) would each wait for the others'.
        """
        try:
            return replace(outgoing, prepared=self.compose(outgoing))
        except (ValueError, TypeError, MessageError) as unusable:
            # e.g. a line break in the address: it would forge headers, so never sent.
            raise PermanentSendError("the address cannot be put in an email header") from unusable

    def compose(self, outgoing: Outgoing) -> bytes:
        """The mail as sent but for its Date header: text, and HTML when there is some, as
        alternatives.

        Built with the compat32 MIME classes, five times cheaper than
        EmailMessage's header registry (make bench profile), so the checks that
        registry made are made here: no header value may carry a line break.
        """
        rendered = outgoing.rendered
        mail: Message = _text_part(rendered.text, "plain")
        if rendered.html:
            mail = MIMEMultipart("alternative", _subparts=[mail])
            mail.attach(_text_part(rendered.html, "html"))
        headers = {
            "From": formataddr((outgoing.sender_name, self._sender), charset="utf-8"),
            "To": outgoing.to,
            "Subject": rendered.subject or "",
            "Message-ID": message_id(outgoing.notification_id),
        }
        for name, value in headers.items():
            # Any line boundary Python knows (\x0b, \x85, \u2028...), or a control
            # character, could split or bend the header: refused, never sent.
            if len(value.splitlines()) > 1 or any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"a line break or control character in the {name} header")
            mail[name] = value if value.isascii() else Header(value, "utf-8").encode()
        return mail.as_bytes()

    async def send(self, outgoing: Outgoing) -> None:
        composed = outgoing.prepared or self.prepare(outgoing).prepared or b""
        # Headers may come in any order: the Date goes first.
        mail = b"Date: " + format_datetime(outgoing.at).encode() + b"\n" + composed
        async with self._turns:
            smtp = self._idle.pop() if self._idle else None
            try:
                smtp = await self._connected(smtp)
                await smtp.sendmail(self._sender, [outgoing.to], mail)
            except aiosmtplib.SMTPRecipientsRefused as refused:
                await self._reset(smtp)
                codes = sorted({r.code for r in refused.recipients})
                error = f"smtp recipient refused ({', '.join(map(str, codes))})"
                raise _by_code(min(codes), error) from refused
            except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as down:
                _drop(smtp)
                raise TransientSendError(f"smtp unavailable ({type(down).__name__})") from down
            except aiosmtplib.SMTPSenderRefused as refused:
                await self._reset(smtp)
                # Our own From address: a configuration fault, not this message's.
                raise TransientSendError(f"smtp refused the sender ({refused.code})") from refused
            except aiosmtplib.SMTPResponseException as answer:
                await self._reset(smtp)
                raise _by_code(answer.code, f"smtp answered {answer.code}") from answer
            except (aiosmtplib.SMTPException, OSError) as failed:
                _drop(smtp)
                raise TransientSendError(f"smtp failed ({type(failed).__name__})") from failed
            except ValueError:
                # aiosmtplib refused the address itself (before any byte was sent).
                await self._reset(smtp)
                raise PermanentSendError("the address cannot be used for SMTP") from None
            except BaseException:
                _drop(smtp)  # cancelled mid-exchange: the connection is in an unknown state
                raise
            else:
                self._idle.append(smtp)

    async def _connected(self, smtp: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP:
        if smtp is None or not smtp.is_connected:
            _drop(smtp)
            smtp = aiosmtplib.SMTP(hostname=self._host, port=self._port, timeout=SEND_TIMEOUT_S)
            await smtp.connect()
        return smtp

    async def _reset(self, smtp: aiosmtplib.SMTP | None) -> None:
        """After a refused message: the same connection serves the next one, once RSET."""
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await smtp.rset()
                self._idle.append(smtp)
                return
        except (aiosmtplib.SMTPException, OSError):
            pass
        _drop(smtp)


def _drop(smtp: aiosmtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(Exception):  # it is being thrown away either way
            smtp.close()


def _text_part(text: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, _UTF8_QP)
    return part


def _by_code(code: int, reason: str) -> SendError:
    return PermanentSendError(reason) if code >= 500 else TransientSendError(reason)


class SmsChannel:
    """POST {base}/2010-04-01/Accounts/{sid}/Messages.json with To, From, Body (basic auth).

    One HTTP client per process, kept (its connection pool lets sends go at once).
    """

    def __init__(self, base_url: str, account_sid: str, auth_token: str, sender: str) -> None:
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = (account_sid, auth_token)
        self._sender = sender
        self._client: httpx.AsyncClient | None = None

    def prepare(self, outgoing: Outgoing) -> Outgoing:
        return outgoing  # a form of three fields: nothing worth doing ahead

    async def send(self, outgoing: Outgoing) -> None:
        form = {"To": outgoing.to, "From": self._sender, "Body": outgoing.rendered.text}
        # Providers that deduplicate use this; one that does not still logs it.
        headers = {"Idempotency-Key": str(outgoing.notification_id)}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SEND_TIMEOUT_S)
        try:
            response = await self._client.post(
                self._url, data=form, auth=self._auth, headers=headers
            )
        except httpx.HTTPError as failed:
            raise TransientSendError(
                f"sms provider unreachable ({type(failed).__name__})"
            ) from failed
        if response.is_success:
            return
        reason = f"sms provider answered {response.status_code}{_provider_code(response)}"
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSendError(reason)
        raise PermanentSendError(reason)


def _provider_code(response: httpx.Response) -> str:
    """The provider's numeric error code; its message may quote the number, so not that."""
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    return f" (code {code})" if isinstance(code, int) else ""

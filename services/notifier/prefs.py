"""How a client may be reached: the channels their preferences allow, today.

What the notifier knows of a client's contact preferences (`ContactPrefs`:
channel, SMS consent, opt-outs; never the address or number itself, rule 14),
the channel a new message uses (`client_channel`), and the channel a planned
one is sent on once the client has changed their mind (`readdress`). Pure.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from services.notifier.model import PlannedMessage, notification_id
from shared.events import Channel, Contact, ContactPreferencesChanged


class ContactPrefs(BaseModel):
    """What the notifier may use to reach a client; never the address or number itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preferred_channel: Channel = "email"
    sms_consent: bool = False
    has_phone: bool = False
    opted_out: frozenset[Channel] = frozenset()

    @classmethod
    def from_contact(
        cls, contact: Contact, opted_out: frozenset[Channel] = frozenset()
    ) -> ContactPrefs:
        """From a (repeated) consultation request; earlier opt-outs are kept."""
        return cls(
            preferred_channel=contact.preferred_channel,
            sms_consent=contact.sms_consent,
            has_phone=contact.phone is not None,
            opted_out=opted_out,
        )

    def updated(self, change: ContactPreferencesChanged) -> ContactPrefs:
        """Prefs after an opt-out (or opt back in); honoured from this moment."""
        opted_out = (
            self.opted_out | {change.channel}
            if change.opted_out
            else self.opted_out - {change.channel}
        )
        return self.model_copy(update={"opted_out": opted_out})

    def allows(self, channel: Channel) -> bool:
        if channel in self.opted_out:
            return False
        return channel == "email" or (self.sms_consent and self.has_phone)


def client_channel(prefs: ContactPrefs) -> Channel | None:
    """The preferred channel if allowed, else the other one if allowed, else None.

    SMS needs recorded consent and a phone (rule 14); an opted-out channel is
    never used. A client who opted out of email but consented to SMS gets SMS.
    """
    fallback: Channel = "sms" if prefs.preferred_channel == "email" else "email"
    for channel in (prefs.preferred_channel, fallback):
        if prefs.allows(channel):
            return channel
    return None


def readdress(message: PlannedMessage, prefs: ContactPrefs) -> PlannedMessage | None:
    """The message as it may be sent under today's prefs; call it just before sending.

    A client may opt out after a reminder was planned. The message keeps its
    channel while that is allowed, moves to the other channel (with that
    channel's notification id) when not, and is dropped (None) when neither is.
    Staff messages go unchanged.
    """
    if message.recipient == "staff" or prefs.allows(message.channel):
        return message
    channel = client_channel(prefs)
    if channel is None:
        return None
    return message.model_copy(
        update={
            "channel": channel,
            "notification_id": notification_id(
                message.cause_event_id, message.kind, channel, "client", message.appointment_id
            ),
        }
    )

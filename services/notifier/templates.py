"""Rendering planned messages with Jinja2: email (subject, text, HTML) and SMS.

Templates live in `templates/<kind>/` as `subject.txt`, `body.txt`, `body.html`
and `sms.txt`, beside shared layouts `_layout.txt` and `_layout.html`. A clinic
overrides any part with a template string; overrides may extend the layouts.
Undefined variables fail (StrictUndefined), HTML is autoescaped, and a
rendered SMS or subject that names a drug or diagnosis is refused (rule 14).
The client's first name appears in email bodies only: SMS and subjects show on
lock screens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2

from services.notifier.model import MessageKind, PlannedMessage, phi_terms_in
from shared.events import Channel

TEMPLATE_DIR = Path(__file__).parent / "templates"

Part = Literal["subject", "text", "html", "sms"]
PART_FILES: dict[str, str] = {
    "subject": "subject.txt",
    "text": "body.txt",
    "html": "body.html",
    "sms": "sms.txt",
}
Overrides = Mapping[str, Mapping[str, str]]
"""{kind: {part: template source}}, e.g. {"reminder_2h": {"sms": "..."}}."""

_KINDS = frozenset(MessageKind)
_BLANK_RUNS = re.compile(r"\n{3,}")


class TemplateRenderError(jinja2.TemplateError):
    """A message could not be rendered: the notification fails, permanently."""

    def __init__(self, kind: str, part: str, reason: str) -> None:
        super().__init__(f"cannot render {part} of {kind}: {reason}")
        self.kind = kind
        self.part = part


class MinimumPhiError(TemplateRenderError):
    """A rendered SMS or subject would reveal a drug or diagnosis (rule 14)."""


@dataclass(frozen=True)
class RenderedMessage:
    """Subject and HTML only for email; an SMS has its text alone."""

    text: str
    subject: str | None = None
    html: str | None = None


class TemplateSet:
    """The built-in templates under one clinic's overrides; build once per clinic."""

    def __init__(self, overrides: Overrides | None = None) -> None:
        sources = _override_sources(overrides or {})
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.DictLoader(sources), jinja2.FileSystemLoader(TEMPLATE_DIR)]
            ),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Compile overrides now, so a broken one fails when the clinic is loaded.
        for name in sources:
            try:
                self._env.get_template(name)
            except jinja2.TemplateSyntaxError as error:
                kind, _, file = name.partition("/")
                raise TemplateRenderError(kind, file, error.message or "syntax error") from error

    def render(self, message: PlannedMessage, *, client_name: str | None = None) -> RenderedMessage:
        """Render `message`; `client_name` (the contact's name) is required for client messages."""
        variables = dict(message.context)
        if client_name:
            variables["first_name"] = client_name.split()[0]
        return self.render_kind(message.kind, message.channel, variables)

    def render_kind(
        self, kind: MessageKind, channel: Channel, variables: Mapping[str, object]
    ) -> RenderedMessage:
        if channel == "sms":
            return RenderedMessage(text=self._shown_on_screen(kind, "sms", variables))
        return RenderedMessage(
            subject=" ".join(self._shown_on_screen(kind, "subject", variables).split()),
            text=self._render(kind, "text", variables) + "\n",
            html=self._render(kind, "html", variables) + "\n",
        )

    def _shown_on_screen(
        self, kind: MessageKind, part: Part, variables: Mapping[str, object]
    ) -> str:
        rendered = self._render(kind, part, variables)
        if found := phi_terms_in(rendered):
            raise MinimumPhiError(kind, part, f"it must not say {sorted(set(found))}")
        return rendered

    def _render(self, kind: MessageKind, part: Part, variables: Mapping[str, object]) -> str:
        try:
            template = self._env.get_template(f"{kind}/{PART_FILES[part]}")
            rendered = template.render(variables)
        except jinja2.TemplateNotFound as error:
            raise TemplateRenderError(kind, part, f"no template {error.name}") from error
        except jinja2.TemplateError as error:
            raise TemplateRenderError(kind, part, error.message or type(error).__name__) from error
        return _BLANK_RUNS.sub("\n\n", rendered.strip())


def _override_sources(overrides: Overrides) -> dict[str, str]:
    """Override sources under the names of the files they replace; unknown names fail early."""
    sources = {}
    for kind, parts in overrides.items():
        if kind not in _KINDS:
            raise ValueError(f"template override for unknown message kind {kind!r}")
        for part, source in parts.items():
            if part not in PART_FILES:
                raise ValueError(f"template override for unknown part {part!r} of {kind}")
            sources[f"{kind}/{PART_FILES[part]}"] = source
    return sources


def render(
    message: PlannedMessage, *, client_name: str | None = None, overrides: Overrides | None = None
) -> RenderedMessage:
    """One-off rendering; a service renders through a TemplateSet it keeps per clinic."""
    return TemplateSet(overrides).render(message, client_name=client_name)

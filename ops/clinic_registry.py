"""Every service's check of its own section of a clinic, gathered for the registry's
writers (`kapctl clinics`, the scheduler's admin API): a clinic is refused at write
time if any service would refuse it on use.

ops, not chassis: it names the services, which chassis never imports. The scheduler's
composition root takes these checks from here for its admin route, the one place a
service reaches another's rules; the alternative, a fourth process for one route,
would cost a deployment for a few lines.
"""

from __future__ import annotations

from collections.abc import Mapping

from chassis.clinic_registry import SectionCheck
from services.notifier.config import check_section as notifier_section
from services.notifier.model import MessageKind
from services.notifier.templates import PART_FILES, TEMPLATE_DIR
from services.scheduler.clinic_section import check_section as scheduler_section

SECTION_CHECKS: Mapping[str, SectionCheck] = {
    "scheduler": scheduler_section,
    "notifier": notifier_section,
}
# The kinds of message a clinic may override the templates of (the scheduler's
# message-templates route, which writes them to the registry).
MESSAGE_KINDS: tuple[str, ...] = tuple(kind.value for kind in MessageKind)


def built_in_templates(kind: str) -> dict[str, str]:
    """The notifier's own templates of one kind, part by part (those it has), for a
    clinic admin to start an override from."""
    found = {}
    for part, file in PART_FILES.items():
        path = TEMPLATE_DIR / kind / file
        if kind in MESSAGE_KINDS and path.is_file():
            found[part] = path.read_text(encoding="utf-8")
    return found

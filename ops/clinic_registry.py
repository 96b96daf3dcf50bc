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
from services.scheduler.clinic_section import check_section as scheduler_section

SECTION_CHECKS: Mapping[str, SectionCheck] = {
    "scheduler": scheduler_section,
    "notifier": notifier_section,
}

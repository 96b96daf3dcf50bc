"""The notifier's HTTP API: what was planned for a client and how it went, for operators.

Ids, kinds, channels, times and states only: never an address, a number or a text.
"""

from __future__ import annotations

import json
from uuid import UUID

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from chassis.clock import Clock
from chassis.http import CLINIC_RESPONSES, AuthorisedClinic, roles, staff_actor
from chassis.staff_tokens import CLINICAL
from services.notifier.alerts import Alert, Alerts
from services.notifier.plans import PlanStore


class NotificationView(BaseModel):
    notification_id: UUID
    kind: str
    recipient: str
    channel: str
    send_at: AwareDatetime
    appointment_id: UUID | None
    cause_event_id: str
    state: str
    attempts: int
    sent_as: UUID | None = None
    sent_channel: str | None = None
    reason: str | None = None
    permanent: bool | None = None


def _view(record: dict[str, str]) -> NotificationView:
    # A finished message keeps its plan's short fields only (keys.finished_fields).
    plan = json.loads(record["plan"]) if "plan" in record else record
    return NotificationView(
        notification_id=plan.get("notification_id") or record["notification_id"],
        kind=plan["kind"],
        recipient=plan["recipient"],
        channel=plan["channel"],
        send_at=plan["send_at"],
        appointment_id=plan.get("appointment_id"),
        cause_event_id=plan["cause_event_id"],
        state=record["state"],
        attempts=int(record.get("attempts", 0)),
        sent_as=record.get("sent_as") or None,
        sent_channel=record.get("sent_channel"),
        reason=record.get("reason") or record.get("last_error"),
        permanent=record["permanent"] == "true" if "permanent" in record else None,
    )


class AlertView(BaseModel):
    alert_id: str
    client_id: UUID
    raised_at: AwareDatetime
    acknowledged_by: str | None
    acknowledged_at: AwareDatetime | None


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    acknowledged_by: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", description="A staff id"
    )


def _alert_view(alert: Alert) -> AlertView:
    return AlertView(**{name: getattr(alert, name) for name in AlertView.model_fields})


def routes(plans: PlanStore, alerts: Alerts | None = None, clock: Clock | None = None) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["notifier"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )

    @router.get(
        "/clients/{client_id}/notifications",
        summary="Every message planned for a client, with its delivery state",
    )
    async def notifications(clinic: AuthorisedClinic, client_id: UUID) -> list[NotificationView]:
        records = await plans.notifications(clinic.id, client_id)
        if not records:
            # As for every other clinic route: a client this clinic does not know is not found.
            raise HTTPException(404, "not found")
        return sorted((_view(r) for r in records), key=lambda v: (v.send_at, v.kind))

    if alerts is None or clock is None:
        return router

    @router.get("/alerts", summary="Urgent clinical alerts, oldest first")
    async def list_alerts(
        clinic: AuthorisedClinic,
        open_only: bool = Query(default=True, alias="open", description="Only unacknowledged"),
    ) -> list[AlertView]:
        return [_alert_view(a) for a in await alerts.listed(clinic.id, open_only=open_only)]

    @router.post(
        "/alerts/{alert_id}/acknowledge",
        summary="Take ownership of an urgent alert: its escalation to on-call is called off",
        dependencies=[roles(*CLINICAL)],
    )
    async def acknowledge(
        clinic: AuthorisedClinic,
        alert_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
        body: Acknowledgement = Body(),
    ) -> AlertView:
        owned = await alerts.acknowledge(clinic.id, alert_id, body.acknowledged_by, clock.now())
        if owned is None:
            raise HTTPException(404, "not found")
        return _alert_view(owned)

    return router

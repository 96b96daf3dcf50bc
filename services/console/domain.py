"""Who may do what in the console: staff members, their roles, and each action's roles.

Roles (chassis.staff_tokens, which the services check too) are per clinic: a front
desk books and receives people, a clinician records clinical facts, a clinic admin
does both and changes the clinic's settings. A group admin may also switch between
every clinic of the group. The console checks the role before it calls a service;
an action's form is not even offered to a role without it.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from chassis.staff_tokens import Role

# Staff ids: pseudonymous, stable per account (what events name, never the address).
STAFF_NAMESPACE = uuid.UUID("0f6d1c52-8a3e-4c59-9b8e-2d7f4a6b1e90")


class Action(StrEnum):
    REQUEST_CONSULTATION = "request_consultation"
    RECORD_CONSULTATION = "record_consultation"
    RECORD_SCREENING = "record_screening"
    ENROL = "enrol"
    CHECK_IN = "check_in"
    RECORD_SESSION = "record_session"
    COMPLETE_SESSION = "complete_session"
    MARK_MISSED = "mark_missed"
    CANCEL_SESSION = "cancel_session"
    RESCHEDULE = "reschedule"
    ENTER_MEASURE = "enter_measure"
    CHANGE_COURSE = "change_course"
    SET_BOOSTERS = "set_boosters"
    EDIT_SETTINGS = "edit_settings"


# Front desk: people and their bookings; clinicians: clinical facts; admins: all.
ALLOWED: dict[Action, frozenset[Role]] = {
    Action.REQUEST_CONSULTATION: frozenset(Role),
    Action.RECORD_CONSULTATION: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.RECORD_SCREENING: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.ENROL: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.CHECK_IN: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.RECORD_SESSION: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.COMPLETE_SESSION: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.MARK_MISSED: frozenset(Role),
    Action.CANCEL_SESSION: frozenset(Role),
    Action.RESCHEDULE: frozenset(Role),
    Action.ENTER_MEASURE: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.CHANGE_COURSE: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.SET_BOOSTERS: frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN}),
    Action.EDIT_SETTINGS: frozenset({Role.CLINIC_ADMIN}),
}


def staff_id_of(email: str) -> str:
    """A staff member's pseudonymous id: the same for the same address, whatever its case
    (an address typed at a sign-in names the account it would be, known or not)."""
    return str(uuid.uuid5(STAFF_NAMESPACE, email.strip().lower()))


class StaffMember(BaseModel):
    """A staff account: never shown or logged with its password hash."""

    model_config = ConfigDict(frozen=True)

    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    role: Role
    clinics: tuple[str, ...] = Field(min_length=1)
    group_admin: bool = False
    password_hash: str

    @property
    def staff_id(self) -> str:
        return staff_id_of(self.email)

    def may(self, action: Action) -> bool:
        return self.role in ALLOWED[action]

    def works_at(self, clinic_id: str, every_clinic: tuple[str, ...] = ()) -> bool:
        """A group admin works at every clinic of the group; others at theirs."""
        return clinic_id in self.clinics or (self.group_admin and clinic_id in every_clinic)


# Argon2id with the library's defaults (RFC 9106's second recommended set).
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False

"""Appointments: book, list (a patient's, or the actor's schedule), read, reschedule, cancel
and complete, scoped to the actor and audited.

A provider is never double-booked: the database's exclusion constraint decides at the write
(the repository raises Conflict naming ``starts_at``), never a read before the write.
"""
from __future__ import annotations

import datetime as dt

from clarity.audit import CREATE, READ, UPDATE, AuditEvent
from clarity.errors import Conflict, Invalid, NotFound, PreconditionFailed
from clarity.pagination import keyset, page
from clarity.security.access import PHI_ROLES, PROVIDER, Actor, require_role
from clarity.services.patient_access import mark_emergency, require_patient

ENTITY = "appointment"
SCHEDULED, CANCELLED, COMPLETED = "scheduled", "cancelled", "completed"
MAX_LENGTH = dt.timedelta(hours=8)  # as appointments_ends_at_check
CLOCK_SKEW = dt.timedelta(minutes=5)  # a start this far in the past still counts as now
DEFAULT_WINDOW = dt.timedelta(days=7)
MAX_WINDOW = dt.timedelta(days=31)
STALE = "The appointment has changed since you read it; fetch it again."
APPOINTMENT_KEY = keyset("starts_at", "id")


def book_appointment(uow, actor: Actor, patient_id, *, starts_at: dt.datetime, ends_at: dt.datetime,
                     provider_id=None):
    """Book the patient with a provider over [starts_at, ends_at).

    The provider defaults to the actor when a provider books (a provider books only
    themself), and to the patient's provider when an admin does; an admin may name any
    active provider. Raises Forbidden, NotFound (patient), Invalid (times, provider_id) and
    Conflict (field ``starts_at``: the provider is busy then).
    """
    fields = ("starts_at", "ends_at") + (("provider_id",) if provider_id is not None else ())
    event = AuditEvent(CREATE, "appointment.create", ENTITY, patient_id=patient_id, fields=fields)
    uow.audit(event)
    patient = require_patient(uow, actor, patient_id, event)
    provider_id = _seeing_provider(uow, actor, patient, provider_id)
    _check_times(starts_at, ends_at, starts_changed=True)
    appointment = uow.appointments.add(patient_id=patient["id"], provider_id=provider_id,
                                       starts_at=starts_at, ends_at=ends_at, created_by=actor.id)
    event.entity_id = appointment.id
    return appointment


def list_patient_appointments(uow, actor: Actor, patient_id, *, window_start=None, window_end=None,
                              status=None, after=None, limit: int = 50):
    """A keyset page of the patient's appointments overlapping the optional window, by start
    time: ``(appointments, next_after)``, ``next_after`` None on the last page."""
    criteria = {"from": window_start, "to": window_end, "status": status}
    event = AuditEvent(READ, "appointment.list", ENTITY, patient_id=patient_id,
                       fields=tuple(k for k, v in criteria.items() if v is not None))
    uow.audit(event)
    patient = require_patient(uow, actor, patient_id, event)
    _require_aware(window_start, "from")
    _require_aware(window_end, "to")
    if window_start and window_end and window_end <= window_start:
        raise Invalid("to must be after from.", field="to")
    rows = uow.appointments.list_for_patient(patient["id"], window_start=window_start, window_end=window_end,
                                             status=status, after=after, limit=limit + 1)
    return page(rows, limit, APPOINTMENT_KEY)


def list_schedule(uow, actor: Actor, *, window_start=None, window_end=None, provider_id=None,
                  status=None, after=None, limit: int = 50):
    """The actor's schedule: a provider's own appointments (those they see the patient in),
    an admin's everyone's (or ``provider_id``'s), overlapping [window_start, window_end).

    The window defaults to the 7 days from now (one bound given: 7 days from or to it) and
    spans at most 31 days. Returns ``(appointments, next_after, (window_start, window_end))``.
    Every appointment returned is audited with its patient.
    """
    criteria = {"from": window_start, "to": window_end, "provider_id": provider_id, "status": status}
    fields = tuple(k for k, v in criteria.items() if v is not None)
    uow.audit(AuditEvent(READ, "appointment.schedule", ENTITY, fields=fields))
    require_role(actor, *PHI_ROLES)
    window_start, window_end = _window(window_start, window_end)
    rows = uow.appointments.list_schedule(actor, window_start=window_start, window_end=window_end,
                                          provider_id=provider_id, status=status, after=after, limit=limit + 1)
    items, next_after = page(rows, limit, APPOINTMENT_KEY)
    for appointment in items:
        uow.audit(AuditEvent(READ, "appointment.schedule", ENTITY, appointment.id, appointment.patient_id,
                             fields=fields))
    return items, next_after, (window_start, window_end)


def get_appointment(uow, actor: Actor, appointment_id):
    """The appointment, or NotFound when it does not exist or the actor may not see it."""
    event = AuditEvent(READ, "appointment.read", ENTITY, appointment_id)
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    return _visible(uow, actor, appointment_id, event)


def update_appointment(uow, actor: Actor, appointment_id, version: int, changes: dict):
    """Reschedule (``starts_at`` and/or ``ends_at``) or change the status (``cancelled``, or
    ``completed`` once started) of a scheduled appointment when ``version`` matches.

    Raises NotFound, PreconditionFailed (stale version), Invalid (times), Conflict (the
    appointment is no longer scheduled, is completed before it started, or the provider is
    busy at the new time: field ``starts_at``).
    """
    event = AuditEvent(UPDATE, "appointment.update", ENTITY, appointment_id, fields=tuple(changes))
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    current = _visible(uow, actor, appointment_id, event)
    if current.version != version:
        raise PreconditionFailed(STALE)
    if current.status != SCHEDULED:
        raise Conflict(f"A {current.status} appointment cannot be changed.", field="status")
    if "status" in changes:
        if changes["status"] == COMPLETED and current.starts_at > _now() + CLOCK_SKEW:
            raise Conflict("An appointment can be completed only once it has started.", field="status")
        updated = uow.appointments.set_status(appointment_id, version, actor, changes["status"])
    else:
        starts_at = changes.get("starts_at", current.starts_at)
        ends_at = changes.get("ends_at", current.ends_at)
        _check_times(starts_at, ends_at, starts_changed="starts_at" in changes)
        updated = uow.appointments.reschedule(appointment_id, version, actor,
                                              starts_at=starts_at, ends_at=ends_at)
    if updated is None:
        raise PreconditionFailed(STALE)
    return updated


def _visible(uow, actor, appointment_id, event):
    """The appointment if the actor may see it (NotFound otherwise), ``event`` given its
    patient. The provider seeing the patient in it reaches it as theirs; anyone else reaches
    it through its patient, audited as require_patient audits the patient's data, from the
    patient's provider read with the appointment."""
    appointment = uow.appointments.get(appointment_id, actor)
    if appointment is None:
        raise NotFound("No such appointment.")
    event.patient_id = appointment.patient_id
    mark_emergency(event, actor, appointment.provider_id, appointment.patient_provider_id)
    return appointment


def _seeing_provider(uow, actor: Actor, patient: dict, provider_id):
    if actor.role == PROVIDER:
        if provider_id not in (None, actor.id):
            raise Invalid("A provider can only book appointments with themself.", field="provider_id")
        return actor.id
    provider_id = provider_id or patient["provider_id"]
    provider = uow.users.get(provider_id)
    if provider is None or provider.role != PROVIDER or provider.disabled:
        raise Invalid("provider_id must name an active provider.", field="provider_id")
    return provider_id


def _check_times(starts_at, ends_at, *, starts_changed: bool) -> None:
    _require_aware(starts_at, "starts_at")
    _require_aware(ends_at, "ends_at")
    if starts_changed and starts_at < _now() - CLOCK_SKEW:
        raise Invalid("An appointment cannot start in the past.", field="starts_at")
    if ends_at <= starts_at:
        raise Invalid("ends_at must be after starts_at.", field="ends_at")
    if ends_at - starts_at > MAX_LENGTH:
        raise Invalid("An appointment lasts at most 8 hours.", field="ends_at")


def _require_aware(value, field) -> None:
    if value is not None and value.utcoffset() is None:
        raise Invalid("Timestamps must carry a time zone offset.", field=field)


def _window(window_start, window_end) -> tuple[dt.datetime, dt.datetime]:
    _require_aware(window_start, "from")
    _require_aware(window_end, "to")
    if window_start is None and window_end is None:
        window_start = _now()
    if window_start is None:
        window_start = window_end - DEFAULT_WINDOW
    if window_end is None:
        window_end = window_start + DEFAULT_WINDOW
    if window_end <= window_start:
        raise Invalid("to must be after from.", field="to")
    if window_end - window_start > MAX_WINDOW:
        raise Invalid("The window spans at most 31 days.", field="to")
    return window_start, window_end


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)

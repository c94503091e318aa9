"""Patients: create, read, list, search, update and delete, scoped to the actor and audited."""
from __future__ import annotations

import datetime as dt

from clarity.audit import CREATE, DELETE, READ, UPDATE, AuditEvent
from clarity.errors import Forbidden, Invalid, NotFound, PreconditionFailed
from clarity.pagination import keyset, page
from clarity.security.access import PHI_ROLES, PROVIDER, Actor, require_role
from clarity.services.patient_access import mark_emergency, require_role_audited

ENTITY = "patient"
STALE = "The patient has changed since you read it; fetch it again."
PATIENT_KEY = keyset("created_at", "id")


def create_patient(uow, actor: Actor, *, phi: dict, status: str = "active", provider_id=None):
    """Register a patient. A provider registers their own patients; an admin names the
    provider, who must be an active provider. Raises Invalid, Conflict (MRN taken), Forbidden."""
    event = AuditEvent(CREATE, "patient.create", ENTITY, fields=tuple(phi) + ("status", "provider_id"))
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    if actor.role == PROVIDER:
        if provider_id not in (None, actor.id):
            raise Invalid("A provider can only register their own patients.", field="provider_id")
        provider_id = actor.id
    elif provider_id is None:
        raise Invalid("provider_id is required.", field="provider_id")
    else:
        provider = uow.users.get(provider_id)
        if provider is None or provider.role != PROVIDER or provider.disabled:
            raise Invalid("provider_id must name an active provider.", field="provider_id")
    patient = uow.patients.add(provider_id=provider_id, status=status, phi=phi)
    event.entity_id = event.patient_id = patient.id
    return patient


def get_patient(uow, actor: Actor, patient_id):
    """The patient, or NotFound when it does not exist or is not the actor's."""
    event = AuditEvent(READ, "patient.read", ENTITY, patient_id, patient_id)
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    patient = uow.patients.get(patient_id, actor)
    if patient is None:
        raise NotFound("No such patient.")
    mark_emergency(event, actor, patient.provider_id)
    return patient


def get_overview(uow, actor: Actor, patient_id, *, kinds):
    """The patient with the latest reading per kind, open alerts, the next appointment and the
    twin's current version, read in one statement; NotFound outside the actor's scope."""
    event = AuditEvent(READ, "patient.overview", ENTITY, patient_id, patient_id,
                       fields=("phi", "biometrics", "alerts", "appointments", "digital_twin"))
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    found = uow.patients.get_overview(patient_id, actor, kinds=kinds)
    if found is None:
        raise NotFound("No such patient.")
    mark_emergency(event, actor, found[0].provider_id)
    return found


def list_patients(uow, actor: Actor, *, status=None, born_from: dt.date | None = None,
                  born_to: dt.date | None = None, mrn=None, email=None, last_name=None,
                  after=None, limit: int = 50, event_type="patient.list"):
    """A keyset page of the actor's patients: ``(patients, next_after)``.

    ``born_from``/``born_to`` narrow by the plaintext birth year in SQL, then by the decrypted
    date of birth; pages are refilled so a page is short only at the end. ``next_after`` is
    the cursor of the next page, or None on the last page.
    """
    criteria = {"status": status, "born_from": born_from, "born_to": born_to,
                "mrn": mrn, "email": email, "last_name": last_name}
    fields = tuple(name for name, value in criteria.items() if value is not None)
    event = AuditEvent(READ, event_type, ENTITY, fields=fields)
    require_role_audited(uow, actor, event)
    found, scanned_to, exhausted = [], after, False
    while len(found) <= limit and not exhausted:
        batch = uow.reads.patients.list(
            actor, status=status, mrn=mrn, email=email, last_name=last_name,
            birth_year_from=born_from.year if born_from else None,
            birth_year_to=born_to.year if born_to else None,
            after=scanned_to, limit=limit + 1)
        exhausted = len(batch) <= limit
        if batch:
            scanned_to = PATIENT_KEY(batch[-1])
        found.extend(p for p in batch if _born_within(p, born_from, born_to))
    items, next_after = page(found, limit, PATIENT_KEY)
    event.patient_ids = tuple(p.id for p in items)  # the query's one event names every patient shown
    return items, next_after


def update_patient(uow, actor: Actor, patient_id, version: int, changes: dict):
    """Apply ``changes`` (PHI fields and/or status) when ``version`` matches.

    Raises NotFound (absent or not the actor's), PreconditionFailed (stale version),
    Conflict (MRN taken).
    """
    event = AuditEvent(UPDATE, "patient.update", ENTITY, patient_id, patient_id, fields=tuple(changes))
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    current = uow.patients.get(patient_id, actor)
    if current is None:
        raise NotFound("No such patient.")
    mark_emergency(event, actor, current.provider_id)
    if current.version != version:
        raise PreconditionFailed(STALE)
    # The caller's dict stays as it was: Database.run may retry this whole function.
    status = changes.get("status", current.status)
    phi = {**current.phi, **{name: value for name, value in changes.items() if name != "status"}}
    updated = uow.patients.update(patient_id, version, actor, status=status, phi=phi)
    if updated is None:
        raise PreconditionFailed(STALE)
    return updated


def delete_patient(uow, actor: Actor, patient_id, version: int) -> None:
    """Soft-delete: the row is kept for the audit trail; reads answer 404 afterwards."""
    event = AuditEvent(DELETE, "patient.delete", ENTITY, patient_id, patient_id)
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    current = uow.patients.get(patient_id, actor)
    if current is None:
        raise NotFound("No such patient.")
    if mark_emergency(event, actor, current.provider_id):
        raise Forbidden("Emergency access does not allow deleting a patient.")
    if current.version != version or not uow.patients.delete(patient_id, version, actor):
        raise PreconditionFailed(STALE)
    # The clinical history stays; future appointments stop holding their providers' slots.
    uow.appointments.cancel_upcoming_for_patient(patient_id)


def _born_within(patient, born_from, born_to) -> bool:
    born = dt.date.fromisoformat(patient.phi["date_of_birth"])
    return (born_from is None or born >= born_from) and (born_to is None or born <= born_to)

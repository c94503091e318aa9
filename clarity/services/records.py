"""Medical records: add (originals and amendments), list, read with the amendment chain.

Records are never edited or deleted; a correction is a new record amending an earlier one.
Every access is audited before the role and scope checks, so denials leave a trace too;
events name the body's fields, never their values.
"""
from __future__ import annotations

import datetime as dt

from clarity.audit import CREATE, READ, AuditEvent
from clarity.errors import NotFound
from clarity.pagination import keyset, page
from clarity.security.access import PHI_ROLES, Actor, require_role
from clarity.services.patient_access import mark_emergency, require_patient

ENTITY = "medical_record"


def create_record(uow, actor: Actor, patient_id, *, type: str, body: dict,
                  recorded_at: dt.datetime | None = None, amends_id=None):
    """Add a record written by the actor. Raises Forbidden (role), NotFound (patient absent
    or not the actor's), Invalid (amends a record of another patient or type), Conflict
    (amends a record already amended)."""
    event = AuditEvent(CREATE, "medical_record.create", ENTITY, patient_id=patient_id, fields=tuple(body))
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    record = uow.records.add(patient_id=patient_id, type=type, body=body, author_id=actor.id,
                             recorded_at=recorded_at, amends_id=amends_id)
    event.entity_id = record.id
    return record


def list_records(uow, actor: Actor, patient_id, *, type=None, current_only=False, before=None, limit: int = 50):
    """A keyset page of the patient's records, newest recorded first: ``(records, next_before)``
    where ``next_before`` is the cursor position of the next page, or None on the last one."""
    filters = {"type": type, "current": current_only or None}
    event = AuditEvent(READ, "medical_record.list", ENTITY, patient_id=patient_id,
                       fields=tuple(name for name, value in filters.items() if value is not None))
    uow.audit(event)
    access = require_patient(uow, actor, patient_id, event)
    rows = uow.records.list(patient_id, type=type, current_only=current_only, before=before, limit=limit + 1)
    items, next_before = page(rows, limit, keyset("recorded_at", "id"))
    for record in items:
        read = AuditEvent(READ, "medical_record.read", ENTITY, record.id, patient_id, fields=tuple(record.body))
        mark_emergency(read, actor, access["provider_id"])
        uow.audit(read)
    return items, next_before


def get_record(uow, actor: Actor, record_id):
    """The record and its amendment chain (a repositories.records.Chain); NotFound when it
    does not exist or its patient is not the actor's. Every version read is audited."""
    event = AuditEvent(READ, "medical_record.read", ENTITY, record_id)
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    chain = uow.records.get_chain(record_id, actor)
    if chain is None:
        raise NotFound("No such record.")
    mark_emergency(event, actor, chain.provider_id)
    event.patient_id, event.fields = chain.record.patient_id, tuple(chain.record.body)
    for version in chain.versions:
        if version is not chain.record:
            read = AuditEvent(READ, "medical_record.read", ENTITY, version.id, version.patient_id,
                              fields=tuple(version.body))
            mark_emergency(read, actor, chain.provider_id)
            uow.audit(read)
    return chain

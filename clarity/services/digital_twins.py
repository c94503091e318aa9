"""Digital twins: a patient's model configuration, versioned. A write appends a version and
keeps the old ones; the current configuration is the highest version.

Optimistic concurrency: a write names the version it replaces (If-Match) and inserts that
version plus one; the table's primary key lets exactly one of concurrent writers have it, the
others get PreconditionFailed (412) and nothing is lost. The first version is written without
If-Match (or with ``If-None-Match: *``). Audited before the checks; events name the
configuration's top-level fields, never their values.
"""
from __future__ import annotations

from clarity.audit import CREATE, READ, UPDATE, AuditEvent
from clarity.errors import NotFound, PreconditionFailed, PreconditionRequired
from clarity.pagination import keyset, page
from clarity.security.access import Actor
from clarity.services.patient_access import require_patient

ENTITY = "digital_twin"
STALE = "The digital twin has changed since you read it; fetch it again."


def get_twin(uow, actor: Actor, patient_id):
    """The current version (a repositories.digital_twins.TwinVersion); NotFound when the
    patient is absent, not the actor's, or has no twin yet."""
    event = AuditEvent(READ, "digital_twin.read", ENTITY, patient_id, patient_id)
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    twin = uow.digital_twins.current(patient_id)
    if twin is None:
        raise NotFound("This patient has no digital twin yet.")
    event.fields = tuple(twin.config)
    return twin


def list_versions(uow, actor: Actor, patient_id, *, before=None, limit: int = 50):
    """A keyset page of the versions, newest first: ``(versions, next_before)``, positions
    ``(version,)``, the latter None on the last page."""
    event = AuditEvent(READ, "digital_twin.versions", ENTITY, patient_id, patient_id)
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    rows = uow.digital_twins.versions(patient_id, before_version=before[0] if before else None, limit=limit + 1)
    items, next_before = page(rows, limit, keyset("version"))
    event.fields = tuple(sorted({name for version in items for name in version.config}))
    return items, next_before


def put_twin(uow, actor: Actor, patient_id, config: dict, *, expected_version: int | None,
             must_not_exist: bool = False):
    """Write a new version. ``expected_version`` is the version the client read (If-Match);
    None writes the first version, which fails with PreconditionRequired (428) when a twin
    exists, or PreconditionFailed (412) when ``must_not_exist`` (If-None-Match: *). A stale
    ``expected_version`` is PreconditionFailed."""
    first = expected_version is None
    event = AuditEvent(CREATE if first else UPDATE, "digital_twin.create" if first else "digital_twin.update",
                       ENTITY, patient_id, patient_id, fields=tuple(config))
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)
    if must_not_exist and not first:
        raise PreconditionFailed("If-Match and If-None-Match: * cannot both hold.")
    if not first and expected_version < 1:  # an entity-tag this API never issued
        raise PreconditionFailed(STALE)
    written = uow.digital_twins.add(patient_id, 1 if first else expected_version + 1, config, created_by=actor.id)
    if written is not None:
        return written
    if not first or must_not_exist:
        raise PreconditionFailed(STALE if not first else "This patient already has a digital twin.")
    raise PreconditionRequired("This patient has a digital twin: send If-Match with the ETag you read.")

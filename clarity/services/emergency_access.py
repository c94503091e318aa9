"""Emergency access (break-glass): time-limited access to a patient who is not the provider's.

A grant is audited as a security alert: FHIR AuditEvent type DCM 110113 (Security Alert),
subtype DCM 110127 (Emergency Override Started), purposeOfEvent ETREAT; what is read or
changed under the grant is audited as ``<entity>.emergency_<action>``, by one helper
(services.patient_access.mark_emergency, reached through require_patient). A grant does not allow
deleting the patient or changing their alert rules: those attempts are 403 and audited as
denied ``patient.emergency_delete``, ``alert_rule.emergency_update`` / ``emergency_delete``.
"""
from __future__ import annotations

from clarity.audit import EXECUTE, READ, AuditEvent
from clarity.errors import NotFound
from clarity.pagination import keyset, page
from clarity.security.access import ADMIN, PROVIDER, Actor, require_role

ENTITY = "emergency_access"


def grant_emergency_access(uow, actor: Actor, patient_id, reason: str, *, minutes: int):
    """Open ``patient_id`` to the provider for ``minutes``. Raises Forbidden (not a provider)
    and NotFound (no such patient)."""
    event = AuditEvent(EXECUTE, "emergency_access.grant", ENTITY, patient_id=patient_id, fields=("reason",))
    uow.audit(event)
    require_role(actor, PROVIDER)
    grant = uow.emergency_access.add(patient_id=patient_id, provider_id=actor.id, reason=reason, minutes=minutes)
    if grant is None:
        raise NotFound("No such patient.")
    event.entity_id = grant.id
    return grant


def list_emergency_access(uow, actor: Actor, *, active_only: bool, before=None, limit: int = 50):
    """A keyset page of grants, newest first (admin only): ``(grants, next_before)``, the
    latter None on the last page. Reading them is audited."""
    uow.audit(AuditEvent(READ, "emergency_access.list", ENTITY, fields=("reason",)))
    require_role(actor, ADMIN)
    rows = uow.emergency_access.list(active_only=active_only, before=before, limit=limit + 1)
    return page(rows, limit, keyset("granted_at", "id"))

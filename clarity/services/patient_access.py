"""Access to a patient's data: the role and scope checks every service applies, and the one
way an access that only an emergency-access grant allows is audited as such."""
from __future__ import annotations

from clarity.audit import AuditEvent
from clarity.errors import NotFound
from clarity.security.access import PHI_ROLES, Actor, require_role


def require_patient(uow, actor: Actor, patient_id, event: AuditEvent | None = None) -> dict:
    """For a patient's data: the actor must hold a PHI role (Forbidden) and see the live
    patient (NotFound otherwise; out of scope is indistinguishable from absent).
    Returns ``{"id", "provider_id"}``. Audit the access with ``event`` before calling this:
    an access only an emergency-access grant allows is then recorded as such (mark_emergency)."""
    require_role(actor, *PHI_ROLES)
    access = uow.patients.get_access(patient_id, actor)
    if access is None:
        raise NotFound("No such patient.")
    if event is not None:
        mark_emergency(event, actor, access["provider_id"])
    return access


def via_emergency_grant(actor: Actor, *provider_ids) -> bool:
    """The actor reaches the data only through an emergency-access grant: they are not an
    admin and none of ``provider_ids`` (the patient's provider; for an appointment, also the
    provider who sees the patient in it)."""
    return not actor.is_admin and actor.id not in provider_ids


def mark_emergency(event: AuditEvent, actor: Actor, *provider_ids) -> bool:
    """The one way an access only an emergency-access grant allows is audited: when
    via_emergency_grant, ``patient.read`` becomes ``patient.emergency_read`` (once, however
    often it is called). Returns whether it is such an access, so a caller can refuse what
    a grant does not allow (the event then records a denied emergency attempt).

    A caller that already holds the patient's provider (a row read with it) passes it here;
    one that holds only the patient's id goes through require_patient."""
    if not via_emergency_grant(actor, *provider_ids):
        return False
    group, _, action = event.event_type.partition(".")
    if not action.startswith("emergency_"):
        event.event_type = f"{group}.emergency_{action}"
    return True


def require_role_audited(uow, actor: Actor, event: AuditEvent) -> None:
    """For a query over patients rather than one patient: audit the query itself (so a denied
    or empty one leaves a trace), then check the role (Forbidden)."""
    uow.audit(event)
    require_role(actor, *PHI_ROLES)

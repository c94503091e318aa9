"""The audit trail for auditors and admins; reading it is itself audited."""
from __future__ import annotations

from clarity.audit import READ, AuditEvent
from clarity.pagination import keyset, page
from clarity.security.access import ADMIN, AUDITOR, Actor, require_role


def list_audit_events(uow, actor: Actor, *, patient_id=None, actor_id=None, action=None,
                      occurred_from=None, occurred_to=None, after=None, limit: int = 50):
    """A keyset page of audit events, newest first: ``(events, next_after)``.

    ``after`` is the ``(occurred_at, id)`` of the last event of the previous page;
    ``next_after`` that of this page when more follow, else None. ``occurred_from`` is
    inclusive, ``occurred_to`` exclusive. Auditors and admins only: others get Forbidden,
    and the attempt is recorded as denied. The read is recorded with the names of the
    filters used (as the API spells them), never their values.
    """
    filters = {"patient_id": patient_id, "actor_id": actor_id, "action": action,
               "from": occurred_from, "to": occurred_to}
    used = tuple(name for name, value in filters.items() if value is not None)
    uow.audit(AuditEvent(READ, "audit.read", "audit_event", patient_id=patient_id, fields=used))
    require_role(actor, ADMIN, AUDITOR)
    rows = uow.reads.audit_events.list(patient_id=patient_id, actor_id=actor_id, action=action,
                                       occurred_from=occurred_from, occurred_to=occurred_to,
                                       after=after, limit=limit + 1)
    return page(rows, limit, keyset("occurred_at", "id"))

"""Audit events: what every service records of an access, in FHIR AuditEvent's shape.

Events carry ids and field names only, never values. The unit of work buffers them and writes
them in one INSERT in the same transaction as the access they record. The hash chain that makes
the trail tamper-evident is clarity.audit_chain.
"""
from __future__ import annotations

import dataclasses

CREATE, READ, UPDATE, DELETE, EXECUTE = "C", "R", "U", "D", "E"


@dataclasses.dataclass
class AuditEvent:
    action: str  # FHIR AuditEvent.action: C, R, U, D or E
    event_type: str  # what happened, e.g. "patient.read", "auth.login"
    entity_type: str | None = None
    entity_id: object = None
    patient_id: object = None
    fields: tuple[str, ...] = ()
    # The patients a list page showed: one event for the page names each of them.
    patient_ids: tuple = ()
    outcome: str = "success"  # success, failure or denied
    actor_id: object = None  # set when the actor is not the unit of work's (a login)

"""Audit events: append-only writes and the failed-login counts that drive rate limits."""
from __future__ import annotations

import json

from psycopg.rows import dict_row


class AuditRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def add_all(self, events, *, actor, client_addr, request_id) -> None:
        """Write events in one statement, stamped with the request's context."""
        rows = [{
            "actor_id": _text(event.actor_id or (actor.id if actor else None)),
            "actor_role": actor.role if actor else None,
            "action": event.action,
            "event_type": event.event_type,
            "entity_type": event.entity_type,
            "entity_id": _text(event.entity_id),
            "patient_id": _text(event.patient_id),
            "outcome": event.outcome,
            "client_addr": client_addr,
            "request_id": request_id,
            "fields": sorted(event.fields),
        } for event in events]
        self.q.insert_audit_events.rowcount(self.conn, {"events": json.dumps(rows)})

    def count_login_failures(self, *, user_id, client_addr, window_seconds) -> dict:
        """Failed logins in the window: ``account_failures`` (since the account's last success)
        and ``address_failures``."""
        return self.q.count_login_failures.one(self.conn, {
            "user_id": user_id, "client_addr": client_addr, "window_seconds": window_seconds,
        }, dict_row)


def _text(value):
    return None if value is None else str(value)

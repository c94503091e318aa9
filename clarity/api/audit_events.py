"""Audit events: /api/v1/audit-events, the audit trail for auditors and admins."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from clarity.api.access import roles
from clarity.api.limits import expensive
from clarity.api.common import Blueprint, cursor_field, decode_cursor, limit_field, next_link, run, timestamp_field
from clarity.security.access import ADMIN, AUDITOR
from clarity.services import audit_events

blp = Blueprint("audit_events", __name__, url_prefix="/api/v1/audit-events",
                description="The audit trail (auditors and admins)")

ACTIONS = ("C", "R", "U", "D", "E")


class AuditEventListArgs(Schema):
    patient_id = fields.UUID(load_default=None)
    actor_id = fields.UUID(load_default=None)
    action = fields.String(validate=validate.OneOf(ACTIONS), load_default=None)
    occurred_from = timestamp_field("from", load_default=None)
    occurred_to = timestamp_field("to", load_default=None)
    limit = limit_field(strict=False)
    cursor = cursor_field()


class AuditEventSchema(Schema):
    id = fields.Integer()
    occurred_at = fields.DateTime()
    actor_id = fields.UUID(allow_none=True)
    actor_role = fields.String(allow_none=True)
    action = fields.String()
    event_type = fields.String()
    entity_type = fields.String(allow_none=True)
    entity_id = fields.String(allow_none=True)
    patient_id = fields.UUID(allow_none=True)
    patient_ids = fields.List(fields.UUID(), allow_none=True, metadata={
        "description": "The patients a list page showed (one event per page); null on other events."})
    outcome = fields.String()
    client_addr = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields")


@blp.route("", methods=["GET"])
# Unknown parameters are refused: a misspelled filter must not silently return the whole trail.
@blp.arguments(AuditEventListArgs, location="query", unknown=RAISE)
@blp.response(200, AuditEventSchema(many=True))
@roles(ADMIN, AUDITOR)
@expensive
def list_audit_events(args):
    """Audit events, newest first (by time, then id), filtered by ``patient_id`` (the events
    about that patient and the list pages that showed it), ``actor_id``,
    ``action`` (C, R, U, D, E) and the time range ``from`` (inclusive) – ``to`` (exclusive);
    the next (older) page is in the ``Link`` header. Auditors and admins only (403 otherwise).
    Events hold ids and field names, never PHI. This read is itself audited."""
    after = decode_cursor(args.pop("cursor"))
    limit = args.pop("limit")
    page, next_after = run(lambda uow, actor: audit_events.list_audit_events(
        uow, actor, after=after, limit=limit, **args))
    return page, 200, next_link(next_after)

"""Emergency access (break-glass): grants by providers, the list for admins."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields

from clarity.api.access import roles
from clarity.api.common import Blueprint, Text, cursor_field, decode_cursor, limit_field, next_link, run, runtime
from clarity.security.access import ADMIN, PROVIDER
from clarity.services import emergency_access

blp = Blueprint("emergency_access", __name__, url_prefix="/api/v1", description="Emergency access (break-glass)")


class GrantRequestSchema(Schema):
    reason = Text(required=True, min_length=10, max_length=1000,
                  metadata={"description": "Why the patient must be opened now (kept enciphered)."})


class GrantSchema(Schema):
    id = fields.UUID()
    patient_id = fields.UUID()
    provider_id = fields.UUID()
    reason = fields.String()
    granted_at = fields.DateTime()
    expires_at = fields.DateTime()


class GrantListArgs(Schema):
    active = fields.Boolean(load_default=False, metadata={"description": "Only grants not yet expired."})
    limit = limit_field(strict=False)
    cursor = cursor_field()


@blp.route("/patients/<uuid:patient_id>/emergency-access", methods=["POST"])
@blp.arguments(GrantRequestSchema)
@blp.response(201, GrantSchema)
@roles(PROVIDER)
def grant(body, patient_id):
    """Open a patient who is not yours, for a limited time (providers; audited as a security
    alert). Reads and updates, not deletes; lists and searches stay your own patients."""
    minutes = runtime().settings.emergency_access_minutes
    return run(lambda uow, actor: emergency_access.grant_emergency_access(
        uow, actor, patient_id, body["reason"], minutes=minutes))


@blp.route("/emergency-access", methods=["GET"])
@blp.arguments(GrantListArgs, location="query", unknown=RAISE)
@blp.response(200, GrantSchema(many=True))
@roles(ADMIN)
def list_grants(args):
    """Every grant, newest first (admins); next page in the Link header."""
    before = decode_cursor(args["cursor"])
    page, next_before = run(lambda uow, actor: emergency_access.list_emergency_access(
        uow, actor, active_only=args["active"], before=before, limit=args["limit"]))
    return page, 200, next_link(next_before)

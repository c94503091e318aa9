"""Alert rules (/api/v1/alert-rules, /api/v1/patients/{id}/alert-rules) and alerts
(/api/v1/alerts, /api/v1/patients/{id}/alerts)."""
from __future__ import annotations

from flask import request
from marshmallow import RAISE, Schema, fields, validate

from clarity.api.access import roles
from clarity.api.openapi import if_match
from clarity.api.common import Blueprint, cursor_field, decode_cursor, etag, if_match_version, limit_field, next_link, run
from clarity.security.access import ADMIN, PHI_ROLES
from clarity.services import alerts
from clarity.services.alerts import SEVERITIES, STATUSES
from clarity.services.biometrics import KINDS

blp = Blueprint("alerts", __name__, url_prefix="/api/v1", description="Alert rules and the alerts readings raise")


# A kind of reading in a path: a closed vocabulary (documented as an enum), never free text.
KIND = f"<any({', '.join(KINDS)}):kind>"


def _unit(obj) -> str:
    return KINDS[obj.kind].unit


class AlertRuleBodySchema(Schema):
    """A rule replaces the previous one entirely: an absent bound is no bound."""

    class Meta:
        openapi = {"anyOf": [{"required": [bound], "properties": {bound: {"type": "number"}}}
                             for bound in ("min_value", "max_value")]}

    min_value = fields.Float(allow_none=True, load_default=None, allow_nan=False)
    max_value = fields.Float(allow_none=True, load_default=None, allow_nan=False)
    severity = fields.String(required=True, validate=validate.OneOf(SEVERITIES))


class AlertRuleSchema(Schema):
    id = fields.UUID()
    patient_id = fields.UUID(allow_none=True)
    kind = fields.String()
    unit = fields.Function(_unit)
    min_value = fields.Float(allow_none=True)
    max_value = fields.Float(allow_none=True)
    severity = fields.String()
    version = fields.Integer()
    created_by = fields.UUID(allow_none=True)
    updated_by = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class DefaultAlertRuleSchema(Schema):
    min_value = fields.Float(allow_none=True)
    max_value = fields.Float(allow_none=True)
    severity = fields.String()


class EffectiveAlertRuleSchema(Schema):
    kind = fields.String()
    unit = fields.Function(_unit)
    override = fields.Boolean(metadata={"description": "the patient's own rule, beating the global default"})
    id = fields.UUID()
    min_value = fields.Float(allow_none=True)
    max_value = fields.Float(allow_none=True)
    severity = fields.String()
    version = fields.Integer(metadata={"description": "send it as If-Match to replace or delete an override"})
    updated_at = fields.DateTime()
    default = fields.Nested(DefaultAlertRuleSchema, allow_none=True,
                            metadata={"description": "the global default an override beats"})


class AlertSchema(Schema):
    id = fields.UUID()
    patient_id = fields.UUID()
    kind = fields.String()
    value = fields.Float()
    unit = fields.Function(_unit)
    reading_recorded_at = fields.DateTime()
    source_device = fields.String()
    min_value = fields.Float(allow_none=True, metadata={"description": "the rule's bounds when raised"})
    max_value = fields.Float(allow_none=True)
    rule_scope = fields.String(metadata={"description": "global or patient"})
    severity = fields.String()
    status = fields.String()
    acknowledged_by = fields.UUID(allow_none=True)
    acknowledged_at = fields.DateTime(allow_none=True)
    resolved_by = fields.UUID(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class AlertListArgs(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES), load_default=None)
    limit = limit_field(strict=False)
    cursor = cursor_field()


class AlertStatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("acknowledged", "resolved")))


def _optional_if_match() -> int | None:
    """The If-Match version when sent (replacing), None when absent (creating)."""
    return if_match_version() if request.headers.get("If-Match") else None


def _put_rule(patient_id, kind, body):
    version = _optional_if_match()
    rule, created = run(lambda uow, actor: alerts.put_alert_rule(
        uow, actor, patient_id, kind, version, min_value=body["min_value"], max_value=body["max_value"],
        severity=body["severity"]))
    return rule, 201 if created else 200, etag(rule.version)


# Rules


@blp.route("/patients/<uuid:patient_id>/alert-rules", methods=["GET"])
@blp.response(200, EffectiveAlertRuleSchema(many=True))
@roles(*PHI_ROLES)
def list_patient_rules(patient_id):
    """The patient's effective rule per kind: their override (``override: true``, with the
    global ``default`` it beats) or the global default."""
    return run(lambda uow, actor: alerts.list_alert_rules(uow, actor, patient_id))


@blp.route(f"/patients/<uuid:patient_id>/alert-rules/{KIND}", methods=["PUT"])
@blp.arguments(AlertRuleBodySchema)
@blp.response(200, AlertRuleSchema)
@blp.alt_response(201, schema=AlertRuleSchema, description="Created")
@blp.doc(parameters=[if_match(required=False)])
@roles(*PHI_ROLES)
def put_patient_rule(body, patient_id, kind):
    """Create (201, no If-Match) or replace (200, If-Match required: 428 without, 412 when stale)
    the patient's override for a kind. The patient's provider or an admin."""
    return _put_rule(patient_id, kind, body)


@blp.route(f"/patients/<uuid:patient_id>/alert-rules/{KIND}", methods=["DELETE"])
@blp.response(204)
@blp.doc(parameters=[if_match()])
@roles(*PHI_ROLES)
def delete_patient_rule(patient_id, kind):
    """Delete the patient's override (If-Match required); the global default applies again."""
    version = if_match_version()
    run(lambda uow, actor: alerts.delete_alert_rule(uow, actor, patient_id, kind, version))


@blp.route("/alert-rules", methods=["GET"])
@blp.response(200, AlertRuleSchema(many=True))
@roles(*PHI_ROLES)
def list_global_rules():
    """The global default rules."""
    return run(lambda uow, actor: alerts.list_global_alert_rules(uow, actor))


@blp.route(f"/alert-rules/{KIND}", methods=["PUT"])
@blp.arguments(AlertRuleBodySchema)
@blp.response(200, AlertRuleSchema)
@blp.alt_response(201, schema=AlertRuleSchema, description="Created")
@blp.doc(parameters=[if_match(required=False)])
@roles(ADMIN)
def put_global_rule(body, kind):
    """Create or replace the global default for a kind (admins; If-Match when replacing)."""
    return _put_rule(None, kind, body)


# Alerts


@blp.route("/patients/<uuid:patient_id>/alerts", methods=["GET"])
@blp.arguments(AlertListArgs, location="query", unknown=RAISE)
@blp.response(200, AlertSchema(many=True))
@roles(*PHI_ROLES)
def list_patient_alerts(args, patient_id):
    """The patient's alerts, newest reading first, optionally of one ``status``; the next page
    is in the ``Link`` header."""
    after = decode_cursor(args["cursor"])
    page, next_after = run(lambda uow, actor: alerts.list_patient_alerts(
        uow, actor, patient_id, status=args["status"], after=after, limit=args["limit"]))
    return page, 200, next_link(next_after)


@blp.route("/alerts", methods=["GET"])
@blp.arguments(AlertListArgs, location="query", unknown=RAISE)
@blp.response(200, AlertSchema(many=True))
@roles(*PHI_ROLES)
def list_alerts(args):
    """The alerts of all your patients (admins: everyone's), newest reading first, optionally of
    one ``status`` (``?status=open`` for the worklist); the next page is in the ``Link`` header."""
    after = decode_cursor(args["cursor"])
    page, next_after = run(lambda uow, actor: alerts.list_alerts(
        uow, actor, status=args["status"], after=after, limit=args["limit"]))
    return page, 200, next_link(next_after)


@blp.route("/alerts/<uuid:alert_id>", methods=["GET"])
@blp.response(200, AlertSchema)
@roles(*PHI_ROLES)
def get_alert(alert_id):
    """One alert, with its ``ETag``."""
    alert = run(lambda uow, actor: alerts.get_alert(uow, actor, alert_id))
    return alert, 200, etag(alert.version)


@blp.route("/alerts/<uuid:alert_id>", methods=["PATCH"])
@blp.arguments(AlertStatusSchema)
@blp.response(200, AlertSchema)
@blp.doc(parameters=[if_match()])
@roles(*PHI_ROLES)
def change_alert_status(body, alert_id):
    """Acknowledge or resolve an alert (If-Match required: 428 without, 412 when stale); who and
    when are recorded. open → acknowledged → resolved, or open → resolved; any other change is
    409."""
    version = if_match_version()
    alert = run(lambda uow, actor: alerts.change_alert_status(uow, actor, alert_id, version, body["status"]))
    return alert, 200, etag(alert.version)

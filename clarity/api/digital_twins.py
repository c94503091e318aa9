"""Digital twins: /api/v1/patients/{id}/digital-twin, one versioned configuration per patient.

PUT writes a new version and keeps the old ones. The first PUT needs no precondition (or
``If-None-Match: *`` to fail with 412 should a twin exist meanwhile); later ones need
``If-Match: "<version>"`` (428 without it, 412 when stale).
"""
from __future__ import annotations

import math

from flask import request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from clarity.api.access import roles
from clarity.api.openapi import if_match
from clarity.api.common import Blueprint, cursor_field, decode_cursor, etag, if_match_version, limit_field, next_link, run
from clarity.security.access import PHI_ROLES
from clarity.errors import BadRequest
from clarity.services import digital_twins

blp = Blueprint("digital_twins", __name__, url_prefix="/api/v1", description="Digital-twin configurations")

SIGNALS = ("heart_rate", "bp_systolic", "bp_diastolic", "spo2", "temperature", "respiratory_rate",
           "glucose", "weight", "steps")
SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# semver.org's regular expression for a version such as 1.4.0 or 2.0.0-rc.1+build.5.
SEMVER = (r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
          r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
          r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
PARAMETER_NAME = r"^[a-z][a-z0-9_]*$"
MAX_PARAMETERS = 64
MAX_NUMBER = 1e15


class FiniteNumber(fields.Float):
    """A JSON number that is finite and within ±1e15: no booleans, strings, NaN or Infinity.
    Integers stay integers."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Must be a number.")
        if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > MAX_NUMBER:
            raise ValidationError("Must be a finite number within ±1e15.")
        return value


def _unique(values):
    if len(set(values)) != len(values):
        raise ValidationError("Must not repeat a signal.")


class TwinModelSchema(Schema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=64), validate.Regexp(SLUG)],
                         metadata={"example": "cardio-risk"})
    version = fields.String(required=True, validate=[validate.Length(max=64), validate.Regexp(SEMVER)],
                            metadata={"example": "1.4.0"})


class TwinConfigSchema(Schema):
    """The configuration document (unknown fields are refused at every level)."""

    model = fields.Nested(TwinModelSchema, required=True)
    parameters = fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=64), validate.Regexp(PARAMETER_NAME)]),
        values=FiniteNumber(), required=True, validate=validate.Length(max=MAX_PARAMETERS),
        metadata={"description": f"Model parameters by snake_case name (at most {MAX_PARAMETERS}), finite numbers.",
                  "propertyNames": {"pattern": PARAMETER_NAME, "maxLength": 64}})
    enabled_signals = fields.List(
        fields.String(validate=validate.OneOf(SIGNALS)), required=True, validate=_unique,
        metadata={"description": "Biometric kinds the twin consumes, each at most once.", "uniqueItems": True})


class TwinSchema(TwinConfigSchema):
    patient_id = fields.UUID()
    version = fields.Integer(metadata={"description": "The twin's version (also its ETag)."})
    created_by = fields.UUID()
    created_at = fields.DateTime()


class TwinVersionArgs(Schema):
    limit = limit_field(strict=False)
    cursor = cursor_field()


def to_view(twin) -> dict:
    return {**twin.config, "patient_id": twin.patient_id, "version": twin.version,
            "created_by": twin.created_by, "created_at": twin.created_at}


def _preconditions() -> tuple[int | None, bool]:
    """(If-Match version or None, whether If-None-Match: * was sent)."""
    none_match = request.headers.get("If-None-Match", "").strip()
    if none_match and none_match != "*":
        raise BadRequest("Only If-None-Match: * is supported here.")
    expected = if_match_version() if request.headers.get("If-Match") else None
    return expected, none_match == "*"


@blp.route("/patients/<uuid:patient_id>/digital-twin", methods=["PUT"])
@blp.arguments(TwinConfigSchema)
@blp.response(200, TwinSchema)
@blp.alt_response(201, schema=TwinSchema, description="The first version was created.")
@blp.doc(parameters=[if_match(required=False)])
@roles(*PHI_ROLES)
def put_twin(config, patient_id):
    """Write a new version of the patient's digital twin (old versions are kept). The first
    needs no If-Match; later ones need the current ETag: 428 without, 412 when stale."""
    expected, must_not_exist = _preconditions()
    twin = run(lambda uow, actor: digital_twins.put_twin(
        uow, actor, patient_id, config, expected_version=expected, must_not_exist=must_not_exist))
    headers = etag(twin.version)
    if twin.version == 1:
        return to_view(twin), 201, {"Location": f"/api/v1/patients/{patient_id}/digital-twin", **headers}
    return to_view(twin), 200, headers


@blp.route("/patients/<uuid:patient_id>/digital-twin", methods=["GET"])
@blp.response(200, TwinSchema)
@roles(*PHI_ROLES)
def get_twin(patient_id):
    """The current configuration, its version in the ETag; 404 when there is none yet."""
    twin = run(lambda uow, actor: digital_twins.get_twin(uow, actor, patient_id))
    return to_view(twin), 200, etag(twin.version)


@blp.route("/patients/<uuid:patient_id>/digital-twin/versions", methods=["GET"])
@blp.arguments(TwinVersionArgs, location="query", unknown=RAISE)
@blp.response(200, TwinSchema(many=True))
@roles(*PHI_ROLES)
def list_versions(args, patient_id):
    """Every version, newest first; the next page is in the ``Link`` header."""
    before = decode_cursor(args["cursor"])
    page, next_before = run(lambda uow, actor: digital_twins.list_versions(
        uow, actor, patient_id, before=before, limit=args["limit"]))
    return [to_view(t) for t in page], 200, next_link(next_before)

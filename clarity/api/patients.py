"""Patients: /api/v1/patients. PHI travels only in bodies, never in URLs."""
from __future__ import annotations

import datetime as dt

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clarity.api.access import roles
from clarity.api.limits import expensive
from clarity.api.openapi import any_of_required, if_match
from clarity.api.common import Blueprint, Text, cursor_field, decode_cursor, encode_cursor, etag, if_match_version, limit_field, next_link, run
from clarity.security.access import PHI_ROLES
from clarity.services import patients
from clarity.services.biometrics import KINDS

blp = Blueprint("patients", __name__, url_prefix="/api/v1/patients", description="Patients and their PHI")

STATUSES = ("active", "inactive", "deceased")
SEXES = ("female", "male", "other", "unknown")
EARLIEST_BIRTH = dt.date(1850, 1, 1)
OPTIONAL_PHI = ("ssn", "email", "phone", "address", "insurance", "emergency_contact", "notes")


def _past_date(value: dt.date):
    if not EARLIEST_BIRTH <= value <= dt.date.today():
        raise ValidationError("Must be a date between 1850-01-01 and today.")


class AddressSchema(Schema):
    line1 = Text(required=True, max_length=200)
    line2 = Text(max_length=200, allow_none=True)
    city = Text(required=True, max_length=100)
    state = Text(max_length=100, allow_none=True)
    postal_code = Text(max_length=20, allow_none=True)
    country = Text(max_length=2, min_length=2, allow_none=True)


class InsuranceSchema(Schema):
    payer = Text(required=True, max_length=200)
    member_id = Text(required=True, max_length=64)
    group_number = Text(max_length=64, allow_none=True)
    plan = Text(max_length=200, allow_none=True)


class EmergencyContactSchema(Schema):
    name = Text(required=True, max_length=200)
    relationship = Text(max_length=100, allow_none=True)
    phone = Text(required=True, max_length=32)


class PatientFieldsSchema(Schema):
    """The PHI fields (all optional here; creation makes the core ones required)."""

    first_name = Text(max_length=100)
    last_name = Text(max_length=100)
    date_of_birth = fields.Date(validate=_past_date)
    sex = fields.String(validate=validate.OneOf(SEXES))
    mrn = Text(max_length=64)
    ssn = Text(max_length=11, allow_none=True, validate=validate.Regexp(r"^\d{3}-?\d{2}-?\d{4}$"))
    email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    phone = Text(max_length=32, allow_none=True)
    address = fields.Nested(AddressSchema, allow_none=True)
    insurance = fields.Nested(InsuranceSchema, allow_none=True)
    emergency_contact = fields.Nested(EmergencyContactSchema, allow_none=True)
    notes = Text(max_length=10_000, allow_none=True)
    status = fields.String(validate=validate.OneOf(STATUSES))


class PatientCreateSchema(PatientFieldsSchema):
    first_name = Text(required=True, max_length=100)
    last_name = Text(required=True, max_length=100)
    date_of_birth = fields.Date(required=True, validate=_past_date)
    sex = fields.String(required=True, validate=validate.OneOf(SEXES))
    mrn = Text(required=True, max_length=64)
    provider_id = fields.UUID(load_default=None)


class PatientUpdateSchema(PatientFieldsSchema):
    class Meta:
        openapi = {"minProperties": 1}

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Send at least one field to change.")


class PatientSchema(PatientFieldsSchema):
    id = fields.UUID()
    provider_id = fields.UUID()
    date_of_birth = fields.String(metadata={"format": "date"})
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PatientOverviewSchema(PatientSchema):
    latest_readings = fields.List(fields.Dict(), metadata={
        "description": "The latest reading of each kind: kind, value, unit, recorded_at, source_device."})
    open_alerts = fields.List(fields.Dict(), metadata={
        "description": "Open alerts, newest reading first (at most 50): id, kind, value, min_value, "
                       "max_value, severity, reading_recorded_at, source_device, version."})
    next_appointment = fields.Dict(allow_none=True, metadata={
        "description": "The next scheduled appointment (id, provider_id, starts_at, ends_at, version), or null."})
    digital_twin = fields.Dict(allow_none=True, metadata={
        "description": "The twin's current version (version, config, created_by, created_at), or null."})


class PatientListArgs(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES), load_default=None)
    born_from = fields.Date(load_default=None)
    born_to = fields.Date(load_default=None)
    limit = limit_field(strict=False)
    cursor = cursor_field()


class PatientSearchSchema(Schema):
    mrn = Text(max_length=64, load_default=None)
    email = Text(max_length=254, load_default=None)
    last_name = Text(max_length=100, load_default=None)
    status = fields.String(validate=validate.OneOf(STATUSES), load_default=None)
    limit = limit_field()
    cursor = cursor_field()

    class Meta:
        openapi = any_of_required("mrn", "email", "last_name")

    @validates_schema
    def _one_criterion(self, data, **kwargs):
        if not any(data.get(k) for k in ("mrn", "email", "last_name")):
            raise ValidationError("Search by at least one of mrn, email, last_name.")


class PatientPageSchema(Schema):
    items = fields.List(fields.Nested(PatientSchema))
    next_cursor = fields.String(allow_none=True)


def to_phi(data: dict) -> dict:
    """Schema output -> the JSON-ready dict sealed in the envelope."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in data.items()}


def to_view(patient) -> dict:
    return {**{k: None for k in OPTIONAL_PHI}, **patient.phi, "id": patient.id,
            "provider_id": patient.provider_id, "status": patient.status,
            "version": patient.version, "created_at": patient.created_at,
            "updated_at": patient.updated_at}


@blp.route("", methods=["POST"])
@blp.arguments(PatientCreateSchema)
@blp.response(201, PatientSchema)
@roles(*PHI_ROLES)
def create_patient(body):
    """Register a patient. 409 naming ``mrn`` when the MRN is already registered."""
    provider_id = body.pop("provider_id")
    status = body.pop("status", "active")
    patient = run(lambda uow, actor: patients.create_patient(
        uow, actor, phi=to_phi(body), status=status, provider_id=provider_id))
    return to_view(patient), 201, {"Location": f"/api/v1/patients/{patient.id}", **etag(patient.version)}


@blp.route("", methods=["GET"])
@blp.arguments(PatientListArgs, location="query", unknown=RAISE)
@blp.response(200, PatientSchema(many=True))
@roles(*PHI_ROLES)
@expensive
def list_patients(args):
    """The actor's patients, oldest first, filtered by status and date of birth range; the
    next page is in the ``Link`` header. Searches by MRN, email or name: POST /search."""
    after = decode_cursor(args["cursor"])
    page, next_after = run(lambda uow, actor: patients.list_patients(
        uow, actor, status=args["status"], born_from=args["born_from"], born_to=args["born_to"],
        after=after, limit=args["limit"]))
    return [to_view(p) for p in page], 200, next_link(next_after)


@blp.route("/search", methods=["POST"])
@blp.arguments(PatientSearchSchema)
@blp.response(200, PatientPageSchema)
@roles(*PHI_ROLES)
@expensive
def search_patients(body):
    """Find the actor's patients by MRN, email and/or last name (case- and accent-insensitive).
    The criteria travel in the body because PHI never goes into a URL."""
    after = decode_cursor(body["cursor"])
    page, next_after = run(lambda uow, actor: patients.list_patients(
        uow, actor, mrn=body["mrn"], email=body["email"], last_name=body["last_name"],
        status=body["status"], after=after, limit=body["limit"], event_type="patient.search"))
    return {"items": [to_view(p) for p in page], "next_cursor": encode_cursor(next_after)}


@blp.route("/<uuid:patient_id>", methods=["GET"])
@blp.response(200, PatientSchema)
@roles(*PHI_ROLES)
def get_patient(patient_id):
    """One patient; 404 when it does not exist or is not yours."""
    patient = run(lambda uow, actor: patients.get_patient(uow, actor, patient_id))
    return to_view(patient), 200, etag(patient.version)


@blp.route("/<uuid:patient_id>/overview", methods=["GET"])
@blp.response(200, PatientOverviewSchema)
@roles(*PHI_ROLES)
def get_overview(patient_id):
    """The patient with the latest reading per kind, open alerts, the next appointment and the
    digital twin's current version, read in one SQL statement."""
    patient, summary = run(lambda uow, actor: patients.get_overview(uow, actor, patient_id, kinds=KINDS))
    return {**to_view(patient), **summary}, 200, etag(patient.version)


@blp.route("/<uuid:patient_id>", methods=["PATCH"])
@blp.arguments(PatientUpdateSchema)
@blp.response(200, PatientSchema)
@blp.doc(parameters=[if_match()])
@roles(*PHI_ROLES)
def update_patient(body, patient_id):
    """Change some fields (If-Match required: 428 without, 412 when stale). ``null`` clears an
    optional field."""
    version = if_match_version()
    patient = run(lambda uow, actor: patients.update_patient(uow, actor, patient_id, version, to_phi(body)))
    return to_view(patient), 200, etag(patient.version)


@blp.route("/<uuid:patient_id>", methods=["DELETE"])
@blp.response(204)
@blp.doc(parameters=[if_match()])
@roles(*PHI_ROLES)
def delete_patient(patient_id):
    """Delete a patient (If-Match required). The record is kept for the audit trail; reads
    answer 404 afterwards."""
    version = if_match_version()
    run(lambda uow, actor: patients.delete_patient(uow, actor, patient_id, version))

"""Medical records: /api/v1/patients/{id}/records and /api/v1/records/{id}.

A record's body is validated here against its type's schema and kept enciphered. Records are
never changed or deleted: a correction is a new record whose ``amends_id`` names the latest
version of the record it corrects.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from clarity.api.access import roles
from clarity.api.common import (Blueprint, Text, cursor_field, decode_cursor, limit_field, next_link, run,
                                timestamp_field)
from clarity.security.access import PHI_ROLES
from clarity.services import records

blp = Blueprint("records", __name__, url_prefix="/api/v1",
                description="Medical records: notes, diagnoses, prescriptions, lab results")

TYPES = ("note", "diagnosis", "prescription", "lab_result")
# ICD-10 (WHO and -CM): a letter (U is reserved), two digits or a digit and a letter, then
# optionally a dot and up to four characters: I10, E11.9, S72.001A.
ICD10 = r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"
ROUTES = ("oral", "sublingual", "buccal", "intravenous", "intramuscular", "subcutaneous", "intradermal",
          "topical", "transdermal", "inhaled", "nasal", "ophthalmic", "otic", "rectal", "vaginal", "other")
FLAGS = ("normal", "low", "high", "critical_low", "critical_high", "abnormal")
MAX_NUMBER = 1e15
CLOCK_SKEW = dt.timedelta(minutes=5)
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)


class LabValue(fields.Field):
    """A finite number (not a boolean, not a numeric string), or a short text such as
    "positive" for qualitative results."""

    _text = Text(max_length=100)

    def __init__(self, **kwargs):
        super().__init__(metadata={"oneOf": [{"type": "number"}, {"type": "string", "maxLength": 100}],
                                   "description": "A finite number, or a short text (e.g. positive)."}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return self._text.deserialize(value, attr, data, **kwargs)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise ValidationError("Must be a finite number or a text of at most 100 characters.")
        return value


def _finite(value) -> bool:
    return (isinstance(value, int) or math.isfinite(value)) and abs(value) <= MAX_NUMBER


class NoteBody(Schema):
    text = Text(required=True, max_length=10_000)


class DiagnosisBody(Schema):
    code = fields.String(required=True, validate=validate.Regexp(ICD10, error="Must be an ICD-10 code such as E11.9."),
                         metadata={"description": "ICD-10 code, upper case: I10, E11.9, S72.001A."})
    description = Text(required=True, max_length=500)


class PrescriptionBody(Schema):
    medication = Text(required=True, max_length=200)
    dose = Text(required=True, max_length=100, metadata={"example": "500 mg"})
    route = fields.String(required=True, validate=validate.OneOf(ROUTES))
    frequency = Text(required=True, max_length=100, metadata={"example": "twice daily"})
    duration_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=3650))


class LabResultBody(Schema):
    test = Text(required=True, max_length=200)
    value = LabValue(required=True)
    unit = Text(required=True, max_length=32)
    reference_range = Text(max_length=100, metadata={"example": "70-99"})
    flag = fields.String(validate=validate.OneOf(FLAGS))


BODY_SCHEMAS = {"note": NoteBody, "diagnosis": DiagnosisBody, "prescription": PrescriptionBody,
                "lab_result": LabResultBody}


def _clinical_time(value: dt.datetime):
    if not EARLIEST <= value <= dt.datetime.now(dt.timezone.utc) + CLOCK_SKEW:
        raise ValidationError("Must be a time between 1900-01-01 and now.")


class RecordCreateSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(TYPES))
    body = fields.Dict(required=True, metadata={"description": (
        "By type — note: {text}; diagnosis: {code (ICD-10), description}; prescription: {medication, "
        "dose, route, frequency, duration_days?}; lab_result: {test, value, unit, reference_range?, flag?}.")})
    recorded_at = timestamp_field(validate=_clinical_time, metadata={
        "description": "Clinical time (when it was observed or decided); defaults to now."})
    amends_id = fields.UUID(metadata={
        "description": "The record this one corrects: the latest version of a record of the same patient and type."})

    class Meta:
        # The body's shape follows the type; the body schemas are registered by register_schemas.
        openapi = {"oneOf": [{"properties": {"type": {"enum": [kind]},
                                             "body": {"$ref": f"#/components/schemas/{schema.__name__}"}}}
                             for kind, schema in BODY_SCHEMAS.items()]}

    @post_load
    def _load_body(self, data, **kwargs):
        try:
            data["body"] = BODY_SCHEMAS[data["type"]]().load(data["body"])
        except ValidationError as err:
            raise ValidationError({"body": err.messages}) from None
        return data


class RecordSchema(Schema):
    id = fields.UUID()
    patient_id = fields.UUID()
    type = fields.String()
    body = fields.Dict()
    author_id = fields.UUID()
    recorded_at = fields.DateTime()
    created_at = fields.DateTime()
    amends_id = fields.UUID(allow_none=True, metadata={"description": "The record this one corrects."})
    superseded_by = fields.UUID(allow_none=True, metadata={
        "description": "The record correcting this one; null for the latest version."})


class RecordWithChainSchema(RecordSchema):
    chain = fields.List(fields.Nested(RecordSchema), metadata={
        "description": "Every version of this record, the original first, the latest last (this one included)."})


class RecordListArgs(Schema):
    type = fields.String(validate=validate.OneOf(TYPES), load_default=None)
    current = fields.Boolean(load_default=False, metadata={"description": "Only latest versions (not superseded)."})
    limit = limit_field(strict=False)
    cursor = cursor_field()


@blp.route("/patients/<uuid:patient_id>/records", methods=["POST"])
@blp.arguments(RecordCreateSchema)
@blp.response(201, RecordSchema)
@roles(*PHI_ROLES)
def create_record(body, patient_id):
    """Add a record to a patient (admins, and providers who see the patient); you are its
    author. To correct a record, add one with ``amends_id``: 422 when that record belongs to
    another patient or type, 409 when it was already amended (amend its latest version)."""
    record = run(lambda uow, actor: records.create_record(
        uow, actor, patient_id, type=body["type"], body=body["body"],
        recorded_at=body.get("recorded_at"), amends_id=body.get("amends_id")))
    return record, 201, {"Location": f"/api/v1/records/{record.id}"}


@blp.route("/patients/<uuid:patient_id>/records", methods=["GET"])
@blp.arguments(RecordListArgs, location="query", unknown=RAISE)
@blp.response(200, RecordSchema(many=True))
@roles(*PHI_ROLES)
def list_records(args, patient_id):
    """A patient's records, newest recorded first, each saying whether it was superseded;
    the next page is in the ``Link`` header."""
    before = decode_cursor(args["cursor"])
    page, next_before = run(lambda uow, actor: records.list_records(
        uow, actor, patient_id, type=args["type"], current_only=args["current"], before=before,
        limit=args["limit"]))
    return page, 200, next_link(next_before)


@blp.route("/records/<uuid:record_id>", methods=["GET"])
@blp.response(200, RecordWithChainSchema)
@roles(*PHI_ROLES)
def get_record(record_id):
    """One record with its amendment chain; 404 when it does not exist or is not your patient's."""
    chain = run(lambda uow, actor: records.get_record(uow, actor, record_id))
    return {**dataclasses.asdict(chain.record), "chain": chain.versions}


def register_schemas(api) -> None:
    """Add the per-type body schemas to the document, for RecordCreateSchema's oneOf."""
    for schema in BODY_SCHEMAS.values():
        api.spec.components.schema(schema.__name__, schema=schema)

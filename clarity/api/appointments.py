"""Appointments: /api/v1/patients/{patient_id}/appointments, /api/v1/appointments.

Times carry an offset, as everywhere in the API (common.timestamp_field). Appointments cover
[starts_at, ends_at).
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clarity.api.access import roles
from clarity.api.openapi import any_of_required, if_match
from clarity.api.common import (Blueprint, cursor_field, decode_cursor, etag, if_match_version, limit_field,
                                next_link, run, timestamp_field)
from clarity.security.access import PHI_ROLES
from clarity.services import appointments

blp = Blueprint("appointments", __name__, url_prefix="/api/v1", description="Appointments and schedules")

STATUSES = ("scheduled", "cancelled", "completed")


class AppointmentCreateSchema(Schema):
    starts_at = timestamp_field(required=True)
    ends_at = timestamp_field(required=True)
    provider_id = fields.UUID(load_default=None, metadata={
        "description": "Who sees the patient. A provider books only themself (the default when a "
                       "provider books); an admin may name any active provider (default: the patient's)."})


class AppointmentUpdateSchema(Schema):
    starts_at = timestamp_field()
    ends_at = timestamp_field()
    status = fields.String(validate=validate.OneOf(("cancelled", "completed")))

    class Meta:
        openapi = {"oneOf": [{"required": ["status"], "maxProperties": 1},
                             {**any_of_required("starts_at", "ends_at"), "not": {"required": ["status"]}}]}

    @validates_schema
    def _one_kind_of_change(self, data, **kwargs):
        if not data:
            raise ValidationError("Send starts_at and/or ends_at to reschedule, or status.")
        if "status" in data and len(data) > 1:
            raise ValidationError("Reschedule or change the status, not both at once.")


class AppointmentSchema(Schema):
    id = fields.UUID()
    patient_id = fields.UUID()
    provider_id = fields.UUID()
    starts_at = fields.DateTime()
    ends_at = fields.DateTime()
    status = fields.String(metadata={"enum": list(STATUSES)})
    cancelled_at = fields.DateTime(allow_none=True)
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    created_by = fields.UUID()


class PatientAppointmentArgs(Schema):
    window_start = timestamp_field("from", load_default=None,
                                   metadata={"description": "Appointments ending after this time."})
    window_end = timestamp_field("to", load_default=None,
                                 metadata={"description": "Appointments starting before this time."})
    status = fields.String(validate=validate.OneOf(STATUSES), load_default=None)
    limit = limit_field(strict=False)
    cursor = cursor_field()


class ScheduleArgs(PatientAppointmentArgs):
    window_start = timestamp_field("from", load_default=None, metadata={
        "description": "Appointments ending after this time (default: now, or 7 days before `to`)."})
    window_end = timestamp_field("to", load_default=None, metadata={
        "description": "Appointments starting before this time (default: 7 days after `from`; "
                       "at most 31 days after it)."})
    provider_id = fields.UUID(load_default=None, metadata={"description": "An admin: one provider's schedule."})


def to_view(appointment) -> dict:
    """Times in UTC, whatever the session's time zone."""
    view = dataclasses.asdict(appointment)
    for name in ("starts_at", "ends_at", "cancelled_at", "created_at", "updated_at"):
        if view[name] is not None:
            view[name] = view[name].astimezone(dt.timezone.utc)
    return view


def _location(appointment) -> dict:
    return {"Location": f"/api/v1/appointments/{appointment.id}", **etag(appointment.version)}


@blp.route("/patients/<uuid:patient_id>/appointments", methods=["POST"])
@blp.arguments(AppointmentCreateSchema)
@blp.response(201, AppointmentSchema)
@roles(*PHI_ROLES)
def book_appointment(body, patient_id):
    """Book the patient. 409 naming ``starts_at`` when the provider already has an appointment
    overlapping [starts_at, ends_at) (back to back is fine); 422 for a time without offset, in
    the past, or an appointment ending before it starts or lasting over 8 hours."""
    appointment = run(lambda uow, actor: appointments.book_appointment(uow, actor, patient_id, **body))
    return to_view(appointment), 201, _location(appointment)


@blp.route("/patients/<uuid:patient_id>/appointments", methods=["GET"])
@blp.arguments(PatientAppointmentArgs, location="query", unknown=RAISE)
@blp.response(200, AppointmentSchema(many=True))
@roles(*PHI_ROLES)
def list_patient_appointments(args, patient_id):
    """The patient's appointments overlapping [from, to) (both optional), by start time; the
    next page is in the ``Link`` header."""
    after = decode_cursor(args["cursor"])
    page, next_after = run(lambda uow, actor: appointments.list_patient_appointments(
        uow, actor, patient_id, window_start=args["window_start"], window_end=args["window_end"],
        status=args["status"], after=after, limit=args["limit"]))
    return [to_view(a) for a in page], 200, next_link(next_after)


@blp.route("/appointments", methods=["GET"])
@blp.arguments(ScheduleArgs, location="query", unknown=RAISE)
@blp.response(200, AppointmentSchema(many=True))
@roles(*PHI_ROLES)
def list_schedule(args):
    """Your schedule (an admin: everyone's, or ``provider_id``'s): appointments overlapping
    [from, to), by start time. The window defaults to the next 7 days and spans at most 31
    (422 naming ``to``); the ``Link`` header's next page keeps the window it was given."""
    after = decode_cursor(args["cursor"])
    page, next_after, window = run(lambda uow, actor: appointments.list_schedule(
        uow, actor, window_start=args["window_start"], window_end=args["window_end"],
        provider_id=args["provider_id"], status=args["status"], after=after, limit=args["limit"]))
    # The window the first page defaulted to goes into the next page's query, so it is kept.
    return [to_view(a) for a in page], 200, next_link(next_after, {"from": window[0].isoformat(),
                                                                  "to": window[1].isoformat()})


@blp.route("/appointments/<uuid:appointment_id>", methods=["GET"])
@blp.response(200, AppointmentSchema)
@roles(*PHI_ROLES)
def get_appointment(appointment_id):
    """One appointment; 404 when it does not exist or is not yours."""
    appointment = run(lambda uow, actor: appointments.get_appointment(uow, actor, appointment_id))
    return to_view(appointment), 200, etag(appointment.version)


@blp.route("/appointments/<uuid:appointment_id>", methods=["PATCH"])
@blp.arguments(AppointmentUpdateSchema)
@blp.response(200, AppointmentSchema)
@blp.doc(parameters=[if_match()])
@roles(*PHI_ROLES)
def update_appointment(body, appointment_id):
    """Reschedule (``starts_at`` and/or ``ends_at``; 409 naming ``starts_at`` when the provider
    is busy then) or set ``status`` to ``cancelled`` (frees the slot) or ``completed`` (once
    started). If-Match required: 428 without, 412 when stale; 409 once cancelled or completed."""
    version = if_match_version()
    appointment = run(lambda uow, actor: appointments.update_appointment(uow, actor, appointment_id, version, body))
    return to_view(appointment), 200, etag(appointment.version)

"""Appointments: a provider is never double-booked; the exclusion constraint decides."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg.rows import class_row

from clarity.errors import violation

OVERLAP_CONSTRAINT = "appointments_provider_id_starts_at_excl"


@dataclasses.dataclass(frozen=True)
class Appointment:
    id: uuid.UUID
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str
    cancelled_at: dt.datetime | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    created_by: uuid.UUID
    # The patient's provider, read by get only (None from the other queries, and when the
    # patient is hidden from the actor, who then is the provider in the appointment): what
    # services.patient_access.mark_emergency needs to audit an access only a grant allows.
    patient_provider_id: uuid.UUID | None = None


class AppointmentRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def add(self, *, patient_id, provider_id, starts_at, ends_at, created_by) -> Appointment:
        """Book; Conflict (field ``starts_at``) when the provider is busy at that time, even
        when the competing booking is being committed concurrently."""
        row = self.q.insert_appointment.one(self.conn, {
            "patient_id": patient_id, "provider_id": provider_id, "starts_at": starts_at,
            "ends_at": ends_at, "created_by": created_by}, class_row(Appointment))
        if row is None:
            raise violation(OVERLAP_CONSTRAINT)
        return row

    def get(self, appointment_id, actor) -> Appointment | None:
        """The appointment, with ``patient_provider_id``, if the actor may see it; None
        otherwise (absent or out of scope)."""
        return self.q.get_appointment.one(
            self.conn, {"id": appointment_id, **actor.scope()}, class_row(Appointment))

    def list_for_patient(self, patient_id, *, window_start=None, window_end=None, status=None,
                         after=None, limit=50) -> list[Appointment]:
        """A keyset page, by start time, of a patient's appointments overlapping the window."""
        after_starts_at, after_id = after or (None, None)
        return self.q.list_appointments_for_patient.all(self.conn, {
            "patient_id": patient_id, "window_start": window_start, "window_end": window_end,
            "status": status, "after_starts_at": after_starts_at, "after_id": after_id,
            "limit": limit}, class_row(Appointment))

    def list_schedule(self, actor, *, window_start, window_end, provider_id=None, status=None,
                      after=None, limit=50) -> list[Appointment]:
        """A keyset page, by start time, of the actor's schedule (an admin: everyone's)."""
        after_starts_at, after_id = after or (None, None)
        return self.q.list_schedule_appointments.all(self.conn, {
            **actor.scope(), "provider_id": provider_id, "window_start": window_start,
            "window_end": window_end, "status": status, "after_starts_at": after_starts_at,
            "after_id": after_id, "limit": limit}, class_row(Appointment))

    def reschedule(self, appointment_id, version, actor, *, starts_at, ends_at) -> Appointment | None:
        """Move a scheduled appointment when ``version`` matches (None when it does not);
        raises ExclusionViolation (OVERLAP_CONSTRAINT) when the provider is busy at the new time,
        which the unit of work translates (errors.translate: Conflict, field ``starts_at``)."""
        return self.q.update_appointment_times.one(self.conn, {
            "id": appointment_id, "version": version, **actor.scope(),
            "starts_at": starts_at, "ends_at": ends_at}, class_row(Appointment))

    def set_status(self, appointment_id, version, actor, status) -> Appointment | None:
        """Cancel or complete a scheduled appointment when ``version`` matches; None otherwise."""
        return self.q.update_appointment_status.one(self.conn, {
            "id": appointment_id, "version": version, **actor.scope(), "status": status},
            class_row(Appointment))

    def cancel_upcoming_for_patient(self, patient_id) -> int:
        """Cancel the patient's scheduled appointments that have not started; how many."""
        return self.q.update_appointments_cancelled_for_patient.rowcount(self.conn, {"patient_id": patient_id})

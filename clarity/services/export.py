"""FHIR R4 export of patients' records: one patient as an NDJSON stream (GET
/api/v1/patients/{id}/export), and the resources of each patient of a bulk export
(clarity.services.bulk_export, ``flask --app wsgi export patients``).

An export is a sequence of producers, one per kind of data, each streaming its rows from a
server-side cursor and mapping them to resources (clarity.fhir); a new kind of data is a new
producer in PRODUCERS. The access is audited first (action E, naming the resource types), in a
unit of work that commits before anything is read for the export; the reads then run in one
READ ONLY, REPEATABLE READ transaction of their own (``snapshot``) carrying the actor's context,
so the export is one consistent state and row-level security applies to every row.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator

import orjson
from psycopg import IsolationLevel
from psycopg.pq import TransactionStatus

from clarity import fhir
from clarity.audit import EXECUTE, AuditEvent
from clarity.errors import NotFound, Unavailable
from clarity.repositories.export import ExportRepository
from clarity.security.access import Actor
from clarity.services.patient_access import require_patient

ENTITY = "patient"
# Lines are sent in chunks of about this size: one write per line would be a system call per
# reading, one chunk for everything would hold the whole export in memory.
CHUNK_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Producer:
    """One kind of data: ``produce(reader, patient)`` yields its resources of ``resource_type``."""

    resource_type: str
    produce: Callable[[ExportRepository, object], Iterable[dict]]


def _patient(reader, patient):
    return [fhir.patient(patient)]


def _readings(reader, patient):
    subject, patient_id = fhir.reference("Patient", patient.id), str(patient.id)
    return (fhir.reading_observation(patient_id, subject, r) for r in reader.readings(patient.id))


def _records(record_type: str, to_resource):
    def produce(reader, patient):
        subject = fhir.reference("Patient", patient.id)
        return (to_resource(subject, record) for record in reader.records(patient.id, record_type))
    return produce


def _documents(reader, patient):
    subject = fhir.reference("Patient", patient.id)
    return (fhir.document(subject, row) for row in reader.documents(patient.id))


def _appointments(reader, patient):
    return (fhir.appointment(row) for row in reader.appointments(patient.id))


def _alerts(reader, patient):
    subject = fhir.reference("Patient", patient.id)
    return (fhir.flag(subject, row) for row in reader.alerts(patient.id))


PRODUCERS = (
    Producer("Patient", _patient),
    Producer("Observation", _readings),
    Producer("Observation", _records("lab_result", fhir.lab_result)),
    Producer("Condition", _records("diagnosis", fhir.diagnosis)),
    Producer("MedicationRequest", _records("prescription", fhir.prescription)),
    Producer("DocumentReference", _records("note", fhir.note)),
    Producer("DocumentReference", _documents),
    Producer("Appointment", _appointments),
    Producer("Flag", _alerts),
)
RESOURCE_TYPES = tuple(dict.fromkeys(producer.resource_type for producer in PRODUCERS))


def audit_export(uow, actor: Actor, patient_id) -> None:
    """Audit an export of the patient (action E, the resource types as its fields) and check
    the actor may read the patient, as for reading it: Forbidden (role), NotFound (absent or
    out of scope); an export only an emergency-access grant allows is audited as one."""
    event = AuditEvent(EXECUTE, "patient.export", ENTITY, patient_id, patient_id, fields=RESOURCE_TYPES)
    uow.audit(event)
    require_patient(uow, actor, patient_id, event)


@contextlib.contextmanager
def snapshot(db, actor: Actor, request_id=None):
    """A unit of work to read an export in: READ ONLY and REPEATABLE READ, so every producer
    reads the same state, with the actor's context, so row-level security applies. Yields
    ``(uow, ExportRepository)``; ends (rolled back or committed, nothing written) with the
    block. On a connection already in a transaction (the tests') it is a savepoint there."""
    with db.connection() as conn:
        own = conn.info.transaction_status == TransactionStatus.IDLE
        if own:
            conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
        try:
            with db.unit_of_work(conn, actor=actor, request_id=request_id) as uow:
                if uow.keyring is None:
                    raise Unavailable("Encryption keys are not configured.", retry_after=60)
                yield uow, ExportRepository(conn, uow.queries.export, uow.keyring)
        finally:
            if own and not conn.broken:  # a broken one the pool discards
                conn.isolation_level = conn.read_only = None


def resources(uow, reader: ExportRepository, actor: Actor, patient_id) -> Iterator[tuple[str, dict]]:
    """Every resource of the patient's export as ``(resource type, resource)``, producer by
    producer, the Patient first. NotFound, before anything is produced, when the actor does not
    see the live patient in this snapshot (deleted since the audit, say)."""
    patient = uow.patients.get(patient_id, actor)
    if patient is None:
        raise NotFound("No such patient.")
    for producer in PRODUCERS:
        for resource in producer.produce(reader, patient):
            yield producer.resource_type, resource


def ndjson(db, actor: Actor, patient_id, *, request_id=None) -> Iterator[bytes]:
    """The patient's export as NDJSON (one resource a line), in chunks of whole lines of about
    CHUNK_BYTES, read in one snapshot held until the iterator ends or is closed. Audit the
    export (audit_export) and commit that first."""
    with snapshot(db, actor, request_id) as (uow, reader):
        chunk, size = [], 0
        for _, resource in resources(uow, reader, actor, patient_id):
            line = orjson.dumps(resource, option=orjson.OPT_APPEND_NEWLINE)
            chunk.append(line)
            size += len(line)
            if size >= CHUNK_BYTES:
                yield b"".join(chunk)
                chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)

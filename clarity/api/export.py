"""FHIR export: GET /api/v1/patients/{id}/export streams the patient's record as FHIR R4 NDJSON
(``application/fhir+ndjson``), one resource a line.

Not FHIR's ``$export``: that is the Bulk Data kick-off (202 Accepted and a status URL to poll,
the files fetched later), which this synchronous stream is not. The audit event commits before
the first byte; the stream then reads one consistent snapshot. A failure after the first bytes
cuts the connection (logged without PHI), so a client never takes a truncated export for a
whole one.
"""
from __future__ import annotations

import logging

from flask import Response, g, stream_with_context
from marshmallow import RAISE, Schema

from clarity import heartbeat, runtime
from clarity.api.access import roles
from clarity.api.common import Blueprint, run
from clarity.api.limits import expensive
from clarity.security.access import PHI_ROLES
from clarity.services import export

log = logging.getLogger(__name__)

blp = Blueprint("export", __name__, url_prefix="/api/v1", description="FHIR R4 export of a patient's record")

NDJSON = "application/fhir+ndjson"
EXAMPLE = '{"resourceType":"Patient","id":"…"}\n{"resourceType":"Observation","id":"…"}\n'


class ExportArgs(Schema):
    """No query parameters: an unknown one is 422, as on every route."""


class ExportInterrupted(Exception):
    """The export failed after its first bytes were sent; the server cuts the connection."""


@blp.route("/patients/<uuid:patient_id>/export", methods=["GET"])
@blp.arguments(ExportArgs, location="query", unknown=RAISE)
@blp.response(200, content_type=NDJSON, example=EXAMPLE, description=(
    "The patient's record as FHIR R4 NDJSON, one resource a line: the Patient first, then Observation "
    "(readings, lab results), Condition, MedicationRequest, DocumentReference, Appointment and Flag "
    "(alerts). A connection cut before the end means the export failed: start it again."))
@roles(*PHI_ROLES)
@expensive
def export_patient(args, patient_id):
    """Stream the patient's record (admins, and providers who see the patient; 404 otherwise).
    Audited as one export (action E) before the first byte."""
    def audit(uow, actor):
        export.audit_export(uow, actor, patient_id)
        return actor

    actor = run(audit)
    chunks = export.ndjson(runtime().db, actor, patient_id, request_id=g.request_id)
    # The snapshot opens and the Patient is read here, so a failure so far (the patient deleted
    # since the audit, no connection free) is still an answer with a status, not a cut stream.
    first = next(chunks)
    return Response(stream_with_context(_stream(first, chunks)), mimetype=NDJSON, headers={
        "Content-Disposition": f'attachment; filename="patient-{patient_id}.ndjson"',
        "Cache-Control": "no-store"})


def _stream(first: bytes, rest):
    """``first``, then ``rest``; an error in ``rest`` is logged by type only (a driver's
    message can quote values) and re-raised without it, which makes the server cut the
    connection: the status line is long gone. The worker reports in as it goes, so an export
    longer than gunicorn's worker timeout is not taken for a stuck worker."""
    yield first
    try:
        for chunk in rest:
            heartbeat.beat()
            yield chunk
    except Exception as exc:
        log.error("a patient export stopped mid-stream (%s, SQLSTATE %s); the connection is cut",
                  type(exc).__name__, getattr(exc, "sqlstate", None))
        raise ExportInterrupted("The export stopped before its end.") from None

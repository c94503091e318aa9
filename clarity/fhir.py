"""FHIR R4 resources made from Clarity's rows: plain functions returning dicts for orjson to
write (see instant()), no I/O. Each resource's id is the Clarity UUID of what it shows, and it names its patient as
``Patient/{id}``; staff appear as ``Practitioner/{user id}`` references (users are not exported).

- a patient: ``Patient``, the MRN an identifier in MRN_SYSTEM; the SSN, insurance and
  administrative notes are left out (not needed to read the chart; they stay in Clarity).
- a biometric reading: ``Observation`` with a LOINC code and a UCUM unit, category vital-signs
  and the vital-signs profile, but steps (category activity, no profile). Blood pressure is
  stored as two kinds, so it is two Observations (8480-6, 8462-4), not the 85354-9 panel. A
  reading has no id of its own (its key is patient, kind, time and device), so its id is a
  UUID derived from that key (reading_id): the same in every export.
- medical records, current versions only, each under its chain's original id (stable across
  amendments, as FHIR keeps one logical resource through its versions), ``meta.versionId``
  counting the versions and an identifier naming the current version's own id: a note is a
  ``DocumentReference`` (docStatus amended once amended), a diagnosis a ``Condition`` (ICD-10),
  a prescription a ``MedicationRequest``, a lab result an ``Observation`` (status amended).
- a patient document: a ``DocumentReference`` linking to its content (see document()).
- an appointment: ``Appointment``; an alert: ``Flag`` (see flag()).

Times stay datetimes, in UTC (instant()): orjson writes them as RFC 3339, as FHIR wants.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = dt.timedelta(microseconds=1)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
MRN_SYSTEM = "urn:clarity:mrn"
RECORD_VERSION_SYSTEM = "urn:clarity:medical-record"
VITAL_SIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
FLAG_PRIORITY = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
# Fixed forever: the ids of exported readings are derived under it (reading_id).
READING_NAMESPACE = uuid.UUID("8ea2ff57-0842-4551-8efb-a7f5af489b34")
_NAMESPACE_BYTES = READING_NAMESPACE.bytes

# Per biometric kind: LOINC code and display, the UCUM code of the unit Clarity stores (the
# unit text itself stays the Quantity's human-readable unit), and the Observation category.
READING_CODES = {
    "heart_rate": ("8867-4", "Heart rate", "/min", "vital-signs"),
    "bp_systolic": ("8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs"),
    "bp_diastolic": ("8462-4", "Diastolic blood pressure", "mm[Hg]", "vital-signs"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "vital-signs"),
    "temperature": ("8310-5", "Body temperature", "Cel", "vital-signs"),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min", "vital-signs"),
    "glucose": ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "vital-signs"),
    "weight": ("29463-7", "Body weight", "kg", "vital-signs"),
    "steps": ("55423-8", "Number of steps in unspecified time Pedometer", "{steps}", "activity"),
}
CATEGORY_DISPLAY = {"vital-signs": "Vital Signs", "activity": "Activity", "laboratory": "Laboratory"}
# Lab units as clinicians write them -> UCUM; a unit not listed is exported as text only.
LAB_UCUM = {
    "mg/dL": "mg/dL", "g/dL": "g/dL", "g/L": "g/L", "mg/L": "mg/L", "ng/mL": "ng/mL", "ng/dL": "ng/dL",
    "pg/mL": "pg/mL", "mmol/L": "mmol/L", "umol/L": "umol/L", "µmol/L": "umol/L", "mEq/L": "meq/L",
    "meq/L": "meq/L", "U/L": "U/L", "IU/L": "[IU]/L", "mIU/L": "m[IU]/L", "uIU/mL": "u[IU]/mL", "%": "%",
    "fL": "fL", "pg": "pg", "10^9/L": "10*9/L", "x10^9/L": "10*9/L", "10^12/L": "10*12/L",
    "x10^12/L": "10*12/L", "mm/h": "mm/h", "s": "s", "mL/min/1.73m2": "mL/min/{1.73_m2}",
}
INTERPRETATION = {"normal": ("N", "Normal"), "low": ("L", "Low"), "high": ("H", "High"),
                  "critical_low": ("LL", "Critical low"), "critical_high": ("HH", "Critical high"),
                  "abnormal": ("A", "Abnormal")}
APPOINTMENT_STATUS = {"scheduled": "booked", "cancelled": "cancelled", "completed": "fulfilled"}
FLAG_PRIORITY_CODE = {"low": ("PL", "Low priority"), "medium": ("PM", "Medium priority"),
                      "high": ("PH", "High priority")}


def instant(value: dt.datetime) -> dt.datetime:
    """A FHIR instant (or dateTime): the moment in UTC, left a datetime for orjson to write as
    RFC 3339 (``2030-05-01T09:00:00+00:00``) in C, a third of the cost of ``isoformat()``."""
    return value.astimezone(UTC)


def reference(resource_type: str, resource_id) -> dict:
    return {"reference": f"{resource_type}/{resource_id}"}


def reading_id(patient_id, kind: str, recorded_at: dt.datetime, source_device: str) -> str:
    """The id of a reading's Observation: the UUID (version 5, under READING_NAMESPACE) of the
    reading's key, which is unique and never changes (readings are facts), so every export
    gives the same id and an alert can point at the reading that raised it. The instant is
    keyed as microseconds since the epoch, whatever its time zone. uuid.uuid5 computed by
    hand: the same bytes at half the cost, which a million readings notice."""
    micros = (recorded_at - EPOCH) // MICROSECOND
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{patient_id}|{kind}|{micros}|{source_device}".encode(),
                                    usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _category(code: str) -> list:
    return [{"coding": [{"system": _TERMINOLOGY + "observation-category", "code": code,
                         "display": CATEGORY_DISPLAY[code]}]}]


def _reading_head(kind: str) -> dict:
    """What every Observation of one kind shares (built once per kind)."""
    loinc, display, _, category = READING_CODES[kind]
    head = {"meta": {"profile": [VITAL_SIGNS_PROFILE]}} if category == "vital-signs" else {}
    head.update(status="final", category=_category(category),
                code={"coding": [{"system": LOINC, "code": loinc, "display": display}], "text": display})
    return head


_READING_HEADS = {kind: _reading_head(kind) for kind in READING_CODES}


def patient(row) -> dict:
    """A repositories.patients.Patient as a Patient resource."""
    phi = row.phi
    resource = {
        "resourceType": "Patient", "id": str(row.id), "meta": _meta(row.version, row.updated_at),
        "identifier": [{"use": "usual", "type": {"coding": [{"system": _TERMINOLOGY + "v2-0203", "code": "MR",
                                                              "display": "Medical record number"}]},
                        "system": MRN_SYSTEM, "value": phi["mrn"]}],
        "active": row.status != "inactive",
        "name": [{"use": "official", "family": phi["last_name"], "given": [phi["first_name"]]}],
        "telecom": [{"system": system, "value": phi[field]}
                    for system, field in (("phone", "phone"), ("email", "email")) if phi.get(field)],
        "gender": phi["sex"],
        "birthDate": phi["date_of_birth"],
        "deceasedBoolean": row.status == "deceased",
        "address": [_address(phi["address"])] if phi.get("address") else [],
        "contact": [_contact(phi["emergency_contact"])] if phi.get("emergency_contact") else [],
        "generalPractitioner": [reference("Practitioner", row.provider_id)],
    }
    return {key: value for key, value in resource.items() if value != []}


def _address(address: dict) -> dict:
    lines = [line for line in (address.get("line1"), address.get("line2")) if line]
    fields = {"line": lines, "city": address.get("city"), "state": address.get("state"),
              "postalCode": address.get("postal_code"), "country": address.get("country")}
    return {key: value for key, value in fields.items() if value}


def _contact(contact: dict) -> dict:
    fields = {"relationship": [{"text": contact["relationship"]}] if contact.get("relationship") else None,
              "name": {"text": contact["name"]},
              "telecom": [{"system": "phone", "value": contact["phone"]}]}
    return {key: value for key, value in fields.items() if value}


def reading_observation(patient_id: str, subject: dict, reading) -> dict:
    """A repositories.export.StoredReading as an Observation; ``subject`` is the patient's
    reference (shared by every reading of the export)."""
    kind = reading.kind
    return {
        "resourceType": "Observation",
        "id": reading_id(patient_id, kind, reading.recorded_at, reading.source_device),
        **_READING_HEADS[kind],
        "subject": subject,
        "effectiveDateTime": instant(reading.recorded_at),
        "issued": instant(reading.received_at),
        "valueQuantity": {"value": reading.value, "unit": reading.unit, "system": UCUM,
                          "code": READING_CODES[kind][2]},
        "device": {"display": reading.source_device},
    }


def _record_head(resource_type: str, record) -> dict:
    return {"resourceType": resource_type, "id": str(record.id), "meta": _meta(record.versions, record.created_at),
            "identifier": [{"system": RECORD_VERSION_SYSTEM, "value": str(record.version_id)}]}


def note(subject: dict, record) -> dict:
    """A note (repositories.export.CurrentRecord) as a DocumentReference, its text inline."""
    text = record.body["text"].encode()
    return {
        **_record_head("DocumentReference", record),
        "status": "current",
        "docStatus": "amended" if record.versions > 1 else "final",
        "type": {"coding": [{"system": LOINC, "code": "34109-9", "display": "Note"}], "text": "Note"},
        "subject": subject,
        "date": instant(record.created_at),
        "author": [reference("Practitioner", record.author_id)],
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text).decode(), "size": len(text),
                                    "creation": instant(record.recorded_at)}}],
    }


def diagnosis(subject: dict, record) -> dict:
    """A diagnosis as a Condition coded in ICD-10."""
    body = record.body
    return {
        **_record_head("Condition", record),
        "verificationStatus": {"coding": [{"system": _TERMINOLOGY + "condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": _TERMINOLOGY + "condition-category", "code": "encounter-diagnosis",
                                  "display": "Encounter Diagnosis"}]}],
        "code": {"coding": [{"system": ICD10, "code": body["code"]}], "text": body["description"]},
        "subject": subject,
        "recordedDate": instant(record.recorded_at),
        "recorder": reference("Practitioner", record.author_id),
    }


def prescription(subject: dict, record) -> dict:
    """A prescription as a MedicationRequest. Its status is ``unknown``: Clarity records the
    order, not whether it was dispensed, completed or stopped."""
    body = record.body
    resource = {
        **_record_head("MedicationRequest", record),
        "status": "unknown",
        "intent": "order",
        "medicationCodeableConcept": {"text": body["medication"]},
        "subject": subject,
        "authoredOn": instant(record.recorded_at),
        "requester": reference("Practitioner", record.author_id),
        "dosageInstruction": [{"text": f"{body['dose']}, {body['route']}, {body['frequency']}",
                               "route": {"text": body["route"]}}],
    }
    if body.get("duration_days"):
        resource["dispenseRequest"] = {"expectedSupplyDuration": {
            "value": body["duration_days"], "unit": "days", "system": UCUM, "code": "d"}}
    return resource


def lab_result(subject: dict, record) -> dict:
    """A lab result as a laboratory Observation: a number as a Quantity (with its UCUM code
    when the unit is one LAB_UCUM knows), a text as a string; the flag as interpretation."""
    body = record.body
    resource = {
        **_record_head("Observation", record),
        "status": "amended" if record.versions > 1 else "final",
        "category": _category("laboratory"),
        "code": {"text": body["test"]},
        "subject": subject,
        "effectiveDateTime": instant(record.recorded_at),
        "issued": instant(record.created_at),
    }
    value = body["value"]
    if isinstance(value, str):
        resource["valueString"] = value
    else:
        quantity = {"value": value, "unit": body["unit"]}
        if body["unit"] in LAB_UCUM:
            quantity.update(system=UCUM, code=LAB_UCUM[body["unit"]])
        resource["valueQuantity"] = quantity
    if body.get("flag"):
        code, display = INTERPRETATION[body["flag"]]
        resource["interpretation"] = [{"coding": [{"system": _TERMINOLOGY + "v3-ObservationInterpretation",
                                                   "code": code, "display": display}]}]
    if body.get("reference_range"):
        resource["referenceRange"] = [{"text": body["reference_range"]}]
    return resource


def document(subject: dict, row) -> dict:
    """A patient document (repositories.documents.Document) as a DocumentReference whose
    attachment points at its content (``/api/v1/documents/{id}/content``, a path on this API:
    the export cannot know the address clients reach it by), which stays behind that route and
    its own audit. No hash: FHIR's is a SHA-1, Clarity keeps a SHA-256 (the content's ETag)."""
    attachment = {"contentType": row.content_type, "url": f"/api/v1/documents/{row.id}/content",
                  "size": row.size_bytes, "creation": instant(row.created_at)}
    if row.title or row.filename:
        attachment["title"] = row.title or row.filename
    resource = {
        "resourceType": "DocumentReference", "id": str(row.id), "meta": _meta(row.version, row.created_at),
        "status": "current",
        "docStatus": "final",
        "subject": subject,
        "date": instant(row.created_at),
        "author": [reference("Practitioner", row.author_id)],
        "description": row.title,
        "content": [{"attachment": attachment}],
    }
    return {key: value for key, value in resource.items() if value is not None}


def appointment(row) -> dict:
    """A repositories.appointments.Appointment; the patient and the provider seeing them are
    its participants."""
    return {
        "resourceType": "Appointment", "id": str(row.id), "meta": _meta(row.version, row.updated_at),
        "status": APPOINTMENT_STATUS[row.status],
        "start": instant(row.starts_at),
        "end": instant(row.ends_at),
        "created": instant(row.created_at),
        "participant": [{"actor": reference("Patient", row.patient_id), "status": "accepted"},
                        {"actor": reference("Practitioner", row.provider_id), "status": "accepted"}],
    }


def flag(subject: dict, row) -> dict:
    """An alert (repositories.alerts.Alert) as a Flag: a warning about the patient for as long
    as it is open (active), inactive once resolved, its period from raised to resolved; its
    severity as the standard flag-priority extension and the reading that raised it as the
    flag-detail extension. (DetectedIssue is for issues with clinical actions, such as drug
    interactions; an alert is a warning raised by a measurement and has a status to follow.)
    Acknowledgement leaves it active: FHIR's Flag has no state for it."""
    display = READING_CODES[row.kind][1]
    reading = reading_id(row.patient_id, row.kind, row.reading_recorded_at, row.source_device)
    priority, priority_display = FLAG_PRIORITY_CODE[row.severity]
    period = {"start": instant(row.created_at)}
    if row.resolved_at is not None:
        period["end"] = instant(row.resolved_at)
    return {
        "resourceType": "Flag", "id": str(row.id), "meta": _meta(row.version, row.updated_at),
        "extension": [
            {"url": FLAG_PRIORITY, "valueCodeableConcept": {"coding": [{
                "system": "http://hl7.org/fhir/flag-priority-code", "code": priority, "display": priority_display}]}},
            {"url": FLAG_DETAIL, "valueReference": reference("Observation", reading)},
        ],
        "status": "inactive" if row.status == "resolved" else "active",
        "category": [{"coding": [{"system": _TERMINOLOGY + "flag-category", "code": "clinical",
                                  "display": "Clinical"}]}],
        "code": {"text": f"{display} {row.value:g} outside its alert range ({_range(row.min_value, row.max_value)})"},
        "subject": subject,
        "period": period,
    }


def _range(low, high) -> str:
    if low is None:
        return f"at most {high:g}"
    if high is None:
        return f"at least {low:g}"
    return f"{low:g} to {high:g}"


def _meta(version, last_updated: dt.datetime) -> dict:
    return {"versionId": str(version), "lastUpdated": instant(last_updated)}

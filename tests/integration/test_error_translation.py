"""The constraint table (errors.CONSTRAINTS) against the migrated schema: every name in it exists
and is of the kind its error says; every constraint a request could break is in it, and each one
left out is listed below with the reason no request reaches it. And conflicts the database finds
leave the API as the table says, audited as failures."""
import datetime as dt

import pytest

from clarity.errors import CONSTRAINTS, Conflict, Invalid

# Unique, exclusion, foreign-key and check constraints (and unique indexes) of the app's tables,
# other than the ones a partition inherits or clones. Primary keys are left out: ids are
# generated (gen_random_uuid(), uuid4), and digital_twin_versions_pkey is read as "not the next
# version" by repositories/digital_twins.py.
SCHEMA_CONSTRAINTS = """
SELECT c.conname, CASE c.contype WHEN 'u' THEN 'unique' WHEN 'x' THEN 'exclusion'
                                 WHEN 'f' THEN 'foreign key' ELSE 'check' END
  FROM pg_constraint c
  JOIN pg_class t ON t.oid = c.conrelid
 WHERE t.relnamespace = current_schema()::regnamespace AND NOT t.relispartition
   AND c.contype IN ('u', 'x', 'f', 'c')
UNION ALL
SELECT i.relname, 'unique'
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid
 WHERE t.relnamespace = current_schema()::regnamespace AND NOT t.relispartition
   AND x.indisunique AND NOT x.indisprimary
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
"""

ACTOR = "the acting user's id, from a live token, never from the request body"
PATIENT = "the patient is read (404) before anything is written for it, and patients are never deleted"
DIGEST = "a digest the app computes (32 bytes), never a client's value"
APP_WRITTEN = "written by the app from its own values"

NOT_TRANSLATED = {
    "alert_rules_created_by_fkey": ACTOR,
    "alert_rules_updated_by_fkey": ACTOR,
    "alert_rules_patient_id_fkey": PATIENT,
    "alert_rules_kind_key": "insert_alert_rule is ON CONFLICT DO NOTHING; the service answers the missing row",
    "alert_rules_patient_id_kind_key": "insert_alert_rule is ON CONFLICT DO NOTHING; the service answers the "
                                       "missing row",
    "alerts_acknowledged_by_fkey": ACTOR,
    "alerts_resolved_by_fkey": ACTOR,
    "alerts_patient_id_fkey": "alerts are raised by the biometrics insert, for the readings' patient",
    "alerts_reading_key": "raised ON CONFLICT DO NOTHING: a reading raises one alert",
    "alerts_acknowledged_check": "the status update sets acknowledged_by/_at with the status",
    "alerts_resolved_check": "the status update sets resolved_by/_at with the status",
    "alerts_rule_scope_check": "copied from the matching rule by the biometrics insert",
    "alerts_severity_check": "copied from the matching rule, itself checked",
    "appointments_created_by_fkey": ACTOR,
    "audit_events_action_check": APP_WRITTEN + " (clarity.audit)",
    "audit_events_outcome_check": APP_WRITTEN + " (ClarityError.outcome)",
    "audit_seals_event_id_key": APP_WRITTEN + " (the sealing job)",
    "audit_seals_hash_check": DIGEST,
    "audit_seals_prev_hash_check": DIGEST,
    "audit_seals_seq_check": APP_WRITTEN + " (the sealing job)",
    "auth_tokens_token_hash_check": DIGEST,
    "auth_tokens_token_hash_key": "the digest of a new random token",
    "auth_tokens_user_id_fkey": "the user just authenticated",
    "biometric_patients_patient_id_fkey": PATIENT,
    "biometric_readings_reading_key": "insert_biometric_readings skips stored readings (ON CONFLICT DO NOTHING)",
    "digital_twin_versions_config_check": "TwinConfigSchema bounds a configuration (64 parameters of short names) "
                                          "far below 64 KiB, and it is always an object",
    "digital_twin_versions_created_by_fkey": ACTOR,
    "digital_twin_versions_patient_id_fkey": PATIENT,
    "digital_twin_versions_prev_version_fkey": "repositories/digital_twins.py reads it as 'not the next version' "
                                               "(412)",
    "digital_twin_versions_version_check": "the version read plus one, or 1",
    "document_chunks_document_id_fkey": "chunks are written for the document the upload just inserted",
    "document_chunks_index_check": APP_WRITTEN + " (0, 1, … as the upload cuts the body)",
    "document_chunks_sealed_check": APP_WRITTEN + " (a sealed chunk of at most 64 KiB)",
    "documents_author_id_fkey": ACTOR,
    "documents_content_type_check": "the media type is one of CLARITY_DOCUMENT_TYPES (415 otherwise)",
    "documents_deleted_by_fkey": ACTOR,
    "documents_deleted_check": "delete_document sets deleted_at and deleted_by together",
    "documents_meta_check": "the API bounds the title and file name far below the envelope's limit",
    "documents_patient_id_fkey": PATIENT,
    "documents_size_bytes_check": APP_WRITTEN + " (the bytes the upload read)",
    "emergency_access_grants_expires_at_check": "minutes come from the settings, not the request",
    "emergency_access_grants_patient_id_fkey": "repositories/emergency_access.py reads it as 'no such patient' "
                                               "(404)",
    "emergency_access_grants_provider_id_fkey": ACTOR,
    "idempotency_keys_key_hash_check": DIGEST,
    "idempotency_keys_principal_id_fkey": ACTOR,
    "medical_records_amends_id_check": "the new record's id is a fresh uuid4, which no amends_id can name",
    "medical_records_author_id_fkey": ACTOR,
    "medical_records_id_patient_id_type_key": "the target of medical_records_amends_id_fkey; ids are fresh uuid4s",
    "medical_records_patient_id_fkey": PATIENT,
    "patients_email_bidx_check": DIGEST,
    "patients_email_bidx_next_check": DIGEST,
    "patients_last_name_bidx_check": DIGEST,
    "patients_last_name_bidx_next_check": DIGEST,
    "patients_mrn_bidx_check": DIGEST,
    "patients_mrn_bidx_next_check": DIGEST,
}

ERROR_FOR_KIND = {"unique": Conflict, "exclusion": Conflict, "foreign key": Invalid, "check": Invalid}


@pytest.fixture
def schema_constraints(conn) -> dict:
    return dict(conn.execute(SCHEMA_CONSTRAINTS).fetchall())


def test_every_constraint_in_the_table_exists_in_the_migrated_schema_with_the_kind_its_error_says(schema_constraints):
    missing = sorted(set(CONSTRAINTS) - set(schema_constraints))
    assert not missing, f"errors.CONSTRAINTS names constraints the schema does not have: {missing}"
    assert {name: entry.error for name, entry in CONSTRAINTS.items()} == {
        name: ERROR_FOR_KIND[schema_constraints[name]] for name in CONSTRAINTS}


def test_every_constraint_of_the_schema_is_translated_or_listed_with_the_reason_no_request_reaches_it(
        schema_constraints):
    assert not set(CONSTRAINTS) & set(NOT_TRANSLATED)
    assert not set(NOT_TRANSLATED) - set(schema_constraints), "a constraint listed here no longer exists"
    unaccounted = sorted(set(schema_constraints) - set(CONSTRAINTS) - set(NOT_TRANSLATED))
    assert not unaccounted, (f"add these to errors.CONSTRAINTS (field and message), or to NOT_TRANSLATED "
                             f"with the reason no request can break them: {unaccounted}")


# --- conflicts the database finds: the table's answer, audited as a failure ------------------------------------

START = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def hours(n: float) -> str:
    return (START + dt.timedelta(hours=n)).isoformat()


def outcomes(conn, actor_id, event_type):
    return [row[0] for row in conn.execute(
        "SELECT outcome FROM audit_events WHERE actor_id = %s AND event_type = %s ORDER BY id",
        (actor_id, event_type)).fetchall()]


def assert_problem(response, status, constraint):
    problem = response.get_json()
    assert response.status_code == status and response.mimetype == "application/problem+json"
    assert (problem["field"], problem["detail"]) == (CONSTRAINTS[constraint].field, CONSTRAINTS[constraint].detail)


def test_rescheduling_onto_a_booked_slot_is_the_exclusion_constraints_409_audited_as_a_failure(
        client, conn, provider, create_patient):
    def book(start):
        response = client.post(f"/api/v1/patients/{create_patient(provider)['id']}/appointments",
                               json={"starts_at": hours(start), "ends_at": hours(start + 1)}, headers=provider.headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    book(2)
    appointment = book(0)
    moved = client.patch(f"/api/v1/appointments/{appointment['id']}", headers={**provider.headers, "If-Match": '"1"'},
                         json={"starts_at": hours(2.5), "ends_at": hours(3.5)})

    assert_problem(moved, 409, "appointments_provider_id_starts_at_excl")
    assert outcomes(conn, provider.id, "appointment.update") == ["failure"]


def test_amending_a_record_twice_is_the_unique_constraints_409_audited_as_a_failure(
        client, conn, provider, create_patient):
    url = f"/api/v1/patients/{create_patient(provider)['id']}/records"

    def add(**extra):
        return client.post(url, json={"type": "note", "body": {"text": "Seen in clinic."}, **extra},
                           headers=provider.headers)

    first = add().get_json()
    assert add(amends_id=first["id"]).status_code == 201
    again = add(amends_id=first["id"])

    assert_problem(again, 409, "medical_records_amends_id_key")
    assert outcomes(conn, provider.id, "medical_record.create") == ["success", "success", "failure"]

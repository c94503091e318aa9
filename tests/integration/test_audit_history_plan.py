"""A patient's access history is index-served: the events about the patient (btree on
patient_id) and the list pages that showed it (GIN on patient_ids), never a scan of the trail."""
from __future__ import annotations

import uuid

import psycopg

from clarity import queries

LIST_AUDIT_EVENTS = queries.load().audit.list_audit_events.sql


def test_a_patients_history_reads_both_indexes_and_no_table_scan(server, fresh_database):
    patient = uuid.uuid4()
    with psycopg.connect(server.url(fresh_database), autocommit=True) as conn:
        conn.execute("""
            INSERT INTO audit_events (action, event_type, patient_id, patient_ids, outcome)
            SELECT 'R', 'patient.read', gen_random_uuid(), NULL, 'success' FROM generate_series(1, 20000)
            UNION ALL
            SELECT 'R', 'patient.list', NULL, ARRAY[gen_random_uuid(), gen_random_uuid()], 'success'
              FROM generate_series(1, 5000)""")
        conn.execute("INSERT INTO audit_events (action, event_type, patient_id, patient_ids, outcome)"
                     " VALUES ('R', 'patient.read', %s, NULL, 'success'),"
                     "        ('R', 'patient.list', NULL, ARRAY[gen_random_uuid(), %s], 'success')",
                     (patient, patient))
        conn.execute("ANALYZE audit_events")
        params = {"patient_id": patient, "actor_id": None, "action": None, "occurred_from": None,
                  "occurred_to": None, "after_occurred_at": None, "after_id": None, "limit": 50}
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {LIST_AUDIT_EVENTS}", params))
        found = conn.execute(LIST_AUDIT_EVENTS, params).fetchall()
    assert "audit_events_patient_ids_idx" in plan and "audit_events_patient_id_occurred_at_idx" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert len(found) == 2

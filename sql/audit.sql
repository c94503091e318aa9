-- name: insert_audit_events!
-- Write a batch of audit events in one statement. Params: events (a JSON array of objects).
INSERT INTO audit_events (actor_id, actor_role, action, event_type, entity_type, entity_id,
                          patient_id, outcome, client_addr, request_id, fields)
SELECT e.actor_id, e.actor_role, e.action, e.event_type, e.entity_type, e.entity_id,
       e.patient_id, e.outcome, e.client_addr, e.request_id, coalesce(e.fields, '{}')
  FROM jsonb_to_recordset(%(events)s::jsonb) AS e(
           actor_id uuid, actor_role text, action char(1), event_type text, entity_type text,
           entity_id text, patient_id uuid, outcome text, client_addr inet, request_id text,
           fields text[]);

-- name: count_login_failures^
-- Failed logins inside the window: for the account since its last success, and for the
-- client address. Params: user_id (may be null), client_addr (may be null), window_seconds.
-- Returns: account_failures, address_failures.
SELECT count(*) FILTER (
           WHERE a.actor_id = %(user_id)s::uuid
             AND a.occurred_at > coalesce((SELECT max(s.occurred_at) FROM audit_events s
                                            WHERE s.event_type = 'auth.login'
                                              AND s.actor_id = %(user_id)s::uuid
                                              AND s.outcome = 'success'), '-infinity')
       ) AS account_failures,
       count(*) FILTER (WHERE a.client_addr = %(client_addr)s::inet) AS address_failures
  FROM audit_events a
 WHERE a.event_type = 'auth.login'
   AND a.outcome <> 'success'
   AND a.occurred_at > now() - make_interval(secs => %(window_seconds)s)
   AND (a.actor_id = %(user_id)s::uuid OR a.client_addr = %(client_addr)s::inet);

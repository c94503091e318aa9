-- name: insert_audit_events!
-- Write a batch of audit events in one statement. Params: events (a JSON array of objects;
-- patient_ids only on a list's event).
INSERT INTO audit_events (actor_id, actor_role, action, event_type, entity_type, entity_id,
                          patient_id, patient_ids, outcome, client_addr, request_id, fields)
SELECT e.actor_id, e.actor_role, e.action, e.event_type, e.entity_type, e.entity_id,
       e.patient_id, e.patient_ids, e.outcome, e.client_addr, e.request_id, coalesce(e.fields, '{}')
  FROM jsonb_to_recordset(%(events)s::jsonb) AS e(
           actor_id uuid, actor_role text, action char(1), event_type text, entity_type text,
           entity_id text, patient_id uuid, patient_ids uuid[], outcome text, client_addr inet,
           request_id text, fields text[]);

-- name: lock_login_email$
-- Wait for the other sign-in attempts naming this email to finish (the lock is held until
-- this transaction ends), so each attempt counts the failures of those before it: without
-- it, concurrent guesses all read the same count and all pass the throttle. Keyed on the
-- email, not the account, so an unknown email costs the same round trip as a known one.
-- 7302202 is Clarity's arbitrary, fixed advisory-lock class for sign-ins (the two-key form,
-- apart from the sealer's lock). Params: email.
SELECT pg_advisory_xact_lock(7302202, hashtext(lower(%(email)s::text)));

-- name: get_login_throttle^
-- What the sign-in throttles need to know about an attempt on user_id (null: no account)
-- from client_addr (may be null), from the auth.login events of the audit trail. Only
-- failures count (outcome 'failure'); throttled attempts ('denied') never do. The account's
-- failures count since its last success or throttle clear (auth.throttle_clear, success) and
-- within account_window_seconds; the pair's since the pair's last success or the clear and
-- within window_seconds; the address's within window_seconds. Every scan reads one account's
-- or one address's failures or successes through the partial indexes of migration 0017,
-- bounded by a window or by the limit.
-- Params: user_id, client_addr, window_seconds, account_window_seconds, familiar_seconds,
-- max_per_pair, max_per_address.
-- Returns: address_retry_after, pair_retry_after (seconds until the address's or the pair's
-- limit lifts; null when it is not reached), account_failures, account_failure_age (seconds
-- since the account's last counted failure), familiar (the account signed in from this
-- address within familiar_seconds).
WITH successes AS (
    SELECT max(occurred_at) AS last_success,
           max(occurred_at) FILTER (WHERE client_addr = %(client_addr)s::inet) AS last_pair_success
      FROM audit_events
     WHERE event_type = 'auth.login' AND outcome = 'success'
       AND actor_id = %(user_id)s::uuid
       AND occurred_at > now() - make_interval(secs => greatest(
               %(familiar_seconds)s::float8, %(account_window_seconds)s::float8, %(window_seconds)s::float8))
), cleared AS (
    SELECT max(occurred_at) AS last_clear
      FROM audit_events
     WHERE event_type = 'auth.throttle_clear' AND outcome = 'success'
       AND entity_id = %(user_id)s::uuid::text
), since AS (
    SELECT greatest(s.last_success, c.last_clear,
                    now() - make_interval(secs => %(account_window_seconds)s::float8)) AS account_since,
           greatest(s.last_pair_success, c.last_clear,
                    now() - make_interval(secs => %(window_seconds)s::float8)) AS pair_since,
           coalesce(s.last_pair_success > now() - make_interval(secs => %(familiar_seconds)s::float8),
                    false) AS familiar
      FROM successes s, cleared c
)
SELECT extract(epoch FROM (
           SELECT a.occurred_at FROM audit_events a
            WHERE a.event_type = 'auth.login' AND a.outcome = 'failure'
              AND a.client_addr = %(client_addr)s::inet
              AND a.occurred_at > now() - make_interval(secs => %(window_seconds)s::float8)
            ORDER BY a.occurred_at DESC
           OFFSET %(max_per_address)s::integer - 1 LIMIT 1)
           + make_interval(secs => %(window_seconds)s::float8) - now())::float8 AS address_retry_after,
       extract(epoch FROM (
           SELECT a.occurred_at FROM audit_events a
            WHERE a.event_type = 'auth.login' AND a.outcome = 'failure'
              AND a.actor_id = %(user_id)s::uuid AND a.client_addr = %(client_addr)s::inet
              AND a.occurred_at > since.pair_since
            ORDER BY a.occurred_at DESC
           OFFSET %(max_per_pair)s::integer - 1 LIMIT 1)
           + make_interval(secs => %(window_seconds)s::float8) - now())::float8 AS pair_retry_after,
       account.failures AS account_failures,
       extract(epoch FROM now() - account.last_failure)::float8 AS account_failure_age,
       since.familiar
  FROM since
 CROSS JOIN LATERAL (
           SELECT count(*) AS failures, max(a.occurred_at) AS last_failure
             FROM audit_events a
            WHERE a.event_type = 'auth.login' AND a.outcome = 'failure'
              AND a.actor_id = %(user_id)s::uuid AND a.occurred_at > since.account_since
       ) AS account;

-- name: list_audit_events
-- Audit events for auditors, newest first, after a keyset cursor over (occurred_at, id), with
-- optional filters (null = no filter). A patient's events are those about it and the list
-- pages that showed it. Params: patient_id, actor_id, action, occurred_from, occurred_to,
-- after_occurred_at, after_id, limit.
-- plan: custom
SELECT id, occurred_at, actor_id, actor_role, action, event_type, entity_type, entity_id,
       patient_id, patient_ids, outcome, host(client_addr) AS client_addr, request_id, fields
  FROM audit_events
 WHERE (%(patient_id)s::uuid IS NULL OR patient_id = %(patient_id)s::uuid
        OR patient_ids @> ARRAY[%(patient_id)s::uuid])
   AND (%(actor_id)s::uuid IS NULL OR actor_id = %(actor_id)s::uuid)
   AND (%(action)s::text IS NULL OR action = %(action)s::text)
   AND (%(occurred_from)s::timestamptz IS NULL OR occurred_at >= %(occurred_from)s::timestamptz)
   AND (%(occurred_to)s::timestamptz IS NULL OR occurred_at < %(occurred_to)s::timestamptz)
   AND (%(after_occurred_at)s::timestamptz IS NULL
        OR (occurred_at, id) < (%(after_occurred_at)s::timestamptz, %(after_id)s::bigint))
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s;

-- name: lock_audit_sealing$
-- Become the only sealer until this transaction ends: true, or false at once when another
-- sealer holds the lock (never waits). Requests never take this lock. 7302201 is Clarity's
-- arbitrary, fixed advisory-lock key for sealing.
SELECT pg_try_advisory_xact_lock(7302201);

-- name: get_audit_seal_horizon$
-- The sealing horizon: the oldest transaction id still running (or the next one to be
-- assigned). Every transaction below it has committed or aborted, so the events below it that
-- this and later snapshots see are final, and no later commit can add an event below it.
-- Call it before the transaction takes an xid of its own (before inserting seals).
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: get_last_audit_seal^
-- The chain head: the highest seal and its event's position (event_xid is null when the event
-- row is gone). Read it after taking the seal lock, in a statement of its own, so the previous
-- sealer's commit (which released the lock) is visible.
-- Returns: seq, hash, event_id, horizon, sealed_at, event_xid.
SELECT s.seq, s.hash, s.event_id, s.horizon::text AS horizon, s.sealed_at, e.xid::text AS event_xid
  FROM audit_seals s
  LEFT JOIN audit_events e ON e.id = s.event_id
 ORDER BY s.seq DESC
 LIMIT 1;

-- name: list_audit_events_to_seal
-- The next committed, unsealed events in chain order: (xid, id) after the last sealed event
-- and xid below the horizon (so the set is final). Params: after_xid, after_id, horizon, limit.
-- Columns are qualified: a bare "xid" in ORDER BY would sort by the text output column.
SELECT e.id, e.xid::text AS xid, e.occurred_at, e.actor_id::text AS actor_id, e.actor_role,
       e.action, e.event_type, e.entity_type, e.entity_id, e.patient_id::text AS patient_id,
       e.patient_ids::text[] AS patient_ids, e.outcome, e.client_addr::text AS client_addr, e.request_id, e.fields
  FROM audit_events e
 WHERE (e.xid, e.id) > (%(after_xid)s::xid8, %(after_id)s::bigint)
   AND e.xid < %(horizon)s::xid8
 ORDER BY e.xid, e.id
 LIMIT %(limit)s;

-- name: insert_audit_seals!
-- Append one batch of seals in one statement. Params: seqs, event_ids, prev_hashes, hashes
-- (parallel arrays), horizon.
INSERT INTO audit_seals (seq, event_id, prev_hash, hash, horizon)
SELECT s.seq, s.event_id, s.prev_hash, s.hash, %(horizon)s::xid8
  FROM unnest(%(seqs)s::bigint[], %(event_ids)s::bigint[], %(prev_hashes)s::bytea[],
              %(hashes)s::bytea[]) AS s(seq, event_id, prev_hash, hash);

-- name: list_audit_seals_with_events
-- Verification: seals after a seq, in order, each with its event's columns as sealed (all
-- null when the event row is gone). Params: after_seq, limit.
SELECT s.seq, s.event_id, s.prev_hash, s.hash, s.horizon::text AS horizon,
       e.id, e.xid::text AS xid, e.occurred_at, e.actor_id::text AS actor_id, e.actor_role,
       e.action, e.event_type, e.entity_type, e.entity_id, e.patient_id::text AS patient_id,
       e.patient_ids::text[] AS patient_ids, e.outcome, e.client_addr::text AS client_addr, e.request_id, e.fields
  FROM audit_seals s
  LEFT JOIN audit_events e ON e.id = s.event_id
 WHERE s.seq > %(after_seq)s
 ORDER BY s.seq
 LIMIT %(limit)s;

-- name: get_misplaced_audit_event$
-- Verification: the first unsealed event that the sealer can never reach in order: its xid is
-- below the horizon the chain already passed (inserted or backdated behind the sealer), or no
-- transaction has had it yet (forged). Null when there is none. Params: horizon.
SELECT e.id
  FROM audit_events e
 WHERE (e.xid < %(horizon)s::xid8 OR e.xid >= pg_snapshot_xmax(pg_current_snapshot()))
   AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)
 ORDER BY e.xid, e.id
 LIMIT 1;

-- name: get_overdue_audit_event$
-- Verification: the oldest unsealed event after the chain head that occurred more than
-- max_unsealed_seconds ago (sealing stopped, or a transaction stayed open that long).
-- Null when there is none. Params: after_xid, after_id, max_unsealed_seconds.
SELECT e.id
  FROM audit_events e
 WHERE (e.xid, e.id) > (%(after_xid)s::xid8, %(after_id)s::bigint)
   AND e.occurred_at < now() - make_interval(secs => %(max_unsealed_seconds)s)
   AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)
 ORDER BY e.occurred_at, e.id
 LIMIT 1;

-- name: count_unsealed_audit_events$
-- Events after the chain head, waiting to be sealed. Params: after_xid, after_id.
SELECT count(*)
  FROM audit_events e
 WHERE (e.xid, e.id) > (%(after_xid)s::xid8, %(after_id)s::bigint);

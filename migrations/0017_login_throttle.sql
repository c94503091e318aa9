-- Sign-in throttling counts failures by account, by address and by the pair, and finds an
-- account's last success and throttle clear: partial indexes over just those rows, so a flood
-- of throttled (denied) attempts or of other events never lengthens a count, and each count
-- is an index-only scan (the other column a count filters on is INCLUDEd). They replace the
-- two auth.login indexes of 0004, which also held every denied attempt.
--
-- audit_events is the largest, busiest table and every PHI request inserts into it: the
-- indexes are built CONCURRENTLY (no lock that blocks writers), so outside a transaction.
-- No lock_timeout: a concurrent build waits for older transactions without blocking anyone,
-- and a timeout would only leave an invalid index behind. Safe to re-run: each index is first
-- dropped if a failed run left it (invalid) behind.
-- transactional: false

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_failure_actor_id_occurred_at_idx;
CREATE INDEX CONCURRENTLY audit_events_login_failure_actor_id_occurred_at_idx
    ON audit_events (actor_id, occurred_at) INCLUDE (client_addr)
    WHERE event_type = 'auth.login' AND outcome = 'failure';

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_failure_client_addr_occurred_at_idx;
CREATE INDEX CONCURRENTLY audit_events_login_failure_client_addr_occurred_at_idx
    ON audit_events (client_addr, occurred_at) INCLUDE (actor_id)
    WHERE event_type = 'auth.login' AND outcome = 'failure';

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_success_actor_id_occurred_at_idx;
CREATE INDEX CONCURRENTLY audit_events_login_success_actor_id_occurred_at_idx
    ON audit_events (actor_id, occurred_at) INCLUDE (client_addr)
    WHERE event_type = 'auth.login' AND outcome = 'success';

DROP INDEX CONCURRENTLY IF EXISTS audit_events_throttle_clear_entity_id_occurred_at_idx;
CREATE INDEX CONCURRENTLY audit_events_throttle_clear_entity_id_occurred_at_idx
    ON audit_events (entity_id, occurred_at)
    WHERE event_type = 'auth.throttle_clear' AND outcome = 'success';

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_actor_id_occurred_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_client_addr_occurred_at_idx;

-- Back to 0004's auth.login indexes. yoyo pairs these statements with the migration's in
-- reverse order (the last here undoes the first there), so each index's drop appears twice:
-- once for its build and once for the drop of a failed run's leftover before it (a no-op).
-- transactional: false

CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_events_login_client_addr_occurred_at_idx
    ON audit_events (client_addr, occurred_at) WHERE event_type = 'auth.login';
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_events_login_actor_id_occurred_at_idx
    ON audit_events (actor_id, occurred_at) WHERE event_type = 'auth.login';

DROP INDEX CONCURRENTLY IF EXISTS audit_events_throttle_clear_entity_id_occurred_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_throttle_clear_entity_id_occurred_at_idx;

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_success_actor_id_occurred_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_success_actor_id_occurred_at_idx;

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_failure_client_addr_occurred_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_failure_client_addr_occurred_at_idx;

DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_failure_actor_id_occurred_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_login_failure_actor_id_occurred_at_idx;

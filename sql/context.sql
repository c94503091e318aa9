-- name: set_actor_context$
-- Set the transaction's actor context (transaction-local, like SET LOCAL).
-- Params: actor_id, actor_role, request_id (empty string when unknown).
SELECT set_config('clarity.actor_id', %(actor_id)s, true),
       set_config('clarity.actor_role', %(actor_role)s, true),
       set_config('clarity.request_id', %(request_id)s, true);

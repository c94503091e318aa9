-- name: list_applied_migrations
-- The ids of the migrations yoyo has applied.
SELECT migration_id FROM _yoyo_migration;

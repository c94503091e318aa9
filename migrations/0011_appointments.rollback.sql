-- Drops the table with its policies, constraints, indexes and trigger.
-- btree_gist is deliberately left installed: other tables' constraints or indexes (later
-- migrations, or objects an operator added) may use it, and a plain DROP EXTENSION would then
-- fail this rollback, while CASCADE would silently drop their constraints. It is harmless
-- when unused; an operator who knows nothing else needs it may run DROP EXTENSION btree_gist.
SET LOCAL lock_timeout = '5s';
DROP TABLE appointments;

-- name: get_database_exists$
-- Whether a database of that name exists (development and test provisioning). Params: name.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s);

-- name: get_role_exists$
-- Whether a role of that name exists (development and test provisioning). Params: name.
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(name)s);

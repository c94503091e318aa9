-- name: get_database_exists$
-- Whether a database of that name exists (development and test provisioning). Params: name.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s);

-- name: get_role_exists$
-- Whether a role of that name exists (development and test provisioning). Params: name.
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(name)s);

-- name: get_role_password$
-- A role's password as PostgreSQL stores it (a SCRAM secret, never the password), for a
-- PgBouncer auth file (clarity.localpgbouncer); a superuser's connection only. Params: name.
SELECT rolpassword FROM pg_authid WHERE rolname = %(name)s;

-- Staff users, the application role and the updated_at trigger shared by every table.
SET LOCAL lock_timeout = '5s';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clarity_app') THEN
        CREATE ROLE clarity_app NOLOGIN;
    END IF;
END
$$;

CREATE FUNCTION clarity_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email               text NOT NULL CONSTRAINT users_email_check CHECK (length(email) BETWEEN 3 AND 254),
    display_name        text NOT NULL CONSTRAINT users_display_name_check CHECK (length(display_name) BETWEEN 1 AND 200),
    role                text NOT NULL CONSTRAINT users_role_check CHECK (role IN ('admin', 'provider', 'auditor')),
    password_hash       text NOT NULL,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    disabled_at         timestamptz,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_created_at_id_idx ON users (created_at, id);
CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION clarity_touch_updated_at();

GRANT SELECT, INSERT, UPDATE ON users TO clarity_app;
-- /health/ready compares the applied migrations with the files on disk.
GRANT SELECT ON _yoyo_migration TO clarity_app;

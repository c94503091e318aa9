-- name: get_user^
-- One user by id. Params: id.
SELECT id, email, display_name, role, disabled_at, version, created_at, updated_at
  FROM users
 WHERE id = %(id)s;

-- name: get_user_credentials^
-- The login view of a user, by email (case-insensitive). Params: email.
SELECT id, role, password_hash, disabled_at
  FROM users
 WHERE lower(email) = lower(%(email)s);

-- name: get_user_password_hash$
-- A user's password hash, by id. Params: id.
SELECT password_hash FROM users WHERE id = %(id)s;

-- name: list_users
-- Users in creation order after a keyset cursor. Params: after_created_at, after_id, limit.
-- plan: custom
SELECT id, email, display_name, role, disabled_at, version, created_at, updated_at
  FROM users
 WHERE (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at, id
 LIMIT %(limit)s;

-- name: insert_user^
-- Create a user. Params: id, email, display_name, role, password_hash.
INSERT INTO users (id, email, display_name, role, password_hash)
VALUES (%(id)s, %(email)s, %(display_name)s, %(role)s, %(password_hash)s)
RETURNING id, email, display_name, role, disabled_at, version, created_at, updated_at;

-- name: update_user^
-- Change a user when its version matches; null params keep the current value.
-- Params: id, version, display_name, role, password_hash, disabled (null, true or false).
UPDATE users
   SET display_name = coalesce(%(display_name)s, display_name),
       role = coalesce(%(role)s, role),
       password_hash = coalesce(%(password_hash)s, password_hash),
       password_changed_at = CASE WHEN %(password_hash)s::text IS NULL THEN password_changed_at ELSE now() END,
       disabled_at = CASE WHEN %(disabled)s::boolean IS NULL THEN disabled_at
                          WHEN %(disabled)s::boolean THEN coalesce(disabled_at, now())
                          ELSE NULL END,
       version = version + 1
 WHERE id = %(id)s AND version = %(version)s
RETURNING id, email, display_name, role, disabled_at, version, created_at, updated_at;

-- name: update_user_password_hash!
-- Store a rehashed password (same password, stronger parameters). Params: id, password_hash.
UPDATE users SET password_hash = %(password_hash)s WHERE id = %(id)s;

-- name: update_user_password!
-- Set a new password hash (bumping the version). Params: id, password_hash.
UPDATE users
   SET password_hash = %(password_hash)s, password_changed_at = now(), version = version + 1
 WHERE id = %(id)s;

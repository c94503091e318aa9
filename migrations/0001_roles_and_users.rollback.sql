SET LOCAL lock_timeout = '5s';
REVOKE SELECT ON _yoyo_migration FROM clarity_app;
DROP TABLE users;
DROP FUNCTION clarity_touch_updated_at();
-- The role is cluster-wide: keep it while another database still grants it anything.
DO $$
BEGIN
    DROP ROLE IF EXISTS clarity_app;
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE NOTICE 'clarity_app kept: other databases still use it';
END
$$;

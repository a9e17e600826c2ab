-- The crate's functions run with a fixed search_path: the schema they live in (where the
-- same migration created the tables they use), then pg_temp. Their unqualified table names
-- then resolve to the crate's tables whatever the caller's search_path, and no other schema's
-- `sessions` table (an application's own, a temporary one) can stand in for them.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'tower_session_auth_touch(uuid, timestamptz, timestamptz, timestamptz, bigint, text)',
        'tower_session_auth_expire(uuid, timestamptz)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f,
            (SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.oid = f));
    END LOOP;
END $$;

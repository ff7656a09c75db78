-- TimescaleDB-only objects (docs/storage.md "TimescaleDB"). On plain PostgreSQL, and in a
-- database whose trygg.events is not a hypertable, this migration does nothing.
--
-- trygg.device_hourly becomes a continuous aggregate over the raw heartbeats when
-- trygg.heartbeats is a hypertable: TimescaleDB keeps it in step (late heartbeats are
-- re-materialised at the next refresh), so the maintenance run refreshes it
-- (storage.timescale.refresh_continuous_aggregate) instead of computing it, or where it
-- may not (trygg_app) relies on the refresh policy below, and drops
-- its old chunks like any hypertable's. Same name and columns as the plain table, so
-- readers do not change. A plain trygg.device_hourly that already holds rows, or that
-- other objects depend on, is kept as it is (the maintenance then rolls up as on plain
-- PostgreSQL); an empty one is replaced, its grants carried over, and its row of
-- trygg.partition_plan (migration 0011) removed.
DO $$
DECLARE
    grant_row record;
    old_kind "char";
BEGIN
    IF to_regclass('_timescaledb_catalog.hypertable') IS NULL THEN
        RETURN;  -- plain PostgreSQL (a separate IF: the catalog is named only once it exists)
    END IF;
    IF NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable
                   WHERE schema_name = 'trygg' AND table_name = 'events') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable
                   WHERE schema_name = 'trygg' AND table_name = 'heartbeats') THEN
        RAISE NOTICE 'trygg.heartbeats is not a hypertable: trygg.device_hourly stays as it is';
        RETURN;
    END IF;
    SELECT c.relkind INTO old_kind FROM pg_class c
    WHERE c.oid = to_regclass('trygg.device_hourly');
    IF old_kind = 'v' THEN
        RETURN;  -- already the continuous aggregate
    END IF;
    CREATE TEMP TABLE device_hourly_grants ON COMMIT DROP AS
        SELECT a.grantee, a.privilege_type
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = to_regclass('trygg.device_hourly') AND a.grantee <> c.relowner;
    IF old_kind IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM trygg.device_hourly) THEN
            RAISE NOTICE 'trygg.device_hourly holds rows: kept as a table';
            RETURN;
        END IF;
        BEGIN
            DROP TABLE trygg.device_hourly;  -- never CASCADE: a dependent object keeps it
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'other objects depend on trygg.device_hourly: kept as a table';
            RETURN;
        END;
    END IF;
    CREATE MATERIALIZED VIEW trygg.device_hourly
    WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
    SELECT device_id,
           time_bucket(interval '1 hour', ts) AS hour,
           count(*)::int AS heartbeats,
           min(battery_pct) AS battery_min,
           max(battery_pct) AS battery_max,
           last(battery_pct, ts) FILTER (WHERE battery_pct IS NOT NULL) AS battery_last
    FROM trygg.heartbeats
    GROUP BY device_id, time_bucket(interval '1 hour', ts)
    WITH NO DATA;
    -- its chunks are TimescaleDB's: no partitions to create ahead (trygg.ensure_partitions
    -- would try to attach some to the view); retention drops them (drop_old_chunks)
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'trygg'
               AND table_name = 'partition_plan' AND column_name = 'parent') THEN
        DELETE FROM trygg.partition_plan WHERE parent IN ('trygg.device_hourly', 'device_hourly');
    END IF;
    -- Refreshed by TimescaleDB's job scheduler as well, with its owner's rights: Trygg
    -- running as trygg_app (which owns nothing) may not refresh it itself. The job's window
    -- starts 2 days back, the floor of TRYGG_RETAIN_HEARTBEATS_DAYS, so it never reaches
    -- into dropped raw chunks (a refresh there would empty those hours); a maintenance run
    -- whose role owns the view refreshes from the retention cutoff itself.
    PERFORM add_continuous_aggregate_policy('trygg.device_hourly', start_offset => interval '2 days',
        end_offset => interval '5 minutes', schedule_interval => interval '5 minutes');
    FOR grant_row IN SELECT * FROM device_hourly_grants LOOP
        EXECUTE format('GRANT %s ON trygg.device_hourly TO %s', grant_row.privilege_type,
                       CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(grant_row.grantee)) END);
    END LOOP;
END $$;

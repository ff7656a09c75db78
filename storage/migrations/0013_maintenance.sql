-- Maintenance (storage/maintenance.py; docs/storage.md "Retention", docs/privacy.md "The
-- audit log"): what each run did, the device rollups' watermark, the floors under the
-- retention settings, the one path that drops an expired partition for a role that does
-- not own it, and the one path that removes audit rows.

-- One row per step of each run: what it created, dropped or closed, or why it failed.
-- Kept 30 days (the run removes older rows itself; a small table, not a hot one).
CREATE TABLE trygg.maintenance_log (
    id           bigserial PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    step         text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    ok           boolean NOT NULL,
    error        text
);
CREATE INDEX maintenance_log_started_idx ON trygg.maintenance_log (started_at);

-- How far the device rollups are closed: trygg.device_hourly holds every hour before
-- `hourly_until`, trygg.device_daily every day before `daily_until` (Europe/Oslo days).
-- One row. NULL: nothing closed yet (the first run starts at the oldest heartbeat).
CREATE TABLE trygg.device_rollup_state (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    hourly_until  timestamptz,
    daily_until   date
);
INSERT INTO trygg.device_rollup_state DEFAULT VALUES;

-- The shortest time each class is kept, whatever the settings say (trygg/settings.py has
-- the same minimums, so a bad value stops Trygg at start; this is the database's own
-- check). `trygg.event_keys` is fixed: the 30-day acceptance window plus 24 h of future
-- device time, counted from a leaf's upper bound.
CREATE TABLE trygg.retention_floors (
    parent    text PRIMARY KEY,      -- schema-qualified, as in trygg.partition_plan
    min_keep  interval NOT NULL
);
INSERT INTO trygg.retention_floors VALUES
    ('trygg.events', interval '31 days'),
    ('trygg.heartbeats', interval '2 days'),
    ('trygg.device_hourly', interval '2 days'),
    ('trygg.device_daily', interval '31 days'),
    ('trygg.dead_letters', interval '7 days'),
    ('trygg.event_keys', interval '31 days');

-- The upper bound of a range partition as a point in time (a date bound is UTC midnight);
-- NULL for MAXVALUE or a table that is not a range partition.
CREATE FUNCTION trygg.partition_upper(leaf regclass) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
    SELECT (substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$ TO \('([^']*)'\)$r$))::timestamptz
    FROM pg_class c WHERE c.oid = leaf AND c.relispartition
$$;

-- Drop one expired partition with the owner's rights, for a maintenance run whose role does
-- not own the tables (Trygg as trygg_app). Only a direct partition of a parent in the
-- partition plan, and only when its upper bound is older than now − greatest(keep, floor):
-- the function checks that itself, whatever the caller asks. A plain DETACH takes an ACCESS
-- EXCLUSIVE lock on the parent, so it waits at most 100 ms for it (writers queue behind it
-- that long at most) and fails otherwise: the next run tries again. A partition left
-- half-detached by an interrupted DETACH CONCURRENTLY is finished (FINALIZE).
-- Returns false when the partition is not there (any more).
CREATE FUNCTION trygg.drop_expired_partition(parent text, leaf text, keep interval) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms' AS $$
DECLARE
    parent_oid regclass;
    leaf_oid regclass := to_regclass(leaf);
    floor_keep interval;
    upper_bound timestamptz;
    pending boolean;
BEGIN
    SELECT f.min_keep INTO floor_keep FROM trygg.retention_floors f
    JOIN trygg.partition_plan p ON p.parent = f.parent
    WHERE f.parent = drop_expired_partition.parent;
    IF floor_keep IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table whose partitions maintenance drops', parent
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    parent_oid := to_regclass(parent);
    IF leaf_oid IS NULL OR parent_oid IS NULL THEN
        RETURN false;
    END IF;
    SELECT i.inhdetachpending INTO pending FROM pg_inherits i
    WHERE i.inhparent = parent_oid AND i.inhrelid = leaf_oid;
    IF pending IS NULL THEN
        RAISE EXCEPTION '% is not a partition of %', leaf, parent USING ERRCODE = 'insufficient_privilege';
    END IF;
    upper_bound := trygg.partition_upper(leaf_oid);
    IF upper_bound IS NULL OR upper_bound >= now() - greatest(keep, floor_keep) THEN
        RAISE EXCEPTION 'partition % ends at %, within the % kept', leaf,
            coalesce(upper_bound::text, 'MAXVALUE'), greatest(keep, floor_keep)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pending THEN
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s FINALIZE', parent_oid, leaf_oid);
    ELSE
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent_oid, leaf_oid);
    END IF;
    EXECUTE format('DROP TABLE %s', leaf_oid);
    RETURN true;
END $$;
REVOKE ALL ON FUNCTION trygg.drop_expired_partition(text, text, interval) FROM PUBLIC;

-- The same for a TimescaleDB hypertable (migration 0014): drop_chunks with the owner's rights,
-- older than now − greatest(keep, floor). Returns the names of the chunks dropped.
CREATE FUNCTION trygg.drop_expired_chunks(parent text, keep interval) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms' AS $$
DECLARE
    floor_keep interval;
BEGIN
    SELECT f.min_keep INTO floor_keep FROM trygg.retention_floors f WHERE f.parent = drop_expired_chunks.parent;
    IF floor_keep IS NULL THEN
        RAISE EXCEPTION '% is not a table whose chunks maintenance drops', parent
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY EXECUTE format('SELECT c::text FROM %I.drop_chunks(%L::regclass, older_than => %L::timestamptz) c',
        (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'timescaledb'),
        parent, now() - greatest(keep, floor_keep));
END $$;
REVOKE ALL ON FUNCTION trygg.drop_expired_chunks(text, interval) FROM PUBLIC;

-- Audit rows (docs/privacy.md "The audit log"): the append-only trigger now lets a DELETE
-- through on one path only, `trygg.purge_audit_before` below: it sets the transaction-local
-- `trygg.audit_purge` and runs as the table's owner. Anyone else — trygg_app, or a caller
-- setting the flag itself — is refused as before; UPDATE and TRUNCATE always are.
CREATE OR REPLACE FUNCTION trygg.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('trygg.audit_purge', true) = 'on'
       AND current_user = (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = TG_RELID) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'trygg.audit_log is append-only';
END $$;

-- Remove the audit rows older than `cutoff`, never younger than 2 years (the floor is
-- the database's: no setting lowers it), and record who did it in the log itself.
CREATE FUNCTION trygg.purge_audit_before(cutoff timestamptz, actor text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    oldest_allowed timestamptz := now() - interval '2 years';
    removed bigint;
BEGIN
    IF actor IS NULL OR btrim(actor) = '' OR length(actor) > 200 THEN
        RAISE EXCEPTION 'name the person who purges the audit log (1 to 200 characters)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cutoff IS NULL OR cutoff > oldest_allowed THEN
        RAISE EXCEPTION 'audit rows are kept at least 2 years: the cutoff must be on or before %',
            to_char(oldest_allowed AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config('trygg.audit_purge', 'on', true);
    DELETE FROM trygg.audit_log WHERE at < cutoff;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('trygg.audit_purge', 'off', true);
    INSERT INTO trygg.audit_log (actor, role, resident_id, action)
    VALUES (btrim(actor), 'maintainer', NULL,
            format('audit_purged before %s: %s rows (database user %s)',
                   to_char(cutoff AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), removed, session_user));
    RETURN removed;
END $$;
REVOKE ALL ON FUNCTION trygg.purge_audit_before(timestamptz, text) FROM PUBLIC;

-- trygg_maintainer: the role of the person who removes old audit rows (a login that is a
-- member of it, docs/privacy.md). Created only when missing; a migrating user without
-- CREATEROLE gets a warning, and the grants are skipped.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_maintainer') THEN
        CREATE ROLE trygg_maintainer NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it meanwhile
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot create role trygg_maintainer (no CREATEROLE); see docs/privacy.md';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        REVOKE ALL ON FUNCTION trygg.purge_audit_before(timestamptz, text) FROM trygg_app;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trygg.retention_floors FROM trygg_app;
        GRANT EXECUTE ON FUNCTION trygg.drop_expired_partition(text, text, interval) TO trygg_app;
        GRANT EXECUTE ON FUNCTION trygg.drop_expired_chunks(text, interval) TO trygg_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_maintainer') THEN
        GRANT USAGE ON SCHEMA trygg TO trygg_maintainer;
        GRANT EXECUTE ON FUNCTION trygg.purge_audit_before(timestamptz, text) TO trygg_maintainer;
    END IF;
END $$;

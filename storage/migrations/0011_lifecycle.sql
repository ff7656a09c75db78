-- Bounded storage (docs/storage.md "Retention"): every table that grows
-- with time is partitioned by time, so that what ages out is removed by dropping whole
-- partitions, never by DELETE on a hot table.
--
-- - trygg.events loses its DEFAULT partition (rows in it move to monthly partitions);
--   a row whose partition is missing makes the writer create it and try again.
-- - Heartbeats get their own short-lived table, trygg.heartbeats (daily partitions);
--   device_status keeps the latest battery report; device_hourly and device_daily hold
--   per-device rollups (filled by maintenance).
-- - trygg.event_keys is partitioned weekly by when the key was stored; the old table
--   becomes the leaf event_keys_legacy.
-- - trygg.dead_letters is partitioned weekly; the old table becomes dead_letters_legacy.
-- - trygg.partition_plan says how each table is partitioned, and trygg.ensure_partitions
--   is the one place that creates partitions.
--
-- Applies on a database holding 0001-0010 and their rows, and loses none of them. The
-- old key and dead-letter tables are attached as they are (one scan each, to check their
-- bound), not copied.

-- The plan: one row per partitioned table. `ahead` is how far ahead of now maintenance
-- keeps partitions ready. `leaf_key`: the columns of a unique key every leaf carries (a
-- partitioned table's own unique keys must include its partition column, so a key on
-- other columns can only be enforced leaf by leaf).
CREATE TABLE trygg.partition_plan (
    parent       text PRIMARY KEY,            -- schema-qualified, e.g. 'trygg.events'
    column_name  text NOT NULL,               -- the partition key column
    step         text NOT NULL CHECK (step IN ('day', 'week', 'month', 'year')),
    ahead        interval NOT NULL,
    leaf_key     text[]
);

INSERT INTO trygg.partition_plan (parent, column_name, step, ahead, leaf_key) VALUES
    ('trygg.events',        'ts',          'month', interval '3 months', NULL),
    ('trygg.heartbeats',    'ts',          'day',   interval '3 days',   NULL),
    ('trygg.event_keys',    'stored_at',   'week',  interval '2 weeks',  '{device_id,event_id}'),
    ('trygg.dead_letters',  'received_at', 'week',  interval '2 weeks',  NULL),
    ('trygg.device_hourly', 'hour',        'month', interval '1 month',  NULL),
    ('trygg.device_daily',  'day',         'year',  interval '1 year',   NULL);

-- Create the missing leaves of `parent` so that every instant of [from_ts, until_ts]
-- (both ends included) has one. Leaves are whole steps of the plan in UTC (a week starts
-- on Monday 00:00), named <table>_YYYYMMDD (day, week), <table>_YYYY_MM (month),
-- <table>_YYYY (year). A step that an existing leaf already overlaps (an old leaf such
-- as event_keys_legacy, whose bound ends on a step boundary) is left alone.
--
-- A leaf is made as CREATE TABLE (LIKE parent) with a CHECK of its bounds, then
-- ATTACHed: attaching takes only SHARE UPDATE EXCLUSIVE on the parent, so inserts into
-- the parent go on meanwhile. Concurrent calls for one parent wait for each other (an
-- advisory lock held to the end of the caller's transaction).
--
-- A parent that is not declaratively partitioned (a TimescaleDB hypertable, which makes
-- its own chunks) is left alone. Returns how many leaves it created; refuses a range of
-- more than 1000 steps.
--
-- Runs with its owner's rights (creating a partition needs the parent's owner), so the
-- application role can call it; a fixed search_path, time zone and date style keep that
-- safe and the bounds it reads and writes unambiguous.
CREATE FUNCTION trygg.ensure_partitions(parent text, from_ts timestamptz, until_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    wanted   text := CASE WHEN position('.' IN parent) > 0 THEN parent ELSE 'trygg.' || parent END;
    plan     record;
    rel      oid;
    nsp      text;
    base     text;
    is_date  boolean;
    lo       timestamptz;
    hi       timestamptz;
    lo_lit   text;
    hi_lit   text;
    leaf     text;
    key_sql  text;
    created  integer := 0;
BEGIN
    SELECT p.column_name, p.step, p.leaf_key INTO plan
    FROM trygg.partition_plan p WHERE p.parent = wanted;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trygg.ensure_partitions: no partition plan for %', wanted;
    END IF;
    rel := to_regclass(wanted);
    IF rel IS NULL OR NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = rel) THEN
        RETURN 0;  -- a TimescaleDB hypertable manages its own chunks
    END IF;
    IF from_ts IS NULL OR until_ts IS NULL OR until_ts < from_ts THEN
        RETURN 0;
    END IF;
    IF date_trunc(plan.step, from_ts) + 1000 * ('1 ' || plan.step)::interval <= until_ts THEN
        -- a time far off (a broken clock): refused, rather than thousands of leaves
        RAISE EXCEPTION 'trygg.ensure_partitions: % to % is more than 1000 partitions of %',
            from_ts, until_ts, wanted;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('trygg.ensure_partitions'), hashtext(wanted));

    SELECT n.nspname, c.relname INTO nsp, base
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    SELECT a.atttypid = 'date'::regtype INTO is_date
    FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = plan.column_name;
    key_sql := CASE WHEN plan.leaf_key IS NULL THEN '' ELSE
        format(', UNIQUE (%s)', (SELECT string_agg(quote_ident(k), ', ') FROM unnest(plan.leaf_key) k))
    END;

    lo := date_trunc(plan.step, from_ts);
    WHILE lo <= until_ts LOOP
        hi := lo + ('1 ' || plan.step)::interval;
        leaf := base || '_' || to_char(lo, CASE plan.step WHEN 'month' THEN 'YYYY_MM'
                                                           WHEN 'year' THEN 'YYYY'
                                                           ELSE 'YYYYMMDD' END);
        IF NOT EXISTS (
            SELECT 1 FROM (
                SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS b
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = rel
            ) leaves
            WHERE (b[1] = 'MINVALUE' OR btrim(b[1], '''')::timestamptz < hi)
              AND (b[2] = 'MAXVALUE' OR btrim(b[2], '''')::timestamptz > lo)
        ) THEN
            IF to_regclass(format('%I.%I', nsp, leaf)) IS NOT NULL THEN
                -- a table of that name that is not a leaf (being retired): not touched
                RAISE WARNING 'trygg.ensure_partitions: %.% exists but is not a partition of %',
                    nsp, leaf, wanted;
            ELSE
                IF is_date THEN
                    lo_lit := lo::date::text;
                    hi_lit := hi::date::text;
                ELSE
                    lo_lit := lo::text;
                    hi_lit := hi::text;
                END IF;
                EXECUTE format(
                    'CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS,'
                    ' CONSTRAINT %I CHECK (%I >= %L AND %I < %L)%s)',
                    nsp, leaf, rel::regclass, leaf || '_bounds',
                    plan.column_name, lo_lit, plan.column_name, hi_lit, key_sql);
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                               rel::regclass, nsp, leaf, lo_lit, hi_lit);
                created := created + 1;
            END IF;
        END IF;
        lo := hi;
    END LOOP;
    RETURN created;
END $$;

-- The old function stays for its callers: monthly partitions of trygg.events.
CREATE OR REPLACE FUNCTION trygg.ensure_event_partitions(from_ts timestamptz, until_ts timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM trygg.ensure_partitions('trygg.events', from_ts, until_ts);
END $$;

-- trygg.events: no DEFAULT partition any more (a row outside every partition would land
-- there and make every later ATTACH scan it). Its rows move to monthly partitions.
DO $$
DECLARE
    lo timestamptz;
    hi timestamptz;
BEGIN
    IF to_regclass('trygg.events_default') IS NULL THEN
        RETURN;  -- a hypertable has none
    END IF;
    ALTER TABLE trygg.events DETACH PARTITION trygg.events_default;
    SELECT min(ts), max(ts) INTO lo, hi FROM trygg.events_default;
    IF lo IS NOT NULL THEN
        PERFORM trygg.ensure_partitions('trygg.events', lo, hi);
        INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data, seq)
        SELECT device_id, event_id, resident_id, type, ts, received_at, data, seq
        FROM trygg.events_default;
    END IF;
    DROP TABLE trygg.events_default;
END $$;

SELECT trygg.ensure_partitions('trygg.events', now() - interval '2 months', now() + interval '3 months');

-- Raw heartbeats, kept for days (docs/storage.md): a re-send has the same ts and is
-- stored once. A TimescaleDB hypertable with daily chunks where trygg.events is one.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'trygg.events'::regclass) THEN
        CREATE TABLE trygg.heartbeats (
            device_id    text COLLATE "C" NOT NULL,
            ts           timestamptz NOT NULL,    -- when the device sent it
            received_at  timestamptz NOT NULL,    -- when the gateway received it
            battery_pct  smallint,                -- data.battery_pct, if it had one
            PRIMARY KEY (device_id, ts)
        ) PARTITION BY RANGE (ts);
    ELSE
        CREATE TABLE trygg.heartbeats (
            device_id    text COLLATE "C" NOT NULL,
            ts           timestamptz NOT NULL,
            received_at  timestamptz NOT NULL,
            battery_pct  smallint,
            PRIMARY KEY (device_id, ts)
        );
        EXECUTE $x$SELECT create_hypertable('trygg.heartbeats', 'ts',
                                            chunk_time_interval => interval '1 day')$x$;
    END IF;
END $$;

SELECT trygg.ensure_partitions('trygg.heartbeats', now() - interval '1 day', now() + interval '3 days');

-- The latest battery report of each device (any event whose data has battery_pct).
ALTER TABLE trygg.device_status
    ADD COLUMN battery_pct smallint,
    ADD COLUMN battery_at  timestamptz;

-- Per-device rollups of heartbeats, filled by maintenance (storage/maintenance.py).
CREATE TABLE trygg.device_hourly (
    device_id     text COLLATE "C" NOT NULL,
    hour          timestamptz NOT NULL,
    heartbeats    integer NOT NULL,
    battery_min   smallint,
    battery_max   smallint,
    battery_last  smallint,
    PRIMARY KEY (device_id, hour)
) PARTITION BY RANGE (hour);

CREATE TABLE trygg.device_daily (
    device_id     text COLLATE "C" NOT NULL,
    day           date NOT NULL,
    heartbeats    integer NOT NULL,
    hours_heard   smallint NOT NULL,
    battery_min   smallint,
    battery_max   smallint,
    battery_last  smallint,
    PRIMARY KEY (device_id, day)
) PARTITION BY RANGE (day);

SELECT trygg.ensure_partitions('trygg.device_hourly', now(), now() + interval '1 month');
SELECT trygg.ensure_partitions('trygg.device_daily', now(), now() + interval '1 year');

-- De-duplication keys, weekly by when they were stored. Each leaf has its own unique
-- (device_id, event_id); the writer looks a key up in every leaf and relies on the
-- current leaf's unique index against a concurrent insert (storage/events.py). The old
-- table becomes the leaf event_keys_legacy, bounded by the Monday after this migration;
-- its rows count as stored now (a constant default: no row is rewritten), so it ages out
-- with the first weekly leaves.
DO $$
DECLARE
    cut timestamptz := (date_trunc('week', now() AT TIME ZONE 'UTC') + interval '7 days') AT TIME ZONE 'UTC';
BEGIN
    ALTER TABLE trygg.event_keys RENAME TO event_keys_legacy;
    ALTER TABLE trygg.event_keys_legacy RENAME CONSTRAINT event_keys_pkey TO event_keys_legacy_pkey;
    EXECUTE format('ALTER TABLE trygg.event_keys_legacy ADD COLUMN stored_at timestamptz NOT NULL DEFAULT %L',
                   now());
    EXECUTE format('ALTER TABLE trygg.event_keys_legacy ADD CONSTRAINT event_keys_legacy_bounds'
                   ' CHECK (stored_at < %L)', cut);
    CREATE TABLE trygg.event_keys (
        device_id    text COLLATE "C" NOT NULL,
        event_id     text COLLATE "C" NOT NULL,
        received_at  timestamptz NOT NULL,
        type         text,
        ts           timestamptz,
        stored_at    timestamptz NOT NULL DEFAULT now()
    ) PARTITION BY RANGE (stored_at);
    EXECUTE format('ALTER TABLE trygg.event_keys ATTACH PARTITION trygg.event_keys_legacy'
                   ' FOR VALUES FROM (MINVALUE) TO (%L)', cut);
END $$;

SELECT trygg.ensure_partitions('trygg.event_keys', now(), now() + interval '2 weeks');

-- Dead letters, weekly by received_at; the old table becomes dead_letters_legacy. Its
-- id sequence now belongs to the new table (dropping the old leaf keeps it).
DO $$
DECLARE
    cut timestamptz := (date_trunc('week', now() AT TIME ZONE 'UTC') + interval '7 days') AT TIME ZONE 'UTC';
BEGIN
    ALTER TABLE trygg.dead_letters RENAME TO dead_letters_legacy;
    ALTER TABLE trygg.dead_letters_legacy DROP CONSTRAINT dead_letters_pkey;
    ALTER INDEX trygg.dead_letters_received_idx RENAME TO dead_letters_legacy_received_idx;
    EXECUTE format('ALTER TABLE trygg.dead_letters_legacy ADD CONSTRAINT dead_letters_legacy_bounds'
                   ' CHECK (received_at < %L)', cut);
    CREATE TABLE trygg.dead_letters (
        id           bigint NOT NULL DEFAULT nextval('trygg.dead_letters_id_seq'),
        received_at  timestamptz NOT NULL,
        topic        text NOT NULL,
        payload      bytea NOT NULL,            -- raw, up to 16 KiB
        reason       text NOT NULL,             -- metric label, e.g. bad_json
        detail       text NOT NULL,             -- the human explanation
        payload_size integer NOT NULL,          -- size before truncation
        PRIMARY KEY (id, received_at)
    ) PARTITION BY RANGE (received_at);
    ALTER SEQUENCE trygg.dead_letters_id_seq OWNED BY trygg.dead_letters.id;
    CREATE INDEX dead_letters_received_idx ON trygg.dead_letters (received_at);
    EXECUTE format('ALTER TABLE trygg.dead_letters ATTACH PARTITION trygg.dead_letters_legacy'
                   ' FOR VALUES FROM (MINVALUE) TO (%L)', cut);
END $$;

SELECT trygg.ensure_partitions('trygg.dead_letters', now(), now() + interval '2 weeks');

-- Rights (as 0006): the application role reads and writes the new tables through their
-- parents and creates partitions only through trygg.ensure_partitions; it reads the plan
-- but does not change it. Leaves made later by the function (owned by this owner) get the
-- same rights from 0006's default privileges.
REVOKE EXECUTE ON FUNCTION trygg.ensure_partitions(text, timestamptz, timestamptz) FROM PUBLIC;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        RETURN;
    END IF;
    GRANT SELECT, INSERT, UPDATE, DELETE ON trygg.heartbeats, trygg.device_hourly, trygg.device_daily,
        trygg.event_keys, trygg.dead_letters TO trygg_app;
    GRANT SELECT ON trygg.partition_plan TO trygg_app;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trygg.partition_plan FROM trygg_app;
    GRANT EXECUTE ON FUNCTION trygg.ensure_partitions(text, timestamptz, timestamptz) TO trygg_app;
END $$;

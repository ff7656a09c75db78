-- Device events, their de-duplication keys, dead letters and device status
-- (docs/contract.md#5-delivery-guarantees, #6b-storage-contract).

-- De-duplication on (device_id, event_id). A time-partitioned table (hypertable or
-- declarative partitions) can only enforce unique keys that contain the partition
-- column, so the key lives in its own small table. The gateway refuses events more than
-- 30 days old, so keys older than that can be pruned without letting a duplicate in.
CREATE TABLE trygg.event_keys (
    device_id    text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, event_id)
);

-- A TimescaleDB hypertable on ts when the extension is installed in this database,
-- otherwise declarative monthly partitions of plain PostgreSQL; both behave the same.
-- This migration never creates the extension: storage/migrate.py decides the engine
-- before any migration runs and creates it when TimescaleDB is to be used (on a server
-- that has the package but does not preload it, CREATE EXTENSION ends the connection).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE TABLE trygg.events (
            device_id    text COLLATE "C" NOT NULL,
            event_id     text COLLATE "C" NOT NULL,
            resident_id  text COLLATE "C" NOT NULL,
            type         text NOT NULL,
            ts           timestamptz NOT NULL,
            received_at  timestamptz NOT NULL,
            data         jsonb NOT NULL DEFAULT '{}',
            seq          bigserial NOT NULL
        );
        PERFORM create_hypertable('trygg.events', 'ts', chunk_time_interval => interval '1 day');
    ELSE
        CREATE TABLE trygg.events (
            device_id    text COLLATE "C" NOT NULL,
            event_id     text COLLATE "C" NOT NULL,
            resident_id  text COLLATE "C" NOT NULL,
            type         text NOT NULL,     -- event type, docs/contract.md#3-events
            ts           timestamptz NOT NULL,  -- when it happened on the device
            received_at  timestamptz NOT NULL,  -- when the gateway received it
            data         jsonb NOT NULL DEFAULT '{}',
            seq          bigserial NOT NULL         -- order in which rows were stored
        ) PARTITION BY RANGE (ts);
        -- Anything outside the monthly partitions lands here rather than failing a batch.
        CREATE TABLE trygg.events_default PARTITION OF trygg.events DEFAULT;
    END IF;
END $$;

-- (device_id, event_id) is unique through trygg.event_keys, which every insert goes
-- through; the events table itself carries only the indexes its readers need.
CREATE INDEX events_resident_ts_idx ON trygg.events (resident_id, ts);
CREATE INDEX events_device_ts_idx ON trygg.events (device_id, ts);
CREATE INDEX events_ts_brin ON trygg.events USING brin (ts);

-- Monthly partitions covering [from, until); called at migration and by the gateway.
CREATE FUNCTION trygg.ensure_event_partitions(from_ts timestamptz, until_ts timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table p
                   JOIN pg_class c ON c.oid = p.partrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'trygg' AND c.relname = 'events') THEN
        RETURN;  -- a TimescaleDB hypertable manages its own chunks
    END IF;
    WHILE m < until_ts LOOP
        name := 'events_' || to_char(m, 'YYYY_MM');
        IF to_regclass('trygg.' || name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE trygg.%I PARTITION OF trygg.events FOR VALUES FROM (%L) TO (%L)',
                name, m::timestamp AT TIME ZONE 'UTC',
                (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        END IF;
        m := m + interval '1 month';
    END LOOP;
END $$;

SELECT trygg.ensure_event_partitions(now() - interval '2 months', now() + interval '3 months');

CREATE TABLE trygg.dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,            -- raw, up to 16 KiB
    reason       text NOT NULL,             -- metric label, e.g. bad_json
    detail       text NOT NULL,             -- the human explanation
    payload_size integer NOT NULL           -- size before truncation
);
CREATE INDEX dead_letters_received_idx ON trygg.dead_letters (received_at);

-- Last status message (online / offline) per device, and when anything was last heard.
CREATE TABLE trygg.device_status (
    device_id    text PRIMARY KEY,
    online       boolean,
    status_at    timestamptz,
    last_seen    timestamptz NOT NULL
);

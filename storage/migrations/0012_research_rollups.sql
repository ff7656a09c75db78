-- Research rollups (docs/research.md "How the counts stay fast"; storage/rollups.py).
--
-- Events per hour and type, and per Europe/Oslo day and type, with the set of residents
-- who had such an event as a bitmap (one bit per resident, by a dense ordinal). Distinct
-- residents are then exact at any bucket size: bit_count(bit_or(members) & mask of the
-- residents who consent now). Only residents of the cohort are counted: those whose
-- research consent (and, for `location` events, location basis) held when the counts
-- were last reconciled; `storage/rollups.py reconcile` brings the cohort in step with
-- trygg.research_residents before every research answer. No pseudonym is stored here,
-- so a new pseudonym key changes nothing.
--
-- All tables are in schema trygg: `trygg_research` cannot read them.

-- Which rows research sees: the rule of trygg.research_event_rows (0010), now written
-- once so that the rollups use the same one. Inlined by the planner (a one-expression
-- SQL function).
CREATE FUNCTION trygg.research_row_visible(event_type text, location_basis_valid boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN event_type <> 'location' OR location_basis_valid;

-- Which of those rows research counts: heartbeats are not events of research counts
-- (they live in trygg.heartbeats and the device rollups, docs/research.md).
CREATE FUNCTION trygg.research_type_counted(event_type text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN event_type <> 'heartbeat';

CREATE OR REPLACE VIEW trygg.research_event_rows WITH (security_barrier = true) AS
SELECT c.resident_pseudonym,
       e.type,
       d.kind AS device_kind,
       e.ts,
       e.received_at,
       CASE WHEN e.type = 'location' THEN round((e.data ->> 'lat')::numeric, 2) END AS lat,
       CASE WHEN e.type = 'location' THEN round((e.data ->> 'lon')::numeric, 2) END AS lon,
       (SELECT coalesce(jsonb_object_agg(f.key, f.value), '{}'::jsonb)
          FROM jsonb_each(e.data) AS f
         WHERE f.key IN ('confidence', 'source', 'door', 'room', 'battery_pct')) AS data
FROM trygg.events e
JOIN trygg.research_residents c ON c.resident_id = e.resident_id
LEFT JOIN trygg.devices d ON d.id = e.device_id
WHERE trygg.research_row_visible(e.type, c.location_basis_valid);

-- A bitmap of `capacity` bits (a multiple of 64) with the bits of `ords` set; bit 0 is
-- the leftmost, as get_bit/set_bit number them. Built from 64-bit words written as hex.
CREATE FUNCTION trygg.research_bits(ords int[], capacity int)
RETURNS varbit LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT ('x' || rpad(coalesce(string_agg(repeat('0', 16 * (w - coalesce(prev, -1) - 1))
                                        || lpad(to_hex(word), 16, '0'), '' ORDER BY w), ''),
                    capacity / 4, '0'))::varbit
FROM (SELECT w, word, lag(w) OVER (ORDER BY w) AS prev
      FROM (SELECT o / 64 AS w, bit_or(1::bigint << (63 - o % 64)) AS word
            FROM unnest(ords) AS o GROUP BY 1) AS words) AS placed
$$;

-- Dense ordinals: bit `ord` of a bitmap is this resident. Given when a resident first
-- joins the cohort; never reused.
CREATE TABLE trygg.research_ordinals (
    resident_id  text COLLATE "C" PRIMARY KEY,
    ord          int NOT NULL UNIQUE CHECK (ord >= 0)
);

-- Who the stored counts include: `included` (research consent) for every type but
-- `location`, `location` (consent and a valid location basis) for `location` events.
CREATE TABLE trygg.research_cohort (
    resident_id  text COLLATE "C" PRIMARY KEY,
    included     boolean NOT NULL,
    location     boolean NOT NULL
);

CREATE TABLE trygg.research_hourly (
    hour     timestamptz NOT NULL,
    type     text NOT NULL,
    events   bigint NOT NULL,
    members  varbit NOT NULL,
    PRIMARY KEY (hour, type)
);

-- `day`: the start of a Europe/Oslo day, as a point in time. A day's row is the sum of
-- its hours in trygg.research_hourly (also of a day not yet closed to its end).
CREATE TABLE trygg.research_daily (
    day      timestamptz NOT NULL,
    type     text NOT NULL,
    events   bigint NOT NULL,
    members  varbit NOT NULL,
    PRIMARY KEY (day, type)
);

-- Response times (storage/research_store.py `response_times`) per Europe/Oslo day of
-- opening and alert kind, over the cohort's alerts: how many, the residents as a bitmap,
-- and the exact seconds to acknowledge and to resolve as sorted arrays (percentile_cont
-- interpolates between exact values, so a summary would not do). A day's row holds the
-- alerts opened before `closed_until` (also of a day not yet closed to its end). Alerts
-- are kept (not partitioned): `forget_before` leaves these rows.
CREATE TABLE trygg.research_alerts_daily (
    day          timestamptz NOT NULL,
    kind         text NOT NULL,
    alerts       bigint NOT NULL,
    members      varbit NOT NULL,
    acknowledge  float8[] NOT NULL,
    resolve      float8[] NOT NULL,
    PRIMARY KEY (day, kind)
);

-- Seconds from `opened` to `at`: the expression of research.alerts (0010), written once
-- for the rollups and the raw rows of an answer.
CREATE FUNCTION trygg.research_seconds(opened timestamptz, at timestamptz)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN extract(epoch FROM at - opened)::double precision;

-- A sorted multiset of `base` with `added` put in and one of each `removed` taken out.
CREATE FUNCTION trygg.research_sorted_change(base float8[], added float8[], removed float8[])
RETURNS float8[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(array_agg(v ORDER BY v), '{}')
FROM ((SELECT unnest(base) UNION ALL SELECT unnest(added)) EXCEPT ALL SELECT unnest(removed)) AS t(v)
$$;

-- Closed hours that got an event after they were computed (a late event; the writer
-- marks them in its own transaction, storage/rollups.py MARK_DIRTY_SQL), or in which an
-- alert opened that changed since (acknowledged, resolved, written late: the trigger
-- below marks them). `mark` grows
-- with every mark, so a recomputation removes only the marks it has seen.
CREATE SEQUENCE trygg.research_dirty_mark_seq;
CREATE TABLE trygg.research_dirty_hours (
    hour       timestamptz PRIMARY KEY,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    mark       bigint NOT NULL DEFAULT nextval('trygg.research_dirty_mark_seq')
);

-- One row. Hours before `closed_until` are in the rollups (NULL: none yet). Writers
-- mark hours before `mark_before` (>= closed_until: advanced before a close computes).
-- `capacity`: bits of every bitmap.
CREATE TABLE trygg.research_rollup_state (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    closed_until  timestamptz,
    mark_before   timestamptz NOT NULL DEFAULT '-infinity',
    capacity      int NOT NULL DEFAULT 64 CHECK (capacity > 0 AND capacity % 64 = 0)
);
INSERT INTO trygg.research_rollup_state DEFAULT VALUES;

-- An alert whose research answer changes (inserted, deleted, or its opening, kind,
-- resident, acknowledgement or resolution changed) marks the hour it opened in, if that
-- hour is closed: answers read its day from the raw alerts until the next close
-- computes the day again. The state row is read FOR KEY SHARE, as MARK_DIRTY_SQL does:
-- a close that advances `mark_before` waits for this transaction. Alerts are written
-- by a background writer (0004), never by the alert path itself.
CREATE FUNCTION trygg.research_alert_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    marked_before timestamptz;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM trygg.research_alerts_daily;
        RETURN NULL;
    END IF;
    SELECT mark_before INTO marked_before FROM trygg.research_rollup_state FOR KEY SHARE;
    INSERT INTO trygg.research_dirty_hours (hour)
    SELECT DISTINCT date_trunc('hour', t, 'UTC')
    FROM (VALUES (CASE WHEN TG_OP <> 'INSERT' THEN OLD.opened_at END),
                 (CASE WHEN TG_OP <> 'DELETE' THEN NEW.opened_at END)) AS v(t)
    WHERE t < marked_before
    ON CONFLICT (hour) DO UPDATE SET marked_at = now(), mark = nextval('trygg.research_dirty_mark_seq');
    RETURN NULL;
END $$;
CREATE TRIGGER research_alert_added_or_removed AFTER INSERT OR DELETE ON trygg.alerts
    FOR EACH ROW EXECUTE FUNCTION trygg.research_alert_changed();
CREATE TRIGGER research_alert_changed
    AFTER UPDATE OF opened_at, kind, resident_id, acknowledged_at, resolved_at ON trygg.alerts
    FOR EACH ROW
    WHEN ((OLD.opened_at, OLD.kind, OLD.resident_id, OLD.acknowledged_at, OLD.resolved_at)
          IS DISTINCT FROM (NEW.opened_at, NEW.kind, NEW.resident_id, NEW.acknowledged_at, NEW.resolved_at))
    EXECUTE FUNCTION trygg.research_alert_changed();
CREATE TRIGGER research_alerts_truncated AFTER TRUNCATE ON trygg.alerts
    FOR EACH STATEMENT EXECUTE FUNCTION trygg.research_alert_changed();
REVOKE ALL ON FUNCTION trygg.research_alert_changed() FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON trygg.research_ordinals, trygg.research_cohort,
              trygg.research_hourly, trygg.research_daily, trygg.research_alerts_daily,
              trygg.research_dirty_hours, trygg.research_rollup_state TO trygg_app;
        GRANT USAGE, SELECT ON SEQUENCE trygg.research_dirty_mark_seq TO trygg_app;
        GRANT SELECT ON trygg.research_event_rows TO trygg_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_research') THEN
        REVOKE ALL ON trygg.research_ordinals, trygg.research_cohort, trygg.research_hourly,
               trygg.research_daily, trygg.research_alerts_daily, trygg.research_dirty_hours,
               trygg.research_rollup_state, trygg.research_event_rows FROM trygg_research;
    END IF;
END $$;

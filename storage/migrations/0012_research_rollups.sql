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

-- Closed hours that got an event after they were computed (a late event); the writer
-- marks them in its own transaction (storage/rollups.py MARK_DIRTY_SQL). `mark` grows
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

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON trygg.research_ordinals, trygg.research_cohort,
              trygg.research_hourly, trygg.research_daily, trygg.research_dirty_hours,
              trygg.research_rollup_state TO trygg_app;
        GRANT USAGE, SELECT ON SEQUENCE trygg.research_dirty_mark_seq TO trygg_app;
        GRANT SELECT ON trygg.research_event_rows TO trygg_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_research') THEN
        REVOKE ALL ON trygg.research_ordinals, trygg.research_cohort, trygg.research_hourly,
               trygg.research_daily, trygg.research_dirty_hours, trygg.research_rollup_state,
               trygg.research_event_rows FROM trygg_research;
    END IF;
END $$;

-- Early signs of decline (docs/insights.md; docs/storage.md "Insights"): each resident's
-- daily features, the baseline state the daily job goes on from, and the notices staff
-- see ("changes worth a look"). Written by the daily job of `trygg up` and by
-- `trygg insights recompute` (composition/insights.py, storage/insights_store.py).

-- One row per resident and local day computed. Arrays are in the order of
-- trygg/insights.py FEATURES; a NULL element is a value not known that day (vals) or no
-- baseline yet (usual, band_low, band_high). Grows by a row per resident a day: yearly
-- partitions by `day` (trygg.partition_plan), made ahead by maintenance and, for the
-- days a catch-up or a recompute writes, by the writer (trygg.ensure_partitions).
CREATE TABLE trygg.insight_days (
    resident_id   text COLLATE "C" NOT NULL,
    day           date NOT NULL,
    vals          real[] NOT NULL,
    usual         real[] NOT NULL,
    band_low      real[] NOT NULL,
    band_high     real[] NOT NULL,
    hours_unheard smallint NOT NULL,
    usable        boolean NOT NULL,
    away          boolean NOT NULL,
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resident_id, day)
) PARTITION BY RANGE (day);

INSERT INTO trygg.partition_plan (parent, column_name, step, ahead, leaf_key)
VALUES ('trygg.insight_days', 'day', 'year', interval '1 year', NULL);
-- Retention drops its years with the events they came from (TRYGG_RETAIN_EVENTS_DAYS,
-- storage/maintenance.py), never less than a month.
INSERT INTO trygg.retention_floors VALUES ('trygg.insight_days', interval '31 days');

SELECT trygg.ensure_partitions('trygg.insight_days', now() - interval '1 year', now() + interval '1 year');

-- The baseline state (opaque, processors/insights States.blobs) after `through_day`:
-- written in the same transaction as that day's rows, so a restart goes on from it.
CREATE TABLE trygg.insight_state (
    resident_id  text COLLATE "C" PRIMARY KEY,
    through_day  date NOT NULL,
    state        bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Changes worth a look: never an alarm. A recompute raises no second notice for the same
-- resident, feature and day (ON CONFLICT DO NOTHING), so one already seen keeps who saw
-- it, when, and the note.
CREATE TABLE trygg.insight_notices (
    notice_id    bigserial PRIMARY KEY,
    resident_id  text COLLATE "C" NOT NULL,
    feature      text NOT NULL,                 -- FEATURES[j].name
    direction    smallint NOT NULL CHECK (direction IN (-1, 0, 1)),
    day          date NOT NULL,                 -- the day it was raised on
    value        real NOT NULL,                 -- mean of the last window_days usable days
    usual        real NOT NULL,
    band_low     real NOT NULL,
    band_high    real NOT NULL,
    window_days  smallint NOT NULL,
    reason_nb    text NOT NULL,
    reason_en    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    seen_at      timestamptz,
    seen_by      text,
    seen_note    text CHECK (length(seen_note) <= 1000),
    UNIQUE (resident_id, feature, day)
);
CREATE INDEX insight_notices_resident_day_idx ON trygg.insight_notices (resident_id, day DESC);
-- a team's list of notices not yet seen, newest first
CREATE INDEX insight_notices_unseen_idx ON trygg.insight_notices (day DESC) WHERE seen_at IS NULL;

-- Rights (as 0006): the application role reads and writes them (0006's default privileges
-- give it the same; said here as the other migrations do).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON trygg.insight_days, trygg.insight_state,
            trygg.insight_notices TO trygg_app;
        GRANT USAGE, SELECT ON SEQUENCE trygg.insight_notices_notice_id_seq TO trygg_app;
    END IF;
END $$;

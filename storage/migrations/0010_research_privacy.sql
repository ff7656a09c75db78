-- Research privacy, second step (docs/research.md "What is guaranteed",
-- docs/security.md "Research and metrics"). Replaces the views of 0005 with the same
-- columns; what changes is which rows and how fine the times are.
--
-- 1. Positions only under a valid location basis (docs/contract.md#7-privacy-and-lawful-care). A
-- `location` event of a
--    resident without one was stored because an alarm or fall alert was open: it is for
--    care, never for research. The rule is the staff timeline's
--    (storage/residents_store.py `location_basis_valid`): kind `consent` or `vedtak`,
--    and `valid_until`, if given, not before today in the resident's time zone. An
--    expired basis hides the resident's positions from research, also earlier ones.
-- 2. No time finer than the hour in schema `research`: `ts`, `received_at` and the alert
--    times are cut to the hour (UTC; Norway's offsets are whole hours). Durations
--    (`seconds_to_acknowledge`, `seconds_to_resolve`) stay exact.
--
-- `trygg.research_event_rows` is the same rows with exact times, for Trygg's own
-- research API (it filters on the exact `ts`, so partitions are pruned, and coarsens
-- and suppresses itself: storage/research_store.py). It is in schema trygg:
-- `trygg_research` cannot read it.

-- The consenting residents, now also saying whether their positions may be used.
CREATE OR REPLACE VIEW trygg.research_residents WITH (security_barrier = true) AS
SELECT r.id AS resident_id,
       p.pseudonym AS resident_pseudonym,
       r.timezone,
       coalesce((r.location_basis ->> 'kind') IN ('consent', 'vedtak')
                AND (r.location_basis ->> 'valid_until' IS NULL
                     OR ((r.location_basis ->> 'valid_until') ~ '^\d{4}-\d{2}-\d{2}$'
                         AND (now() AT TIME ZONE r.timezone)::date
                             <= (r.location_basis ->> 'valid_until')::date)),
                false) AS location_basis_valid
FROM trygg.residents r
JOIN trygg.research_pseudonyms p ON p.resident_id = r.id
WHERE (r.consents ->> 'research') = 'true';

CREATE VIEW trygg.research_event_rows WITH (security_barrier = true) AS
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
WHERE e.type <> 'location' OR c.location_basis_valid;

CREATE OR REPLACE VIEW research.events WITH (security_barrier = true) AS
SELECT resident_pseudonym,
       type,
       device_kind,
       date_trunc('hour', ts, 'UTC') AS ts,
       date_trunc('hour', received_at, 'UTC') AS received_at,
       lat,
       lon,
       data
FROM trygg.research_event_rows;

CREATE OR REPLACE VIEW research.alerts WITH (security_barrier = true) AS
SELECT c.resident_pseudonym,
       a.kind,
       a.priority,
       a.state,
       date_trunc('hour', a.opened_at, 'UTC') AS opened_at,
       date_trunc('hour', a.acknowledged_at, 'UTC') AS acknowledged_at,
       date_trunc('hour', a.resolved_at, 'UTC') AS resolved_at,
       a.escalation_level,
       a.event_count,
       extract(epoch FROM a.acknowledged_at - a.opened_at)::double precision AS seconds_to_acknowledge,
       extract(epoch FROM a.resolved_at - a.opened_at)::double precision AS seconds_to_resolve
FROM trygg.alerts a
JOIN trygg.research_residents c ON c.resident_id = a.resident_id;

-- Trygg's app role reads the exact rows (the default privileges of 0006 cover views
-- made by the same owner; granted here too for owners that differ).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT ON trygg.research_event_rows TO trygg_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_research') THEN
        REVOKE ALL ON trygg.research_event_rows FROM trygg_research;
    END IF;
END $$;

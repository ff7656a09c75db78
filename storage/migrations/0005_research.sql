-- Research views for SQL users (docs/contract.md#6b-storage-contract, #7-privacy-and-lawful-care;
-- docs/research.md).
--
-- Schema `research` holds views over residents with research consent only. Resident ids
-- are replaced by pseudonyms, positions are rounded to 2 decimals (~1 km), free text and
-- staff names are left out. The role `trygg_research` may read these views and nothing
-- else.
--
-- Pseudonyms: HMAC-SHA256(TRYGG_PSEUDONYM_KEY, resident_id) as hex. The key is never
-- stored in the database, so PostgreSQL cannot compute them: Trygg computes them and
-- keeps them in `trygg.research_pseudonyms` (schema trygg: not readable by
-- trygg_research). `key_id` is an HMAC of a fixed text under the same key; when the key
-- changes Trygg recomputes every pseudonym. A resident without a row here is not in the
-- views until Trygg has filled it (at the dashboard's start, after `PUT /api/registry`
-- and before every research request).
CREATE TABLE trygg.research_pseudonyms (
    resident_id  text COLLATE "C" PRIMARY KEY,
    pseudonym    text NOT NULL UNIQUE,
    key_id       text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE SCHEMA IF NOT EXISTS research;

-- Residents who consent to research, with their pseudonyms. Internal (schema trygg):
-- the views of schema research join it, so the consent test is written once.
-- security_barrier: a caller's WHERE clause cannot see rows before the consent filter.
CREATE VIEW trygg.research_residents WITH (security_barrier = true) AS
SELECT r.id AS resident_id,
       p.pseudonym AS resident_pseudonym,
       r.timezone
FROM trygg.residents r
JOIN trygg.research_pseudonyms p ON p.resident_id = r.id
WHERE (r.consents ->> 'research') = 'true';

-- Consenting residents: pseudonym, time zone and the kinds of devices they have.
CREATE VIEW research.residents WITH (security_barrier = true) AS
SELECT c.resident_pseudonym,
       c.timezone,
       ARRAY(SELECT DISTINCT d.kind FROM trygg.devices d
             WHERE d.resident_id = c.resident_id ORDER BY 1) AS device_kinds
FROM trygg.research_residents c;

-- Device events. `lat`/`lon` only for `location` events, rounded to 2 decimals; the
-- accuracy is left out. `data` keeps only fields that describe the event, never a
-- person (`door.unlocked` `by` names a staff member and is dropped).
CREATE VIEW research.events WITH (security_barrier = true) AS
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
LEFT JOIN trygg.devices d ON d.id = e.device_id;

-- Alerts and their response times, in seconds. No team, no note, no staff names.
CREATE VIEW research.alerts WITH (security_barrier = true) AS
SELECT c.resident_pseudonym,
       a.kind,
       a.priority,
       a.state,
       a.opened_at,
       a.acknowledged_at,
       a.resolved_at,
       a.escalation_level,
       a.event_count,
       extract(epoch FROM a.acknowledged_at - a.opened_at)::double precision AS seconds_to_acknowledge,
       extract(epoch FROM a.resolved_at - a.opened_at)::double precision AS seconds_to_resolve
FROM trygg.alerts a
JOIN trygg.research_residents c ON c.resident_id = a.resident_id;

-- Events per day (Europe/Oslo) and type; days and types with fewer than 5 distinct
-- residents are left out (small groups are suppressed, docs/contract.md#7-privacy-and-lawful-care).
CREATE VIEW research.daily_event_counts AS
SELECT date_trunc('day', ts, 'Europe/Oslo') AS day,
       type,
       count(*) AS events,
       count(DISTINCT resident_pseudonym) AS residents
FROM research.events
GROUP BY 1, 2
HAVING count(DISTINCT resident_pseudonym) >= 5;

-- The read-only role for researchers' SQL tools. NOLOGIN: grant it to a login role of
-- your own (docs/research.md). Roles belong to the whole server, so it is created only
-- when missing; a migrating user without CREATEROLE gets a warning instead.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_research') THEN
        CREATE ROLE trygg_research NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it meanwhile
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot create role trygg_research (no CREATEROLE); see docs/research.md';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_research') THEN
        REVOKE ALL ON SCHEMA trygg FROM trygg_research;
        REVOKE ALL ON ALL TABLES IN SCHEMA trygg FROM trygg_research;
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA trygg FROM trygg_research;
        REVOKE ALL ON SCHEMA research FROM trygg_research;
        REVOKE ALL ON ALL TABLES IN SCHEMA research FROM trygg_research;
        GRANT USAGE ON SCHEMA research TO trygg_research;
        GRANT SELECT ON research.residents, research.events, research.alerts,
              research.daily_event_counts TO trygg_research;
    END IF;
END $$;

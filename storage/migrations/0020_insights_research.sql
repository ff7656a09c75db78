-- The daily features of the early signs of decline for research (docs/research.md
-- "Daily features"; docs/insights.md). One row per consenting resident, day and
-- feature, under the resident's pseudonym, like the other views of schema research
-- (0005, 0010): only residents who consent to research now, no resident id, no
-- baseline, no notice, no reason text.
--
-- Only days that may enter a baseline (`usable`: the sensors were heard) and on which the
-- resident was at home (not `away`: hospital, travel) are shown: a day away says where a
-- person was, and the values of an unusable day are not what the person did. Unknown
-- values (NULL) are left out. `day` is the resident's local calendar day: no time finer
-- than the day.
--
-- The feature names are FEATURES of trygg/insights.py in column order;
-- tests/test_api_insights.py checks that they agree.
CREATE VIEW research.insight_days WITH (security_barrier = true) AS
SELECT c.resident_pseudonym,
       d.day,
       f.feature,
       f.value::double precision AS value
FROM trygg.insight_days d
JOIN trygg.research_residents c ON c.resident_id = d.resident_id
CROSS JOIN LATERAL unnest(
    ARRAY['active_hours', 'first_activity', 'last_activity', 'night_activity', 'night_toilet_visits',
          'room_transitions', 'door_exits', 'time_out', 'walk_km', 'button_presses']::text[],
    d.vals) AS f(feature, value)
WHERE d.usable AND NOT d.away AND f.feature IS NOT NULL AND f.value IS NOT NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT ON research.insight_days TO trygg_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_research') THEN
        GRANT SELECT ON research.insight_days TO trygg_research;
        REVOKE ALL ON trygg.insight_days, trygg.insight_state, trygg.insight_notices FROM trygg_research;
    END IF;
END $$;

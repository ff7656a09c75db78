-- Closed alerts by team, for the alert history and the shift (docs/shift.md "How fast").
--
-- Staff see the alerts of their teams: every alert that reached one of them, its own team
-- (`team_id`) or a team it escalated to (`teams`). A page of a team's closed alerts,
-- newest closed first, cannot come from trygg.alerts' own indexes: walking
-- alerts_closed_idx and filtering by team costs as many rows as the history holds before
-- the page is full — 0.35 s for a team with no closed alert among 300,000, and growing
-- with the years kept (Trygg never removes alerts). So every (team, alert) pair is kept
-- here, with the alert's state and closing time, and a page is one index range per team.
--
-- Kept by triggers on trygg.alerts (written by the alerts stage's background writer,
-- never by the alert path itself): a row per team the alert reached; a team never leaves
-- an alert, but the rows follow `teams` whatever it becomes. Filled from the alerts
-- already stored.
CREATE TABLE trygg.alert_reach (
    team_id    text COLLATE "C" NOT NULL,
    alert_id   text COLLATE "C" NOT NULL,
    state      text NOT NULL,
    closed_at  timestamptz,
    PRIMARY KEY (team_id, alert_id)
);
CREATE INDEX alert_reach_closed_idx ON trygg.alert_reach (team_id, closed_at DESC, alert_id DESC)
    INCLUDE (state) WHERE closed_at IS NOT NULL;

-- Runs with its owner's rights, like trygg.research_alert_changed (0012): the application
-- role writes trygg.alerts and only reads trygg.alert_reach.
CREATE FUNCTION trygg.alert_reach_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM trygg.alert_reach;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM trygg.alert_reach r
        WHERE r.alert_id = OLD.alert_id
          AND r.team_id = ANY(array_append(OLD.teams, OLD.team_id))
          AND (TG_OP = 'DELETE' OR NOT r.team_id = ANY(array_append(NEW.teams, NEW.team_id)));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO trygg.alert_reach (team_id, alert_id, state, closed_at)
        SELECT DISTINCT t, NEW.alert_id, NEW.state, NEW.closed_at
        FROM unnest(array_append(NEW.teams, NEW.team_id)) AS t
        ON CONFLICT (team_id, alert_id) DO UPDATE SET state = excluded.state, closed_at = excluded.closed_at;
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION trygg.alert_reach_changed() FROM PUBLIC;

CREATE TRIGGER alert_reach_added_or_removed AFTER INSERT OR DELETE ON trygg.alerts
    FOR EACH ROW EXECUTE FUNCTION trygg.alert_reach_changed();
CREATE TRIGGER alert_reach_changed AFTER UPDATE OF team_id, teams, state, closed_at ON trygg.alerts
    FOR EACH ROW
    WHEN ((OLD.team_id, OLD.teams, OLD.state, OLD.closed_at) IS DISTINCT FROM
          (NEW.team_id, NEW.teams, NEW.state, NEW.closed_at))
    EXECUTE FUNCTION trygg.alert_reach_changed();
CREATE TRIGGER alert_reach_truncated AFTER TRUNCATE ON trygg.alerts
    FOR EACH STATEMENT EXECUTE FUNCTION trygg.alert_reach_changed();

INSERT INTO trygg.alert_reach (team_id, alert_id, state, closed_at)
SELECT DISTINCT t, a.alert_id, a.state, a.closed_at
FROM trygg.alerts a, unnest(array_append(a.teams, a.team_id)) AS t;
ANALYZE trygg.alert_reach;  -- a page reads one index range per team from the start

-- Rights (as 0006): the application role reads the table; only the triggers write it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT ON trygg.alert_reach TO trygg_app;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trygg.alert_reach FROM trygg_app;
    END IF;
END $$;

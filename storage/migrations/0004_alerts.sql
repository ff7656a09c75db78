-- Alerts and their lifecycle (docs/contract.md#4-rules-and-alerts, #6b-storage-contract). Written
-- by the alerts stage through a
-- background writer; the alert path itself never waits for these tables.

-- One row per alert, upserted on every change. `version` counts the changes of the
-- alert, so a replayed (journal) or late write never overwrites a newer row.
CREATE TABLE trygg.alerts (
    alert_id          text COLLATE "C" PRIMARY KEY,
    resident_id       text COLLATE "C" NOT NULL,
    team_id           text COLLATE "C" NOT NULL,   -- the resident's team when it opened
    kind              text NOT NULL,               -- alert kind, docs/contract.md#4-rules-and-alerts
    priority          text NOT NULL,               -- critical | high | medium | low
    state             text NOT NULL
        CHECK (state IN ('open', 'acknowledged', 'resolved', 'cancelled')),
    opened_at         timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    acknowledged_at   timestamptz,                 -- also set when resolved without an explicit ack
    acknowledged_by   text,
    resolved_at       timestamptz,                 -- resolved by staff (not set when cancelled)
    resolved_by       text,
    closed_at         timestamptz,                 -- resolved or cancelled
    note              text,
    event_count       integer NOT NULL DEFAULT 1,
    escalation_level  integer NOT NULL DEFAULT 0,
    escalated_at      timestamptz NOT NULL,        -- last escalation step, or opened_at
    trigger           jsonb NOT NULL,              -- the event that opened it (§3 `trigger`)
    last_event        jsonb NOT NULL,              -- the newest attached event (§3 `last_event`)
    location          jsonb,
    teams             text[] NOT NULL,             -- every team it was published to, in order
    device_id         text COLLATE "C",            -- device_offline / battery_low: which device
    detail            jsonb NOT NULL DEFAULT '{}', -- what the rule said about it
    sources           jsonb NOT NULL DEFAULT '[]', -- recent (device_id, event_id) attached
    version           integer NOT NULL,
    transition_count  integer NOT NULL             -- rows in alert_transitions so far
);
CREATE INDEX alerts_unresolved_idx ON trygg.alerts (state) WHERE state IN ('open', 'acknowledged');
CREATE INDEX alerts_resident_opened_idx ON trygg.alerts (resident_id, opened_at);
CREATE INDEX alerts_opened_idx ON trygg.alerts (opened_at);
CREATE INDEX alerts_closed_idx ON trygg.alerts (closed_at) WHERE closed_at IS NOT NULL;

-- Every transition with time and actor ("system", "resident" or a staff username).
-- The opening has from_state NULL; an escalation step is recorded with
-- from_state = to_state and the team in `note`. `seq` numbers the transitions of one
-- alert, so a replayed write is recognised and stored once. Rows are only ever inserted.
CREATE TABLE trygg.alert_transitions (
    id          bigserial PRIMARY KEY,
    alert_id    text COLLATE "C" NOT NULL,
    seq         integer NOT NULL,
    at          timestamptz NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    note        text,
    UNIQUE (alert_id, seq)
);
CREATE INDEX alert_transitions_at_idx ON trygg.alert_transitions (at);

CREATE FUNCTION trygg.alert_transitions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trygg.alert_transitions is append-only';
END $$;
CREATE TRIGGER alert_transitions_append_only BEFORE UPDATE OR DELETE ON trygg.alert_transitions
    FOR EACH ROW EXECUTE FUNCTION trygg.alert_transitions_append_only();
CREATE TRIGGER alert_transitions_no_truncate BEFORE TRUNCATE ON trygg.alert_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION trygg.alert_transitions_append_only();

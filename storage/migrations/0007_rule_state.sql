-- Snapshots of the processors' rule state (open doors, last positions, clocks), so a
-- restart rebuilds it: the newest snapshot, then the events stored after it.
CREATE TABLE trygg.rule_state (
    id        int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    saved_at  timestamptz NOT NULL,   -- events received after this are replayed
    state     jsonb NOT NULL
);

-- Replaying from a time needs the events in the order they were received.
CREATE INDEX events_received_idx ON trygg.events USING brin (received_at);

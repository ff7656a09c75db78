-- Rule state of each resident partition in the cluster mode (docs/cluster.md). The owner
-- of a partition saves it every few seconds with the position in the stream
-- TRYGG_RESIDENTS it reflects (`seq`: the last message handled); the next owner restores
-- it and replays the partition's messages after that position. One row per partition,
-- replaced at each save (composition/cluster_rules.py, storage/rule_state.py).
CREATE TABLE trygg.partition_state (
    partition  int PRIMARY KEY CHECK (partition >= 0),
    seq        bigint NOT NULL CHECK (seq >= 0),
    saved_at   timestamptz NOT NULL,
    state      jsonb NOT NULL
);

-- Rights (as 0006): the application role reads and writes it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON trygg.partition_state TO trygg_app;
    END IF;
END $$;

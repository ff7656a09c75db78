-- The role Trygg runs as in production (docs/contract.md#7-privacy-and-lawful-care; docs/privacy.md
-- "Running Trygg
-- with least privileges").
--
-- `trygg_app` may read and write the working tables, but it owns nothing: it cannot
-- change the schema, drop a trigger, or update, delete or truncate rows of the
-- append-only tables (trygg.audit_log, trygg.alert_transitions). Migrations run as the
-- owner (`trygg migrate` with the owner's URL); Trygg itself connects as a login role
-- that is a member of trygg_app.
--
-- Also: signed-out tokens (below), so that a session ended with `POST /logout` stays
-- ended even if a copy of its cookie survives.
--
-- Roles belong to the whole server: created only when missing. A migrating user without
-- CREATEROLE gets a warning, and the grants are skipped.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        CREATE ROLE trygg_app NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it meanwhile
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot create role trygg_app (no CREATEROLE); see docs/privacy.md';
END $$;

-- Tokens and session cookies are signed and expire (docs/api.md "Tokens"); one that was
-- signed out before it expired is kept here, by its SHA-256, until it would have expired.
CREATE TABLE trygg.revoked_tokens (
    token_hash  text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX revoked_tokens_expires_idx ON trygg.revoked_tokens (expires_at);

-- The gateway creates monthly partitions of trygg.events at start. Creating a partition
-- needs the parent's owner, so the function runs with its owner's rights (a fixed
-- search_path keeps that safe).
ALTER FUNCTION trygg.ensure_event_partitions(timestamptz, timestamptz)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA trygg, research TO trygg_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA trygg TO trygg_app;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA trygg TO trygg_app;
    GRANT SELECT ON ALL TABLES IN SCHEMA research TO trygg_app;
    -- Append-only and owner-managed tables: no UPDATE, no DELETE (and never TRUNCATE).
    REVOKE UPDATE, DELETE, TRUNCATE ON trygg.audit_log, trygg.alert_transitions FROM trygg_app;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trygg.schema_migrations FROM trygg_app;
    -- Tables and sequences created by later migrations (run by this same owner).
    ALTER DEFAULT PRIVILEGES IN SCHEMA trygg
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO trygg_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA trygg
        GRANT USAGE, SELECT ON SEQUENCES TO trygg_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA research
        GRANT SELECT ON TABLES TO trygg_app;
END $$;

-- The admin page (docs/admin.md): what each administrator changed, and one-time links
-- for users to set their own password.

-- Every change made through /api/admin: who, when, what, to which object. `summary`
-- names the fields that changed and the values that are safe to keep (team, role,
-- consents, location basis, device kind); never a key-box code, a door-lock note, a
-- phone number, an address or a password. Rows are only ever inserted.
CREATE TABLE trygg.admin_changes (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    action       text NOT NULL,      -- resident.create, device.move, user.password_link, ...
    target_kind  text NOT NULL,      -- resident, device, user
    target_id    text NOT NULL,
    summary      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX admin_changes_at_idx ON trygg.admin_changes (at DESC, id DESC);
CREATE INDEX admin_changes_target_idx ON trygg.admin_changes (target_kind, target_id, at DESC);

CREATE FUNCTION trygg.admin_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trygg.admin_changes is append-only';
END $$;
CREATE TRIGGER admin_changes_append_only BEFORE UPDATE OR DELETE ON trygg.admin_changes
    FOR EACH ROW EXECUTE FUNCTION trygg.admin_changes_append_only();
CREATE TRIGGER admin_changes_no_truncate BEFORE TRUNCATE ON trygg.admin_changes
    FOR EACH STATEMENT EXECUTE FUNCTION trygg.admin_changes_append_only();

-- One-time links to set a password (POST /api/admin/users/{username}/password-link,
-- `trygg users link`): only the SHA-256 of the random token is kept. At most one open
-- link per user: a new one replaces the old. Used or expired links are deleted.
CREATE TABLE trygg.password_links (
    username    text PRIMARY KEY REFERENCES trygg.users (username) ON DELETE CASCADE,
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    expires_at  timestamptz NOT NULL
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trygg_app') THEN
        RETURN;
    END IF;
    REVOKE UPDATE, DELETE, TRUNCATE ON trygg.admin_changes FROM trygg_app;
END $$;

-- Who read which resident's data (docs/contract.md#7-privacy-and-lawful-care). Rows are only ever
-- inserted.
CREATE TABLE trygg.audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    role         text NOT NULL,
    resident_id  text,
    action       text NOT NULL
);
CREATE INDEX audit_log_resident_idx ON trygg.audit_log (resident_id, at);

CREATE FUNCTION trygg.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trygg.audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON trygg.audit_log
    FOR EACH ROW EXECUTE FUNCTION trygg.audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON trygg.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION trygg.audit_log_append_only();

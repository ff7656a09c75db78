-- Audit rows reach trygg.audit_log through the dashboard's local journal (docs/privacy.md
-- "The audit log"): each row gets its id when it is journaled, and is inserted with
-- ON CONFLICT (row_id) DO NOTHING, so a journal replayed after a crash stores it once.
-- Rows written before this migration have none (a unique index allows many NULLs).
ALTER TABLE trygg.audit_log ADD COLUMN row_id uuid;
CREATE UNIQUE INDEX audit_log_row_id_idx ON trygg.audit_log (row_id);

-- The resident card (docs/contract.md "The resident card"): address, how staff get in,
-- and contact persons, from the registry document like the rest of a resident's row.
-- Kept apart from the columns the alarm path reads; shown only by
-- GET /api/residents/{id}/card, to staff of the resident's team, operators and admins.
ALTER TABLE trygg.residents ADD COLUMN card jsonb NOT NULL DEFAULT '{}';

-- A team's residents (the device health list, the shift) without reading them all.
CREATE INDEX residents_team_idx ON trygg.residents (team_id);

-- Registry: teams, residents, devices, users (docs/contract.md#3-registry-file).
-- The registry is replaced as a whole in one transaction by `trygg registry load`;
-- `document` keeps the validated document as it was loaded, the other tables are the
-- same data in columns for people who point psql or Grafana at the database.
CREATE SCHEMA IF NOT EXISTS trygg;

CREATE TABLE trygg.registry (
    id         int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    document   jsonb NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    loaded_by  text NOT NULL
);

CREATE TABLE trygg.teams (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    escalate_to  text,
    webhook_url  text
);

CREATE TABLE trygg.residents (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    team_id         text NOT NULL REFERENCES trygg.teams (id),
    timezone        text NOT NULL DEFAULT 'Europe/Oslo',
    night_start     time NOT NULL DEFAULT '23:00',
    night_end       time NOT NULL DEFAULT '06:00',
    settings        jsonb NOT NULL DEFAULT '{}',
    safe_zones      jsonb NOT NULL DEFAULT '[]',
    consents        jsonb NOT NULL DEFAULT '{}',
    location_basis  jsonb
);

CREATE TABLE trygg.devices (
    id           text PRIMARY KEY,
    resident_id  text NOT NULL REFERENCES trygg.residents (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    heartbeat_s  double precision NOT NULL DEFAULT 60
);
CREATE INDEX devices_resident_idx ON trygg.devices (resident_id);

-- Users: roles and links from the registry; password hashes from `trygg users add`.
CREATE TABLE trygg.users (
    username       text PRIMARY KEY,
    role           text NOT NULL,
    teams          text[] NOT NULL DEFAULT '{}',
    residents      text[] NOT NULL DEFAULT '{}',
    password_hash  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

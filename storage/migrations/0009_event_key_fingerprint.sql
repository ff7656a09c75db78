-- A re-used event id is a new event, not a re-send (docs/ingest.md "Re-used ids").
--
-- A key remembers the type and device time of the event that took it. A later event
-- with the same (device_id, event_id) and the same type and ts is a re-send and is
-- skipped, as before; one with another type or ts (a device whose counter reset) is a
-- different event, stored under `trygg.contract.rekeyed_id` by the writer
-- (storage/events.py). Keys stored before this migration have NULL here and compare as
-- a re-send, which is what they always did. Adding nullable columns without a default
-- rewrites nothing, so this is instant on a table of years.
ALTER TABLE trygg.event_keys
    ADD COLUMN type text,
    ADD COLUMN ts   timestamptz;

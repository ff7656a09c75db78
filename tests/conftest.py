"""Fixtures, split by service: tests/fix_db.py (PostgreSQL), tests/fix_mqtt.py (Mosquitto),
tests/fix_disk.py (a small disk of its own),
tests/fix_gateway.py (gateways on the test's prefix)."""

from tests.fix_db import database, pg_admin_url, pool, pool_of, private_postgres
from tests.fix_disk import small_disk
from tests.fix_gateway import start_gateway
from tests.fix_mqtt import mosquitto, prefix, publisher

__all__ = ["database", "mosquitto", "pg_admin_url", "pool", "pool_of", "prefix", "private_postgres", "publisher",
           "small_disk", "start_gateway"]

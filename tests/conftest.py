"""Fixtures live in fixture modules, registered here, never in test modules (a test module
imports no other: tests/unit/test_suite_layout.py checks it):

- tests/fix_db.py: PostgreSQL (a private server, a database per test)
- tests/fix_timescale.py: private PostgreSQL servers with TimescaleDB (preloaded or not);
  `--timescale` runs the `database` fixture's tests there
- tests/fix_mqtt.py: Mosquitto (a broker per session, a topic prefix per test, publishers)
- tests/fix_disk.py: a small disk of its own
- tests/fix_gateway.py: gateways on the test's prefix
- tests/fix_alerts.py: staff handhelds and the alert stage on a thread of its own
- tests/fix_up.py: `trygg up` in a process of its own
- tests/fix_api.py: the API served on a seeded database (`world`, `shared_world`)
- tests/fix_users_cli.py: the `trygg users` command in-process
- tests/fix_deploy.py: docker-compose.yml and the shipped Mosquitto configuration
- tests/fix_cluster.py: a three-node NATS cluster (JetStream, MQTT) per test module
- tests/fix_pg_pair.py: a PostgreSQL primary and its streaming standby per test module
  (`kill_primary`, `promote`)
- tests/fix_workers.py: two pytest-xdist workers; `serial` tests run while the other waits

Plain helpers without fixtures: tests/helpers.py, tests/registry_documents.py."""

pytest_plugins = [
    "tests.fix_db",
    "tests.fix_timescale",
    "tests.fix_mqtt",
    "tests.fix_disk",
    "tests.fix_gateway",
    "tests.fix_alerts",
    "tests.fix_up",
    "tests.fix_api",
    "tests.fix_users_cli",
    "tests.fix_deploy",
    "tests.fix_cluster",
    "tests.fix_pg_pair",
    "tests.fix_workers",
]

"""The cluster deployment: deploy/docker-compose.cluster.yml, deploy/nats/ and deploy/postgres/.

No Docker engine runs here: the compose file is read as `docker compose` reads it
(tests/fix_deploy.py), the NATS nodes' files are compared with what
cluster/natsconf.py makes, and the PostgreSQL scripts are checked by the shell.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.fix_deploy import ROOT, MissingVariable, _interpolate_values

COMPOSE = ROOT / "deploy" / "docker-compose.cluster.yml"
NATS_DIR = ROOT / "deploy" / "nats"
POSTGRES_DIR = ROOT / "deploy" / "postgres"
SECRETS = ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD", "TRYGG_PSEUDONYM_KEY", "TRYGG_SESSION_SECRET")
NATS = ("nats-1", "nats-2", "nats-3")
TRYGG = ("trygg-1", "trygg-2")


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document if env is None else _interpolate_values(document, env)  # type: ignore[return-value]


def full_env() -> dict[str, str]:
    return {name: secrets.token_hex(24) for name in SECRETS}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (or volume) of a service's volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}


def test_the_cluster_has_three_nats_nodes_a_postgres_pair_and_two_instances() -> None:
    services = compose(full_env())["services"]
    assert set(services) == {*NATS, "postgres-primary", "postgres-standby", *TRYGG}
    for name in NATS:
        assert services[name]["image"] == "nats:2.12.8"
    for name in ("postgres-primary", "postgres-standby"):
        assert services[name]["image"].startswith("postgres:")
    for name in TRYGG:
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (COMPOSE.parent / ".." / "Dockerfile").exists()
        assert services[name]["command"][-1].endswith("exec trygg up --cluster")
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name


def test_the_nats_files_are_what_node_config_makes() -> None:
    done = subprocess.run([sys.executable, str(NATS_DIR / "generate"), "--check"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_each_nats_service_runs_its_own_file_and_routes_to_the_other_services() -> None:
    services = compose(full_env())["services"]
    for i, name in enumerate(NATS, start=1):
        service = services[name]
        config = service["command"][service["command"].index("--config") + 1]
        source = mounts(service)[config]
        assert source == f"./nats/n{i}.conf"
        text = (COMPOSE.parent / source).read_text()
        assert f'server_name: "{name}"' in text
        assert f'listen: "{name}:1883"' in text  # MQTT for devices and handhelds
        routes = set(re.findall(r"nats-route://([a-z0-9-]+):6222", text))
        assert routes == set(NATS) - {name}
        store = re.search(r'store_dir: "([^"]+)"', text)
        assert store is not None and store[1].startswith("/data/")
        assert mounts(service)["/data"] in compose()["volumes"]
        assert any(str(port).endswith(":1883") for port in service["ports"])


def test_every_instance_reaches_every_node_and_both_database_servers() -> None:
    env = full_env()
    services = compose(env)["services"]
    names = []
    for name in TRYGG:
        settings = {k: str(v) for k, v in services[name]["environment"].items()}
        names.append(settings["TRYGG_CLUSTER_INSTANCE"])
        nats_hosts = [urlsplit(u) for u in settings["TRYGG_CLUSTER_NATS_URLS"].split(",")]
        assert [(u.scheme, u.hostname, u.port) for u in nats_hosts] == [("nats", n, 4222) for n in NATS]
        mqtt_hosts = [urlsplit(u) for u in settings["TRYGG_CLUSTER_MQTT_URLS"].split(",")]
        assert [(u.scheme, u.hostname, u.port) for u in mqtt_hosts] == [("mqtt", n, 1883) for n in NATS]
        database = settings["TRYGG_DATABASE_URL"]
        hosts = database.split("@", 1)[1].split("/", 1)[0].split(",")
        assert hosts == ["postgres-primary:5432", "postgres-standby:5432"]
        assert database.endswith("/trygg?target_session_attrs=read-write")
        assert f"trygg:{env['POSTGRES_PASSWORD']}@" in database
        assert settings["TRYGG_PSEUDONYM_KEY"] == env["TRYGG_PSEUDONYM_KEY"]
        assert settings["TRYGG_SESSION_SECRET"] == env["TRYGG_SESSION_SECRET"]
        assert settings["TRYGG_DATA_DIR"] == "/data" and mounts(services[name])["/data"] in compose()["volumes"]
        assert set(services[name]["depends_on"]) == {*NATS, "postgres-primary"}
    assert len(set(names)) == len(TRYGG)
    # the settings are what trygg reads
    from trygg.settings import load_settings

    settings = {k.removeprefix("TRYGG_").lower(): str(v) for k, v in services[TRYGG[0]]["environment"].items()}
    assert load_settings(**settings).cluster_instance == "trygg-1"


def test_the_standby_is_a_copy_of_the_primary_streaming_from_it() -> None:
    env = full_env()
    services = compose(env)["services"]
    primary, standby = services["postgres-primary"], services["postgres-standby"]
    command = " ".join(primary["command"])
    assert "wal_level=replica" in command and "synchronous_standby_names=*" in command
    init = mounts(primary)["/docker-entrypoint-initdb.d/10-replication.sh"]
    init_text = (COMPOSE.parent / init).read_text()
    assert "WITH REPLICATION LOGIN" in init_text and "host replication replicator" in init_text
    script = mounts(standby)[standby["entrypoint"][0]]
    text = (COMPOSE.parent / script).read_text()
    assert "pg_basebackup" in text and "--write-recovery-conf" in text and "--wal-method stream" in text
    assert standby["environment"]["PRIMARY_HOST"] == "postgres-primary"
    assert standby["environment"]["REPLICATION_PASSWORD"] == primary["environment"]["REPLICATION_PASSWORD"]
    assert primary["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    for path in (COMPOSE.parent / init, COMPOSE.parent / script):
        subprocess.run(["sh", "-n", str(path)], check=True)
        assert path.stat().st_mode & 0o111, f"{path} is not executable"


@pytest.mark.parametrize("missing", SECRETS)
def test_the_cluster_refuses_to_start_without_each_secret(missing: str) -> None:
    env = full_env()
    env[missing] = ""
    with pytest.raises(MissingVariable, match=missing):
        compose(env)


def test_no_secret_is_written_in_the_cluster_files() -> None:
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD|SECRET|KEY", line) and ":" in line and not line.lstrip().startswith("#"):
            value = line.split(":", 1)[1]
            assert "${" in value or not value.strip(), line
    for path in [*NATS_DIR.glob("*.conf"), *POSTGRES_DIR.glob("*.sh")]:
        literal = re.search(r"(password|secret)\s*[:=]\s*(?![\"']?\$|'password')\S", Path(path).read_text(),
                            re.IGNORECASE)
        assert literal is None, f"{path}: {literal and literal[0]}"  # only $VARIABLES (psql's :'password')

"""TRYGG_DATABASE_URL (docs/cluster.md "PostgreSQL: a primary and a standby"): one server or
several, as a URL or as key=value pairs; a value psycopg could not connect with stops
Trygg with one line naming the variable, never echoing a password."""

from __future__ import annotations

import pytest

from trygg.errors import SettingsError
from trygg.settings import load_settings


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/trygg",
    "postgres://trygg:secret@db.example/trygg?sslmode=require",
    "postgresql://postgres@127.0.0.1:5441,127.0.0.1:5442/trygg?target_session_attrs=read-write",
    "postgresql://trygg@pg-a:5432,pg-b:5432,pg-c/trygg?target_session_attrs=primary&connect_timeout=3",
    "postgresql://trygg@[2001:db8::1]:5432,[2001:db8::2]:5432/trygg?target_session_attrs=read-write",
    "postgresql://pg-a,pg-b/trygg?target_session_attrs=read-write",
    "host=127.0.0.1,127.0.0.1 port=5441,5442 user=postgres dbname=trygg target_session_attrs=read-write",
    "host=pg-a,pg-b port=5432 dbname=trygg target_session_attrs=primary",
    "host=pg-a,pg-b hostaddr=10.0.0.1,10.0.0.2 port=5432,5433 dbname=trygg target_session_attrs=read-write",
    "postgresql:///trygg",
    "dbname=trygg",
])
def test_one_server_or_several_are_taken_as_given(url: str) -> None:
    assert load_settings(_env_file=None, database_url=url).database_url == url


def test_no_url_is_the_embedded_server() -> None:
    assert load_settings(_env_file=None, database_url="").database_url is None


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql://postgres@pg-a:5432,pg-b:99999/trygg?target_session_attrs=read-write",
     "has a bad port '99999'"),
    ("host=pg-a port=x dbname=trygg", "has a bad port 'x'"),
    ("host=pg-a,pg-b port=5432,5433,5434 dbname=trygg", "has 3 ports for 2 hosts"),
    ("postgresql://pg-a,pg-b/trygg?target_session_attrs=writable", "has target_session_attrs='writable'"),
    ("postgresql://pg-a,pg-b/trygg", "has 2 hosts: add target_session_attrs=read-write"),
    ("host=pg-a,pg-b dbname=trygg target_session_attrs=any", "has 2 hosts: add target_session_attrs=read-write"),
    ("pg-a,pg-b", "must look like postgresql://"),
    ("mysql://pg-a/trygg", "must look like postgresql://"),
])
def test_a_url_that_cannot_be_used_is_one_line_naming_the_variable(url: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, database_url=url)
    assert caught.value.setting == "TRYGG_DATABASE_URL"
    assert says in caught.value.message
    assert "\n" not in str(caught.value)


def test_the_password_is_not_repeated() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, database_url="postgresql://trygg:hunter2-secret@pg-a:5432,pg-b:0/trygg"
                                                       "?target_session_attrs=read-write")
    assert "hunter2" not in str(caught.value)

"""Who may do what on the embedded demo broker when it has a password file (composition/broker.py).

amqtt loads these plugins by their dotted path; they live apart from composition/broker.py so
that importing the broker module does not import amqtt (slow) until a broker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amqtt.plugins.authentication import FileAuthPlugin
from amqtt.plugins.topic_checking import TopicAccessControlListPlugin
from amqtt.session import Session


class SameIdAuthPlugin(FileAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's password file check, and the client id must be the username."""

    async def authenticate(self, *, session: Session) -> bool | None:
        if session.username is None or session.client_id != session.username:
            return False
        result: bool | None = await super().authenticate(session=session)
        return result


class DemoAclPlugin(TopicAccessControlListPlugin):  # type: ignore[misc]
    """amqtt's topic ACL with publish and subscribe lists (no deprecated `acl` key)."""

    @dataclass
    class Config:
        publish_acl: dict[str, list[str]] = field(default_factory=dict)
        subscribe_acl: dict[str, list[str]] = field(default_factory=dict)


def access_lists(users: list[str], prefix: str, trygg: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(publish, subscribe) topic lists per user, as deploy/mosquitto/acl grants them;
    `trygg` is the stem of Trygg's own accounts."""
    devices, teams, internal = f"{prefix}/devices", f"{prefix}/teams", f"{prefix}/internal"
    publish: dict[str, list[str]] = {
        f"{trygg}-alerts": [f"{teams}/+/alerts/#"],
        f"{trygg}-processors-out": [f"{internal}/intents"],
        f"{trygg}-alerts-out": [f"{internal}/alert-closed"],
    }
    subscribe: dict[str, list[str]] = {
        f"{trygg}-gateway": [f"{devices}/+/events", f"{devices}/+/status"],
        f"{trygg}-gateway-watch": [f"{devices}/+/events"],
        f"{trygg}-alerts": [f"{teams}/+/alerts/#"],
        f"{trygg}-processors": [f"{devices}/+/events", f"{devices}/+/status", f"{internal}/alert-closed"],
        f"{trygg}-alerts-in": [f"{internal}/intents"],
    }
    for user in users:
        if user.startswith("staff-"):  # a handheld: its team's alerts, read only
            subscribe[user] = [f"{teams}/{user.removeprefix('staff-')}/alerts/#"]
        elif user != trygg and not user.startswith(f"{trygg}-"):  # a device: its own topics
            publish[user] = [f"{devices}/{user}/events", f"{devices}/{user}/status"]
    return publish, subscribe

"""In-process subscribers (the dashboard's SSE) and webhooks: every change reaches the
teams that should see it, a slow consumer is dropped rather than slowing alarms, and a
failing webhook receiver is retried. No broker, no network (httpx MockTransport)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from alerts import AlertHub, SubscriptionDropped, WebhookSender
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, Priority

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def alert(alert_id: str, state: str = "open", teams: tuple[str, ...] = ("east",)) -> Alert:
    return Alert(alert_id=alert_id, resident_id="r-1", team_id=teams[0], kind=AlertKind.FALL,
                 priority=Priority.HIGH, state=AlertState(state), opened_at=T0, updated_at=T0, teams=teams)


def test_subscribers_get_changes_of_their_teams_only() -> None:
    async def scenario() -> None:
        hub = AlertHub()
        east = hub.subscribe({"east"})
        centre = hub.subscribe({"alarm-centre"})
        everyone = hub.subscribe(None)
        hub.publish(alert("a-1", teams=("east",)))
        hub.publish(alert("a-1", "open", teams=("east", "alarm-centre")))  # escalated
        hub.publish(alert("a-2", teams=("west",)))
        assert [(await east.get()).alert_id for _ in range(2)] == ["a-1", "a-1"]
        assert (await centre.get()).alert_id == "a-1"
        assert [(await everyone.get()).alert_id for _ in range(3)] == ["a-1", "a-1", "a-2"]
        assert east.queue.empty() and centre.queue.empty()
        hub.unsubscribe(east)
        hub.publish(alert("a-3", teams=("east",)))
        assert east.queue.empty()
        assert len(hub) == 2

    asyncio.run(scenario())


def test_a_slow_subscriber_is_dropped_with_a_marker_and_others_keep_receiving() -> None:
    async def scenario() -> None:
        hub = AlertHub(limit=3)
        slow = hub.subscribe({"east"})
        fast = hub.subscribe({"east"})
        for i in range(5):
            hub.publish(alert(f"a-{i}", teams=("east",)))
            await fast.get()
        assert slow.dropped and len(hub) == 1
        assert slow.queue.qsize() == 4  # bounded: three changes and the marker
        received = [(await slow.get()).alert_id for _ in range(3)]
        assert received == ["a-0", "a-1", "a-2"]
        with pytest.raises(SubscriptionDropped):
            await slow.get()

    asyncio.run(scenario())


def test_a_subscriber_is_woken_in_the_call_that_offers_the_change() -> None:
    """The console's stream writes a change before the alert stage's call returns: its
    `wake` runs inside `publish`, with the change already waiting."""
    async def scenario() -> None:
        hub = AlertHub(limit=2)
        seen: list[str] = []
        sub = hub.subscribe({"east"}, wake=lambda: seen.append(sub.get_nowait().alert_id))
        hub.publish(alert("a-1", teams=("east",)))
        assert seen == ["a-1"]
        hub.publish(alert("a-2", teams=("west",)))
        assert seen == ["a-1"]

    asyncio.run(scenario())


def test_a_subscriber_whose_wake_fails_is_dropped_and_the_others_still_get_the_change() -> None:
    async def scenario() -> None:
        hub = AlertHub()

        def broken() -> None:
            raise RuntimeError("console gone")

        failing = hub.subscribe({"east"}, wake=broken)
        other = hub.subscribe({"east"})
        hub.publish(alert("a-1", teams=("east",)))
        assert (await other.get()).alert_id == "a-1"
        assert failing.dropped and len(hub) == 1
        hub.publish(alert("a-2", teams=("east",)))
        assert (await failing.get()).alert_id == "a-1"
        with pytest.raises(SubscriptionDropped):  # told, not left silent
            await failing.get()

    asyncio.run(scenario())


def test_webhook_posts_the_alert_json_and_retries_failures_with_backoff() -> None:
    calls: list[tuple[str, bytes]] = []
    answers = iter([503, 500, 200, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((str(request.url), request.content))
        return httpx.Response(next(answers))

    async def scenario() -> WebhookSender:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        sender = WebhookSender(client=client, backoff_s=0.01, attempts=5)
        runner = asyncio.create_task(sender.run())
        assert sender.send("https://kommune.example/hook", alert("a-1"))
        for _ in range(200):
            if sender.delivered:
                break
            await asyncio.sleep(0.01)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await client.aclose()
        return sender

    sender = asyncio.run(scenario())
    assert sender.delivered == 1 and sender.failed == 0
    assert [url for url, _ in calls] == ["https://kommune.example/hook"] * 3
    assert calls[-1][1] == alert("a-1").wire_payload()  # the alert's contract JSON


def test_webhook_gives_up_on_a_client_error_and_after_its_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gone":
            return httpx.Response(404)
        raise httpx.ConnectError("refused", request=request)

    async def scenario() -> tuple[WebhookSender, int]:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        sender = WebhookSender(client=client, backoff_s=0.001, attempts=3)
        runner = asyncio.create_task(sender.run())
        sender.send("https://h.example/gone", alert("a-1"))
        sender.send("https://h.example/down", alert("a-2"))
        for _ in range(300):
            if sender.failed == 2:
                break
            await asyncio.sleep(0.01)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await client.aclose()
        return sender, sender.pending

    sender, pending = asyncio.run(scenario())
    assert (sender.delivered, sender.failed, pending) == (0, 2, 0)


def test_a_full_webhook_queue_refuses_without_blocking() -> None:
    async def scenario() -> list[bool]:
        sender = WebhookSender(queue_max=2)
        return [sender.send("https://h.example/x", alert(f"a-{i}")) for i in range(3)]

    assert asyncio.run(scenario()) == [True, True, False]


def test_each_team_has_its_own_webhook_queue_and_the_number_of_lanes_is_bounded() -> None:
    """A team whose receiver is behind fills only its own queue; another team's
    deliveries are still taken. Destinations beyond `lanes_max` are refused, counted."""
    async def scenario() -> tuple[list[bool], bool, bool, int]:
        sender = WebhookSender(queue_max=2, lanes_max=2)
        east = [sender.send("https://east.example/hook", alert(f"a-{i}"), team="east") for i in range(3)]
        west = sender.send("https://west.example/hook", alert("b-1"), team="west")
        third = sender.send("https://north.example/hook", alert("c-1"), team="north")
        return east, west, third, sender.lanes

    east, west, third, lanes = asyncio.run(scenario())
    assert east == [True, True, False]
    assert west is True
    assert third is False and lanes == 2


def test_webhook_metrics_are_by_team_and_an_idle_lane_retires() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if request.url.host == "east.example" else 404)

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (sample("trygg_webhook_deliveries_total", team="east-m", result="delivered"),
              sample("trygg_webhook_deliveries_total", team="west-m", result="given_up"))

    async def scenario() -> tuple[int, int]:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        sender = WebhookSender(client=client, idle_s=0.05)
        runner = asyncio.create_task(sender.run())
        sender.send("https://east.example/hook", alert("a-1"), team="east-m")
        sender.send("https://west.example/hook", alert("b-1"), team="west-m")
        lanes = sender.lanes
        for _ in range(200):
            if sender.lanes == 0:
                break
            await asyncio.sleep(0.01)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await client.aclose()
        return lanes, sender.lanes

    assert asyncio.run(scenario()) == (2, 0)
    assert sample("trygg_webhook_deliveries_total", team="east-m", result="delivered") == before[0] + 1
    assert sample("trygg_webhook_deliveries_total", team="west-m", result="given_up") == before[1] + 1
    assert REGISTRY.get_sample_value("trygg_webhook_pending", {"team": "east-m"}) is None  # gone with its lane

"""The staff console as a home-care worker of team east meets it: a device publishes, the
alert is on screen within a second, coloured by priority and with a sound, with the
resident's and the team's names; "Jeg tar den"; resolve with a note; another console sees
every change without reloading. A note being typed is not lost when a colleague resolves
first; the focus stays on a sensible control; an admin only looks; closed alerts are
there after a reload; notifications while the console is in the background; the shell
works as an installed app and says so when there is no network."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import (
    PASSWORD,
    System,
    add_users,
    api_as,
    check_accessible,
    login,
    resolve_open_alerts,
    shot,
    watch,
)
from tests.fix_db import scalar
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

#: The id of the element that has the keyboard focus, and the alert card it is in.
FOCUS = ("() => { const el = document.activeElement;"
         " return {tag: el.tagName, id: el.id, cls: el.className,"
         " card: el.closest('li.alert')?.dataset.alertId || null}; }")


def live_console(page: Page, system: System, user: str) -> None:
    login(page, system.base_url, user, "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#conn")).to_contain_text("Live")


def alert_id_of(page: Page, resident: str, priority: str) -> str:
    card = page.locator(f"#alerts li.alert[data-resident='{resident}'][data-priority='{priority}']")
    value = card.get_attribute("data-alert-id")
    assert value
    return value


@pytest.mark.serial
def test_a_fall_is_on_screen_within_a_second_then_taken_and_resolved_with_a_note(
    system: System, context: BrowserContext, new_context: Callable[[], BrowserContext],
) -> None:
    # Two positions of the resident's phone earlier: the resident panel draws them.
    system.publish("d-3-phone", "location", {"lat": 59.9140, "lon": 10.7510, "accuracy_m": 20})
    system.publish("d-3-phone", "location", {"lat": 59.9152, "lon": 10.7541, "accuracy_m": 15})

    page = context.new_page()
    seen = watch(page)
    live_console(page, system, "ola")
    sound = page.get_by_role("button", name=re.compile("Slå på lyd"))
    sound.click()  # browsers play sound only after the user has interacted
    expect(page.locator("#sound")).to_have_attribute("aria-pressed", "true")
    # The header links to the other care pages; who is signed in, with the team's name.
    expect(page.locator("#pages").get_by_role("link", name=re.compile("Vakt"))).to_be_visible()
    expect(page.locator("#who")).to_contain_text("Hjemmetjenesten Øst")

    other = new_context().new_page()  # a colleague's console on another machine
    live_console(other, system, "ola")

    sent = time.monotonic()
    system.publish("d-3-fall", "fall.detected", {"confidence": 0.93})
    card = page.locator("#alerts li.alert[data-resident='r-3'][data-priority='high']")
    card.wait_for(timeout=1000)
    arrived = time.monotonic() - sent
    assert arrived < 1.0, f"the alert took {arrived:.3f} s to appear"

    expect(card).to_have_attribute("data-state", "open")
    expect(card).to_contain_text("Fall")
    expect(card).to_contain_text("Astrid Østby")
    expect(card.locator(".team")).to_have_text("Hjemmetjenesten Øst")
    expect(card).not_to_contain_text("Nivå 0")
    expect(card.locator(".last-event")).to_contain_text("Fallsensor")  # the device in words, not d-3-fall
    expect(card).not_to_contain_text("d-3-fall")
    assert "rgb(234, 122, 26)" in card.evaluate("el => getComputedStyle(el).borderLeftColor"), "high is orange"
    expect(page.locator("#sound")).to_have_attribute("data-beeps", "1")

    # A smoke alarm (critical) goes to the top although it is newer.
    system.publish("d-3-smoke", "smoke.detected")
    first = page.locator("#alerts li.alert").first
    expect(first).to_have_attribute("data-priority", "critical")
    assert "rgb(179, 38, 30)" in first.evaluate("el => getComputedStyle(el).borderLeftColor"), "critical is red"
    expect(page.locator("#sound")).to_have_attribute("data-beeps", "2")
    fall_id = alert_id_of(page, "r-3", "high")
    check_accessible(page, "console-desktop-alerts")
    shot(page, "console-alerts")
    shot(page, "console-desktop")

    # The resident panel: card, status, devices in words, map (no tiles here: the plain plot), timeline.
    card.get_by_role("button", name=re.compile("Astrid Østby")).click()
    panel = page.locator("#panel")
    expect(panel).to_contain_text("Astrid Østby")
    expect(panel.locator(".badge.status")).to_contain_text("Varsel")
    expect(panel).to_contain_text("Fallsensor")  # devices in words (the card's, or the registry's)
    expect(panel).to_contain_text("Røykvarsler")
    expect(panel).not_to_contain_text("fall_sensor")
    expect(panel.locator(".timeline")).to_contain_text("Fall registrert")
    expect(panel.locator("#resident-map")).to_have_attribute("data-map", "plot")
    assert panel.locator("#resident-map svg circle.plot-point").count() >= 2
    check_accessible(page, "console-desktop-resident")
    shot(page, "console-resident-panel")

    # "Jeg tar den": the card says who took it, here and on the other console; the focus
    # goes to the next step, "Løs …" of the same card (not to <body>).
    card.get_by_role("button", name=re.compile("Jeg tar den")).click()
    expect(card).to_have_attribute("data-state", "acknowledged")
    expect(card).to_contain_text("Tatt av ola")
    expect(card.get_by_role("button", name=re.compile("Jeg tar den"))).to_have_count(0)
    focus = page.evaluate(FOCUS)
    assert focus["card"] == fall_id and "resolve-open" in focus["cls"], focus
    check_accessible(page, "console-desktop-taken")  # a taken alert's card, too
    on_other = other.locator("#alerts li.alert[data-resident='r-3'][data-priority='high']")
    expect(on_other).to_have_attribute("data-state", "acknowledged")
    expect(on_other).to_contain_text("Tatt av ola")

    # Resolve with a note: the focus moves to the next alert card.
    page.keyboard.press("Enter")  # "Løs …" has the focus
    note = card.get_by_label(re.compile("Notat"))
    expect(note).to_be_focused()
    note.fill("Hjalp henne opp. Ingen skade.")
    card.get_by_role("button", name=re.compile("Marker som løst")).click()
    expect(card).to_have_count(0)
    focus = page.evaluate(FOCUS)  # the next card: the smoke alarm, or an alert another test left open
    assert focus["tag"] == "LI" and focus["card"] not in (None, fall_id), focus
    done = page.locator("#closed li[data-state='resolved']").first
    expect(done).to_contain_text("Løst av ola")
    expect(done).to_contain_text("Hjalp henne opp. Ingen skade.")
    expect(done).to_contain_text("Astrid Østby")
    expect(other.locator("#alerts li.alert[data-resident='r-3'][data-priority='high']")).to_have_count(0)
    expect(other.locator("#closed li[data-state='resolved']").first).to_contain_text("Hjalp henne opp")
    shot(page, "console-resolved")

    # The smoke alarm is resolved too, so the shared system is calm for the next tests;
    # with no alert left the focus goes to the list's heading.
    smoke = page.locator("#alerts li.alert[data-resident='r-3'][data-priority='critical']")
    smoke.get_by_role("button", name=re.compile("Løs")).click()
    smoke.get_by_label(re.compile("Notat")).fill("Brent mat. Luftet ut.")
    smoke.get_by_role("button", name=re.compile("Marker som løst")).click()
    expect(page.locator("#no-alerts")).to_be_visible()
    expect(page.locator("#alerts-heading")).to_be_focused()

    stored = wait_for(lambda: scalar(system.database, "SELECT count(*) FROM trygg.alerts WHERE resident_id = 'r-3'"
                                     " AND state = 'resolved' AND resolved_by = 'ola'"), lambda n: n == 2, timeout=5)
    assert stored == 2
    seen.check()


def test_an_alert_open_before_the_page_loaded_shows_the_names_and_closed_ones_stay_after_a_reload(
    system: System, context: BrowserContext,
) -> None:
    system.publish("d-4-alarm", "alarm.button")
    wait_for(lambda: scalar(system.database, "SELECT count(*) FROM trygg.alerts WHERE resident_id = 'r-4'"
                            " AND state = 'open'"), lambda n: n == 1, timeout=10, interval=0.05)
    page = context.new_page()
    seen = watch(page)
    live_console(page, system, "ola")
    card = page.locator("#alerts li.alert[data-resident='r-4']")
    expect(card.locator(".resident-link")).to_contain_text("Beboer 4")
    expect(card.locator(".team")).to_have_text("Hjemmetjenesten Øst")
    expect(card.locator(".last-event")).to_contain_text("Trygghetsalarm")

    card.get_by_role("button", name=re.compile("Jeg tar den")).click()
    card.get_by_role("button", name=re.compile("Løs")).click()
    card.get_by_label(re.compile("Notat")).fill("Trykket ved et uhell.")
    card.get_by_role("button", name=re.compile("Marker som løst")).click()
    expect(page.locator("#closed li[data-state='resolved']").first).to_contain_text("Trykket ved et uhell.")

    # After a reload "Nylig avsluttet" still lists it (GET /api/alerts?state=closed).
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    done = page.locator("#closed li[data-state='resolved']", has_text="Trykket ved et uhell.")
    expect(done).to_have_count(1)
    expect(done).to_contain_text("Beboer 4")
    expect(done).to_contain_text("Løst av ola")
    seen.check()


def test_a_note_being_typed_is_kept_when_a_colleague_resolves_first(system: System, context: BrowserContext) -> None:
    add_users(system.env, [("siri", "staff", ["--team", "east"])])()
    page = context.new_page()
    seen = watch(page)
    live_console(page, system, "ola")
    system.publish("d-5-alarm", "alarm.button")
    card = page.locator("#alerts li.alert[data-resident='r-5']")
    expect(card).to_have_attribute("data-state", "open")
    card.get_by_role("button", name=re.compile("Løs")).click()
    note = card.get_by_label(re.compile("Notat"))
    note.press_sequentially("Ringte datteren, hun er på vei")

    resolve_open_alerts(system, "r-5", note="Siri var der først.", username="siri")

    # The card stays with the text, says who resolved it and that the note is not saved.
    message = card.get_by_role("alert")
    expect(message).to_contain_text(re.compile(r"Varselet ble løst av siri kl\. \d\d:\d\d\."))
    expect(message).to_contain_text("Notatet ditt er ikke lagret — kopier det om du trenger det.")
    expect(message).to_contain_text("Your note was not saved")
    expect(card.locator(".badge.state")).to_contain_text("Løst")
    expect(note).to_have_value("Ringte datteren, hun er på vei")
    expect(note).to_be_focused()  # the form was not rebuilt under the user's fingers
    selected = note.evaluate("el => { el.select(); return el.value.slice(el.selectionStart, el.selectionEnd); }")
    assert selected == "Ringte datteren, hun er på vei"
    expect(card.get_by_role("button", name=re.compile("Marker som løst"))).to_have_count(0)
    expect(page.locator("#closed li[data-state='resolved']").first).to_contain_text("Siri var der først.")
    check_accessible(page, "console-desktop-note-kept")
    shot(page, "console-note-kept")

    card.get_by_role("button", name=re.compile("Fjern fra listen")).click()
    expect(card).to_have_count(0)
    focus = page.evaluate(FOCUS)  # the next card, or the heading when the list is empty
    assert focus["card"] or focus["id"] == "alerts-heading", focus
    seen.check()


def test_an_admin_sees_the_alerts_but_no_buttons_to_act_on_them(system: System, context: BrowserContext) -> None:
    add_users(system.env, [("admin1", "admin", [])])()
    system.publish("d-6-alarm", "alarm.button")
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{system.base_url}/login")
    page.get_by_label(re.compile("Brukernavn")).fill("admin1")
    page.get_by_label(re.compile("Passord")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Logg inn")).click()
    page.wait_for_url(re.compile(r"/(admin)?$"))  # an admin's own page is /admin where it exists
    page.goto(f"{system.base_url}/")
    card = page.locator("#alerts li.alert[data-resident='r-6']")
    expect(card).to_have_attribute("data-state", "open", timeout=8000)  # admins' consoles poll
    expect(card).to_contain_text("Beboer 6")
    expect(card.get_by_role("button", name=re.compile("Jeg tar den|Løs"))).to_have_count(0)
    expect(page.locator("#pages").get_by_role("link", name=re.compile("Admin"))).to_be_visible()
    shot(page, "console-admin")
    resolve_open_alerts(system, "r-6", note="Test")
    seen.check()


#: Stand-ins that record notifications, and a page that can be sent to the background:
#: headless Chromium is never hidden and shows no system notifications.
NOTIFICATION_SPY = """
window.__shown = [];
window.__hidden = false;
Object.defineProperty(Document.prototype, 'hidden', {get() { return window.__hidden; }});
Object.defineProperty(Document.prototype, 'visibilityState',
                      {get() { return window.__hidden ? 'hidden' : 'visible'; }});
const Real = window.Notification;
class Spy extends Real {
  constructor(title, options) { super(title, options); window.__shown.push({title, tag: options?.tag, via: 'page'}); }
}
Object.defineProperty(Spy, 'permission', {get() { return Real.permission; }});
Spy.requestPermission = (...a) => Real.requestPermission(...a);
window.Notification = Spy;
if (window.ServiceWorkerRegistration) {
  const show = ServiceWorkerRegistration.prototype.showNotification;
  ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
    window.__shown.push({title, tag: options?.tag, via: 'worker'});
    return show.call(this, title, options);
  };
}
"""


def test_a_new_alert_shows_a_notification_while_the_console_is_in_the_background(
    system: System, context: BrowserContext,
) -> None:
    context.grant_permissions(["notifications"], origin=system.base_url)
    context.add_init_script(NOTIFICATION_SPY)
    page = context.new_page()
    seen = watch(page)
    live_console(page, system, "ola")
    expect(page.locator("#notify")).to_be_hidden()  # allowed already: no button to ask

    system.publish("d-7-alarm", "alarm.button")  # in front: the page itself is enough
    expect(page.locator("#alerts li.alert[data-resident='r-7']")).to_have_count(1)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__shown") == []

    page.evaluate("window.__hidden = true")
    system.publish("d-8-alarm", "alarm.button")
    card = page.locator("#alerts li.alert[data-resident='r-8']")
    expect(card).to_have_count(1)
    alert_id = card.get_attribute("data-alert-id")
    shown = wait_for(lambda: page.evaluate("window.__shown"), lambda s: len(s) >= 1, timeout=5)
    assert [(s["title"], s["tag"]) for s in shown] == [("Trygghetsalarm – Beboer 8", alert_id)], shown

    system.publish("d-8-alarm", "alarm.button")  # pressed again: the same alert, no second notification
    page.wait_for_timeout(500)
    assert len(page.evaluate("window.__shown")) == 1
    for resident in ("r-7", "r-8"):
        resolve_open_alerts(system, resident, note="Test")
    seen.check()


def test_the_console_is_an_installable_app_that_never_shows_a_cached_alert_list(
    system: System, context: BrowserContext,
) -> None:
    page = context.new_page()
    seen = watch(page)
    live_console(page, system, "ola")
    manifest_url = page.locator("link[rel=manifest]").get_attribute("href")
    assert manifest_url == "/manifest.webmanifest"
    manifest = json.loads(page.request.get(f"{system.base_url}{manifest_url}").text())
    assert manifest["name"].startswith("Trygg") and manifest["short_name"] == "Trygg"
    assert (manifest["start_url"], manifest["display"]) == ("/", "standalone")
    sizes = {i["sizes"] for i in manifest["icons"] if i["type"] == "image/png"}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        assert page.request.get(f"{system.base_url}{icon['src']}").ok, icon
    favicon = page.request.get(f"{system.base_url}/favicon.ico")
    assert favicon.ok and favicon.body()[:4] == b"\x00\x00\x01\x00"

    # The service worker controls the page after a reload and caches the shell only.
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    assert page.evaluate("!!navigator.serviceWorker.controller")
    system.publish("d-9-alarm", "alarm.button")
    expect(page.locator("#alerts li.alert[data-resident='r-9']")).to_have_count(1)
    page.evaluate("fetch('/api/alerts?state=open').then(r => r.json())")
    cached = page.evaluate("caches.keys().then(ks => Promise.all(ks.map(k => caches.open(k)"
                           ".then(c => c.keys())))).then(all => all.flat().map(r => new URL(r.url).pathname))")
    assert "/" in cached and "/static/js/console.js" in cached
    assert not [p for p in cached if p.startswith("/api/") or p == "/healthz"], cached

    # Offline: the shell starts from the cache, says there is no connection, shows no alerts.
    context.set_offline(True)
    try:
        page.reload()
        conn = page.locator("#conn")
        expect(conn).to_have_attribute("data-state", "lost", timeout=8000)
        expect(conn).to_contain_text("Nye varsler vises ikke")
        expect(page.locator("#alerts li.alert")).to_have_count(0)
        shot(page, "console-offline")
    finally:
        context.set_offline(False)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    expect(page.locator("#alerts li.alert[data-resident='r-9']")).to_have_count(1)
    resolve_open_alerts(system, "r-9", note="Test")
    seen.check()


def test_pages_need_a_session_and_carry_no_resident_data(system: System, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(f"{system.base_url}/")
    expect(page).to_have_url(f"{system.base_url}/login")

    # A wrong password is said clearly, on the sign-in page.
    page.get_by_label(re.compile("Brukernavn")).fill("ola")
    page.get_by_label(re.compile("Passord")).fill("not the password")
    page.get_by_role("button", name=re.compile("Logg inn")).click()
    expect(page.get_by_role("alert")).to_contain_text("Feil brukernavn eller passord")
    expect(page).to_have_url(f"{system.base_url}/login")
    shot(page, "login-refused")

    login(page, system.base_url, "ola", "/")
    response = page.request.get(f"{system.base_url}/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "https://tile.openstreetmap.org" in csp
    assert response.headers["cache-control"] == "no-store"
    html = response.text()
    for secret in ("Kari", "Astrid", "r-1", "r-3", "d-3-"):
        assert secret not in html
    # Staff see only their own team's residents.
    assert page.request.get(f"{system.base_url}/api/residents/r-2/status").status == 404
    with api_as(system, "ola") as client:
        assert client.get("/api/residents/r-2/status").status_code == 404

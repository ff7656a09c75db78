// The staff console: live alerts over SSE, acknowledge and resolve, resident panel.
//
// Order of start-up: the residents' and teams' names first (a card never shows an id
// where a name is known), then subscribe to /api/alerts/stream, and (on every "open" of
// the stream, also after a reconnect) list the open and acknowledged alerts, so that
// nothing that changed while the connection was down is missed. A change is applied
// only if it is not older than what the page already shows (updated_at).
//
// On a phone (the CSS breakpoint, PHONE below) the header is one line with a menu, the
// alerts come first, and the resident panel takes the whole screen with a back control.
// The page registers /sw.js (the shell for offline start; never the API) and, when
// allowed, shows a system notification for a new critical or high alert while the
// console is in the background (docs/console.md).

import {
  ApiError, EVENT_WORDS, PRIORITY_WORDS, STATE_WORDS, api, clock, deviceWords, eventWords, fill, h,
  kindWords, languageToggle, notice, showApiError, showWho, t, timeAgo, toLogin, whoAmI,
} from "./common.js";
import { renderCard } from "./card.js";
import { SEEN_EVENT, renderTeamInsights } from "./insights.js";
import { showPositions } from "./map.js";
import { headerMenu, pageNav } from "./nav.js";

const PRIORITY_RANK = { critical: 0, high: 1, medium: 2, low: 3 };
const ACTIVE = new Set(["open", "acknowledged"]);
const LOUD = new Set(["critical", "high"]);
/** Roles that take and resolve alerts (dashboard/authz.py ROLES, ALERTS_CHANGE). */
const ACTORS = new Set(["staff", "operator"]);
const CLOSED_KEPT = 20;
const REMIND_MS = 30_000;
const WATCHDOG_MS = 20_000;
const POLL_MS = 5_000;
/** The layout switch of css/trygg.css: below it the console is a phone's. */
const PHONE = window.matchMedia("(max-width: 900px)");

const alerts = new Map(); // alert_id -> alert (active ones)
const closed = []; // newest first
const items = new Map(); // alert_id -> <li>
const kept = new Map(); // alert_id -> <li> of a closed alert whose unsaved note is still on screen
const resolving = new Set(); // alert ids this page is resolving right now
const residents = new Map(); // resident id -> resident (registry form)
const teams = new Map(); // team id -> name
let names = 0; // bumped when residents or teams are (re)loaded: cards show the names again
let me = null;
let source = null;
let selected = null; // resident id shown in the panel
let panelMap = null;

const $ = (id) => document.getElementById(id);

// --- connection state --------------------------------------------------------------------

let lostSince = null;

function setConn(state, detail) {
  const el = $("conn");
  if (state === "lost" && el.dataset.state !== "lost") lostSince = new Date().toISOString();
  el.dataset.state = state;
  el.className = `conn ${state}`;
  const dot = h("span", { class: "dot", "aria-hidden": "true" });
  if (state === "live") {
    fill(el, dot, t("Tilkoblet – direkte", "Live"));
  } else if (state === "lost") {
    const since = clock(lostSince);
    const offline = navigator.onLine === false;
    fill(el, dot, offline
      ? t(`Ingen nettforbindelse (siden ${since}). Nye varsler vises ikke før nettet er tilbake!`,
        `No network (since ${since}). New alerts are not shown until the network is back!`)
      : t(`Tilkobling brutt – prøver igjen (siden ${since}). Nye varsler vises ikke før forbindelsen er tilbake!`,
        `Connection lost – retrying (since ${since}). New alerts are not shown until the connection is back!`));
  } else if (state === "polling") {
    fill(el, dot, t("Oppdateres hvert 5. sekund", "Updating every 5 seconds"));
  } else {
    fill(el, dot, t("Kobler til …", "Connecting …"));
  }
  if (detail) el.title = detail;
}

function connect() {
  if (source) source.close();
  setConn(source ? "lost" : "connecting");
  source = new EventSource("/api/alerts/stream");
  source.addEventListener("open", () => {
    setConn("live");
    loadAlerts().catch(showError);
  });
  source.addEventListener("alert", (e) => {
    try {
      upsert(JSON.parse(e.data), true);
    } catch (err) {
      console.error("bad alert event", err);
    }
  });
  source.addEventListener("reset", () => {
    // The server dropped the subscription (we fell behind): list again and reconnect.
    setConn("lost");
    setTimeout(connect, 300);
  });
  source.addEventListener("expired", () => {
    source.close();
    toLogin();
  });
  source.addEventListener("error", () => {
    setConn("lost");
    if (source.readyState === EventSource.CLOSED) {
      // The server answered with an error (e.g. 401 after a sign-out): find out why.
      api("/api/auth/me").then(() => setTimeout(connect, 3000), () => setTimeout(connect, 3000));
    }
  });
}

/** A connection can die without the browser noticing; ask the server now and then. */
function watchdog() {
  setInterval(async () => {
    if (!source || source.readyState !== EventSource.OPEN) return;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      await fetch("/healthz", { signal: ctl.signal, cache: "no-store" });
    } catch {
      setConn("lost");
      connect();
    } finally {
      clearTimeout(timer);
    }
  }, WATCHDOG_MS);
  // The browser knows at once when the device drops off the network.
  window.addEventListener("offline", () => setConn("lost"));
  window.addEventListener("online", () => connect());
}
// --- server health -----------------------------------------------------------------------

const HEALTH_MS = 10_000;

/** A banner while /healthz says "degraded": the database, the broker or the server's disk
 *  (a local log that cannot be written, e.g. "disk full: spool"). */
function showHealth(doc) {
  const el = $("health");
  if (!doc || doc.status !== "degraded") {
    el.hidden = true;
    el.replaceChildren();
    return;
  }
  const lines = [];
  if (doc.local_log) {
    lines.push(t(`Trygg får ikke skrevet til disken på serveren (${doc.local_log}). Varsle driften.`,
      `Trygg cannot write to the server's disk (${doc.local_log}). Notify operations.`));
  }
  if (doc.broker === "down") {
    lines.push(t("Meldingsmegleren er nede – nye varsler kan utebli!", "The message broker is down – new alerts may not arrive!"));
  }
  if (doc.database === "down") {
    lines.push(t("Databasen svarer ikke – varsler vises fortsatt, historikk kan mangle.",
      "The database is not answering – alerts are still shown, history may be missing."));
  }
  fill(el, h("strong", {}, t("Driftsproblem", "Service problem")), lines.map((line) => h("div", {}, line)));
  el.hidden = false;
}

function watchHealth() {
  const check = async () => {
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      showHealth(await response.json());
    } catch { /* unreachable: the connection bar says so */ }
  };
  check();
  setInterval(check, HEALTH_MS);
}

function poll() {
  setConn("polling");
  const run = () => loadAlerts().then(() => setConn("polling"), () => setConn("lost"));
  run();
  setInterval(run, POLL_MS);
}

// --- alerts ------------------------------------------------------------------------------

function newer(a, b) {
  // true if `a` is strictly newer than `b`
  return new Date(a.updated_at).getTime() > new Date(b.updated_at).getTime();
}

async function loadAlerts() {
  const started = Date.now();
  const [open, acked] = await Promise.all([
    api("/api/alerts?state=open"), api("/api/alerts?state=acknowledged"),
  ]);
  const listed = new Set();
  for (const doc of [...open, ...acked]) {
    listed.add(doc.alert_id);
    upsert(doc, false);
  }
  // Alerts we show as active that the server no longer lists were closed while we were
  // not connected; drop them unless their news arrived after the list was asked for.
  for (const [id, doc] of alerts) {
    if (!listed.has(id) && (doc._seen || 0) < started) {
      alerts.delete(id);
      drop(id, null);
    }
  }
  render();
}

/** The alerts closed lately, from the database (so they are there after a reload). */
async function loadClosed() {
  let docs;
  try {
    docs = await api(`/api/alerts?state=closed&limit=${CLOSED_KEPT}`);
  } catch (err) {
    // A server without the history (422: no state "closed") keeps the list of this visit.
    if (!(err instanceof ApiError && err.status === 422)) showError(err);
    return;
  }
  for (const doc of docs) {
    if (alerts.has(doc.alert_id)) continue; // it is open again on this page: newer news
    const at = closed.findIndex((c) => c.alert_id === doc.alert_id);
    if (at >= 0) continue; // what arrived live is as new
    closed.push(doc);
  }
  closed.sort((a, b) => new Date(b.updated_at) - new Date(a.updated_at));
  closed.length = Math.min(closed.length, CLOSED_KEPT);
  render();
}

function upsert(doc, live) {
  const id = doc.alert_id;
  const prev = alerts.get(id) || closed.find((c) => c.alert_id === id);
  if (prev && newer(prev, doc)) return;
  doc._seen = Date.now();
  if (ACTIVE.has(doc.state)) {
    alerts.set(id, doc);
    if (live && doc.state === "open" && LOUD.has(doc.priority)
        && (!prev || (doc.escalation_level || 0) > (prev.escalation_level || 0))) {
      sound.alarm(doc.priority);
      notifier.alert(doc);
    }
  } else {
    alerts.delete(id);
    drop(id, doc);
    const at = closed.findIndex((c) => c.alert_id === id);
    if (at >= 0) closed.splice(at, 1);
    closed.unshift(doc);
    closed.length = Math.min(closed.length, CLOSED_KEPT);
  }
  render();
  if (!residents.has(doc.resident_id)) residentsChanged();
  if (selected && doc.resident_id === selected) refreshPanelSoon();
}

/** An alert of a resident the page has no name for (added to the registry since the page
 *  loaded): ask for the residents again, at most every 30 s. */
let residentsAskedAt = 0;
function residentsChanged() {
  if (Date.now() - residentsAskedAt < 30_000) return;
  residentsAskedAt = Date.now();
  loadResidents().then(render);
}

/** Take a closed alert's card off the list. A note being typed in it is not lost: the
 *  card stays, says who closed the alert, and keeps the text to copy. Focus that was in
 *  the card goes to the next card. */
function drop(id, doc) {
  const li = items.get(id) || kept.get(id);
  if (!li) return;
  items.delete(id);
  const note = li.querySelector("form.resolve textarea");
  const typed = note && !li.querySelector("form.resolve").hidden && note.value.trim();
  if (typed && !resolving.has(id)) {
    keepNote(li, doc);
    return;
  }
  kept.delete(id);
  // A resolve sent from this card disabled its button, which let go of the focus.
  const hadFocus = li.contains(document.activeElement) || (resolving.has(id) && document.activeElement === document.body);
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  if (hadFocus) focusCard(next);
}

/** Focus a card (or the list's heading when there is none). */
function focusCard(li) {
  const target = li && li.isConnected ? li : $("alerts").querySelector("li.alert");
  (target || $("alerts-heading")).focus();
}

function keepNote(li, doc) {
  const id = li.dataset.alertId;
  kept.set(id, li);
  li.className = "alert s-gone";
  li.dataset.state = doc ? doc.state : "closed";
  const [snb, sen] = STATE_WORDS[doc?.state] || ["Avsluttet", "Closed"];
  li.querySelector(".badge.state")?.replaceChildren(snb, h("span", { class: "en inline" }, ` / ${sen}`));
  const form = li.querySelector("form.resolve");
  const note = form.querySelector("textarea");
  note.readOnly = true;
  form.querySelectorAll("button").forEach((b) => b.remove());
  const at = doc ? clock(doc.updated_at).slice(0, 5) : null;
  const by = doc && doc.resolved_by;
  let nb, en;
  if (by) {
    nb = `Varselet ble løst av ${by} kl. ${at}.`;
    en = `The alert was resolved by ${by} at ${at}.`;
  } else if (at) {
    nb = `Varselet ble avsluttet kl. ${at}.`;
    en = `The alert was closed at ${at}.`;
  } else {
    nb = "Varselet er allerede avsluttet.";
    en = "The alert is already closed.";
  }
  let message = li.querySelector(".gone-message");
  if (!message) {
    message = h("div", { class: "gone-message", role: "alert" });
    li.querySelector(".actions").replaceChildren();
    form.before(message);
    form.after(h("div", { class: "form-buttons" },
      h("button", { type: "button", class: "secondary dismiss", onclick: () => dismiss(li) },
        t("Fjern fra listen", "Remove from the list"))));
  }
  fill(message, t(`${nb} Notatet ditt er ikke lagret — kopier det om du trenger det.`,
    `${en} Your note was not saved — copy it if you need it.`));
}

function dismiss(li) {
  kept.delete(li.dataset.alertId);
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  focusCard(next);
}

function sorted() {
  return [...alerts.values()].sort((a, b) =>
    (PRIORITY_RANK[a.priority] ?? 9) - (PRIORITY_RANK[b.priority] ?? 9)
    || new Date(b.opened_at) - new Date(a.opened_at));
}

/** The resident's name (with the id in small text), or the id while the name is unknown. */
function residentName(id) {
  const r = residents.get(id);
  return r ? [r.name, h("span", { class: "muted rid" }, ` ${id}`)] : id;
}

function teamName(id) {
  return teams.get(id) || id;
}

/** "Fallsensor" for the device that sent an event, from the resident's devices. */
function deviceOf(residentId, deviceId) {
  const device = residents.get(residentId)?.devices.find((d) => d.id === deviceId);
  return device ? deviceWords(device.kind) : null;
}

function render() {
  const list = $("alerts");
  const docs = sorted();
  docs.forEach((doc, index) => {
    let li = items.get(doc.alert_id);
    if (!li) {
      li = alertItem(doc);
      items.set(doc.alert_id, li);
    }
    if (li._rendered !== doc || li._names !== names) renderAlert(li, doc);
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
  });
  $("no-alerts").hidden = docs.length > 0;
  const open = docs.filter((d) => d.state === "open").length;
  fill($("alert-count"), t(`${docs.length} aktive, ${open} ikke tatt`, `${docs.length} active, ${open} not taken`));
  document.title = open ? `(${open}) Trygg – varsler` : "Trygg – varsler";
  fill($("closed"), closed.map(closedItem));
  $("closed-count").textContent = String(closed.length);
  renderResidents();
}

function alertItem(doc) {
  const li = h("li", { class: "alert", tabindex: "-1", dataset: { alertId: doc.alert_id } });
  li.append(h("div", { class: "alert-body" }), h("div", { class: "actions" }), resolveForm(doc.alert_id));
  li.addEventListener("click", (e) => {
    if (e.target.closest("button, form, a, textarea") || !li._rendered) return;
    showResident(li._rendered.resident_id);
  });
  return li;
}

function renderAlert(li, doc) {
  li._rendered = doc;
  li._names = names;
  li.className = `alert p-${doc.priority} s-${doc.state}`;
  li.dataset.state = doc.state;
  li.dataset.priority = doc.priority;
  li.dataset.resident = doc.resident_id;
  const [pnb, pen] = PRIORITY_WORDS[doc.priority] || [doc.priority, doc.priority];
  const [knb, ken] = kindWords(doc.kind);
  const [snb, sen] = STATE_WORDS[doc.state] || [doc.state, doc.state];
  const level = doc.escalation_level || 0;
  const chain = (doc.teams && doc.teams.length ? doc.teams : [doc.team_id]).map(teamName).join(" → ");
  const device = doc.last_event ? deviceOf(doc.resident_id, doc.last_event.device_id) : null;
  // "Jeg tar den" pressed here disabled itself, which let go of the focus.
  const focusWasHere = (li.contains(document.activeElement) && !li.querySelector("form.resolve").contains(document.activeElement))
    || (li._taking && document.activeElement === document.body);
  fill(li.querySelector(".alert-body"),
    h("div", { class: "alert-head" },
      h("span", { class: "badge priority" }, pnb, h("span", { class: "en inline" }, ` / ${pen}`)),
      h("span", { class: "kind" }, knb, h("span", { class: "en inline" }, ` · ${ken}`)),
      h("span", { class: "badge state" },
        doc.state === "acknowledged" && doc.acknowledged_by
          ? [`Tatt av ${doc.acknowledged_by}`, h("span", { class: "en inline" }, ` / Taken by ${doc.acknowledged_by}`)]
          : [snb, h("span", { class: "en inline" }, ` / ${sen}`)])),
    h("div", { class: "alert-who" },
      h("button", { type: "button", class: "link resident-link", onclick: () => showResident(doc.resident_id) },
        residentName(doc.resident_id)),
      h("span", { class: "team-of" }, "Team ", h("strong", { class: "team" }, teamName(doc.team_id)))),
    h("div", { class: "alert-meta" },
      level > 0
        ? h("span", { class: "escalated" }, `Eskalert nivå ${level}`,
          h("span", { class: "en inline" }, ` / Escalated level ${level}`), `: ${chain}`)
        : null,
      h("span", {}, "Åpnet ", h("span", { class: "en inline" }, "/ Opened "), timeAgo(doc.opened_at)),
      doc.event_count > 1 ? h("span", {}, `${doc.event_count} hendelser`, h("span", { class: "en inline" }, ` / ${doc.event_count} events`)) : null,
      doc.last_event
        ? h("span", { class: "muted last-event" }, eventWords(doc.last_event.type)[0],
          device ? [" · ", h("span", { class: "device" }, device[0])] : null)
        : null,
      doc.location ? h("span", {}, "📍 ", t("posisjon", "position")) : null));
  const actions = li.querySelector(".actions");
  const form = li.querySelector("form.resolve");
  const acts = ACTORS.has(me?.role);
  fill(actions,
    acts && doc.state === "open"
      ? h("button", { type: "button", class: "primary ack", onclick: (e) => acknowledge(doc.alert_id, e.currentTarget) },
        t("Jeg tar den", "I take it"))
      : null,
    acts && form.hidden
      ? h("button", { type: "button", class: "secondary resolve-open", "aria-expanded": "false",
        onclick: () => openResolve(li) }, t("Løs …", "Resolve …"))
      : null);
  // The button that had the focus may be gone (taken here or elsewhere): keep it in the card.
  if (focusWasHere && !li.contains(document.activeElement)) {
    (actions.querySelector(".resolve-open") || actions.querySelector("button") || li).focus();
  }
}

function resolveForm(alertId) {
  const noteId = `note-${alertId}`;
  const form = h("form", { class: "resolve", hidden: true },
    h("label", { for: noteId }, t("Notat: hva ble gjort?", "Note: what was done?")),
    h("textarea", { id: noteId, name: "note", rows: 2, maxlength: 2000 }),
    h("div", { class: "form-buttons" },
      h("button", { type: "submit", class: "primary resolve-submit" }, t("Marker som løst", "Mark resolved")),
      h("button", { type: "button", class: "secondary resolve-cancel",
        onclick: (e) => closeResolve(e.currentTarget.closest("li")) }, t("Avbryt", "Cancel"))));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    resolve(alertId, form);
  });
  return form;
}

function openResolve(li) {
  const form = li.querySelector("form.resolve");
  form.hidden = false;
  renderAlert(li, li._rendered);
  form.querySelector("textarea").focus();
}

function closeResolve(li) {
  li.querySelector("form.resolve").hidden = true;
  renderAlert(li, li._rendered);
  li.querySelector(".resolve-open")?.focus();
}

async function acknowledge(id, button) {
  const li = items.get(id);
  button.disabled = true;
  if (li) li._taking = true;
  try {
    upsert(await api(`/api/alerts/${encodeURIComponent(id)}/ack`, { method: "POST" }), false);
    notice(null);
    // Taken: the next step is to resolve it, so the focus goes there.
    items.get(id)?.querySelector(".resolve-open")?.focus();
  } catch (err) {
    button.disabled = false;
    if (err instanceof ApiError && err.status === 409) {
      notice("Varselet er allerede tatt eller avsluttet.", "The alert was already taken or closed.", "info");
      loadAlerts().catch(showError);
    } else showError(err);
  } finally {
    if (li) li._taking = false;
  }
}

async function resolve(id, form) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const note = form.querySelector("textarea").value.trim();
  resolving.add(id);
  try {
    upsert(await api(`/api/alerts/${encodeURIComponent(id)}/resolve`, { method: "POST", body: { note: note || null } }), false);
    notice(null);
  } catch (err) {
    button.disabled = false;
    resolving.delete(id);
    if (err instanceof ApiError && err.status === 409) {
      // A colleague was faster: the card keeps the note and says so (drop, keepNote).
      alerts.delete(id);
      drop(id, closed.find((c) => c.alert_id === id) || null);
      render();
      loadAlerts().catch(showError);
    } else showError(err);
    return;
  }
  resolving.delete(id);
}

function closedItem(doc) {
  const [knb, ken] = kindWords(doc.kind);
  const [snb, sen] = STATE_WORDS[doc.state] || [doc.state, doc.state];
  return h("li", { class: `alert closed p-${doc.priority} s-${doc.state}`, dataset: { alertId: doc.alert_id, state: doc.state } },
    h("div", { class: "alert-head" },
      h("span", { class: "badge state" }, snb, h("span", { class: "en inline" }, ` / ${sen}`)),
      h("span", { class: "kind" }, knb, h("span", { class: "en inline" }, ` · ${ken}`)),
      h("button", { type: "button", class: "link resident-link", onclick: () => showResident(doc.resident_id) },
        residentName(doc.resident_id))),
    h("div", { class: "alert-meta" },
      doc.resolved_by ? h("span", {}, `Løst av ${doc.resolved_by}`, h("span", { class: "en inline" }, ` / Resolved by ${doc.resolved_by}`)) : null,
      h("span", {}, timeAgo(doc.updated_at)),
      doc.note ? h("q", { class: "note" }, doc.note) : null));
}

/** Every error in both languages (common.js errorWords); a sign-out goes to /login. */
function showError(err) {
  if (err instanceof ApiError && err.status === 401) return;
  showApiError(err);
}
// --- sound ---------------------------------------------------------------------------------

const sound = {
  ctx: null,
  on: false,
  beeps: 0,
  lastRemind: 0,
  async toggle() {
    try {
      if (!this.ctx) this.ctx = new (window.AudioContext || window.webkitAudioContext)();
      if (this.ctx.state === "suspended") await this.ctx.resume();
    } catch (err) {
      console.warn("no audio", err);
      notice("Denne nettleseren kan ikke spille av lyd. Følg med på skjermen og håndsettet.",
        "This browser cannot play sound. Watch the screen and your handset.");
      return;
    }
    this.on = !this.on;
    const button = $("sound");
    button.setAttribute("aria-pressed", String(this.on));
    button.classList.toggle("off", !this.on);
    fill(button, this.on ? t("Lyd er på", "Sound is on") : t("Slå på lyd", "Turn on sound"));
    if (this.on) this.tone(660, 0, 0.12);
  },
  tone(freq, at, length) {
    const ctx = this.ctx;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "square";
    osc.frequency.value = freq;
    const start = ctx.currentTime + at;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.25, start + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + length);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start);
    osc.stop(start + length + 0.02);
  },
  /** Critical: three high beeps; high: two lower ones. */
  alarm(priority) {
    if (!this.on || !this.ctx) return;
    const critical = priority === "critical";
    const times = critical ? [0, 0.22, 0.44] : [0, 0.3];
    times.forEach((at) => this.tone(critical ? 988 : 740, at, 0.16));
    this.beeps += 1;
    this.lastRemind = Date.now();
    $("sound").dataset.beeps = String(this.beeps);
  },
  /** While a loud alert is open and nobody has taken it, remind every 30 s. */
  remind() {
    const waiting = sorted().find((d) => d.state === "open" && LOUD.has(d.priority));
    if (waiting && Date.now() - this.lastRemind >= REMIND_MS) this.alarm(waiting.priority);
  },
};

// --- system notifications ------------------------------------------------------------------

/** A system notification for a new critical or high alert while the console is in the
 *  background (another tab, the screen of another program). One per alert (tag = its id).
 *  Shown through the service worker where there is one (phones need that), else with
 *  `new Notification`. Clicking it brings the console to the front. */
const notifier = {
  shown: new Set(),
  supported: () => "Notification" in window,
  setup() {
    const button = $("notify");
    if (!this.supported() || !ACTORS.has(me?.role)) return;
    const show = () => {
      const state = Notification.permission;
      button.hidden = state === "granted";
      button.disabled = state === "denied";
      if (state === "denied") {
        fill(button, t("Varslinger er blokkert i nettleseren", "Notifications are blocked in the browser"));
      }
    };
    show();
    button.addEventListener("click", async () => {
      try {
        await Notification.requestPermission();
      } catch (err) {
        console.warn("notifications", err);
      }
      show();
    });
  },
  async alert(doc) {
    if (!this.supported() || Notification.permission !== "granted" || !document.hidden) return;
    if (this.shown.has(doc.alert_id)) return;
    this.shown.add(doc.alert_id);
    const name = residents.get(doc.resident_id)?.name || doc.resident_id;
    const title = `${kindWords(doc.kind)[0]} – ${name}`;
    const [pnb] = PRIORITY_WORDS[doc.priority] || [doc.priority];
    const options = {
      body: `${pnb} · ${teamName(doc.team_id)}`, tag: doc.alert_id, requireInteraction: doc.priority === "critical",
      icon: "/static/icons/icon-192.png", lang: "nb", data: { url: "/" },
    };
    try {
      const registration = await navigator.serviceWorker?.getRegistration("/");
      if (registration) {
        await registration.showNotification(title, options);
        return;
      }
    } catch (err) {
      console.warn("notification through the service worker", err);
    }
    const shown = new Notification(title, options);
    shown.onclick = () => {
      window.focus();
      shown.close();
    };
  },
};

/** The service worker keeps the page's shell for a start without network; it never
 *  answers for /api/ (sw.js), so what the console shows as live always is. */
function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((err) => console.warn("service worker", err));
}

// --- residents and teams ----------------------------------------------------------------------

async function loadResidents() {
  try {
    const list = await api("/api/residents?limit=5000");
    residents.clear();
    for (const r of list) residents.set(r.id, r);
    names += 1;
  } catch (err) {
    showError(err);
  }
}

async function loadTeams() {
  try {
    for (const team of await api("/api/teams")) teams.set(team.id, team.name);
    names += 1;
    showWho(me, teamName);
  } catch (err) {
    showError(err);
  }
}

function renderResidents() {
  const query = $("resident-filter").value.trim().toLowerCase();
  const withAlert = new Set([...alerts.values()].map((a) => a.resident_id));
  const shown = [...residents.values()]
    .filter((r) => !query || r.name.toLowerCase().includes(query) || r.id.toLowerCase().includes(query))
    .sort((a, b) => (withAlert.has(b.id) - withAlert.has(a.id)) || a.name.localeCompare(b.name, "nb"))
    .slice(0, 100);
  fill($("residents"), shown.map((r) => h("li", {},
    h("button", { type: "button", class: `link resident-link${r.id === selected ? " selected" : ""}`,
      "aria-current": r.id === selected ? "true" : null, onclick: () => showResident(r.id) },
    r.name, h("span", { class: "muted" }, ` ${r.id} · ${teamName(r.team)}`)),
    withAlert.has(r.id) ? h("span", { class: "badge small warn" }, "varsel / alert") : null)));
}

// --- changes worth a look (js/insights.js): calm, no sound, no notification --------------------

const INSIGHTS_MS = 5 * 60_000;

async function loadInsights() {
  try {
    await renderTeamInsights($("team-insights"), [...teams.keys()], (id) => showResident(id));
  } catch (err) {
    showError(err);
  }
}

// --- the resident panel -------------------------------------------------------------------

let panelTimer = null;
function refreshPanelSoon() {
  clearTimeout(panelTimer);
  panelTimer = setTimeout(() => selected && showResident(selected, { quiet: true }), 400);
}

/** Where the list was when the panel opened on a phone: back returns there. */
let listPlace = null;

/** On a phone the panel replaces the list (a view of its own, with "← Tilbake · Back"
 *  and the browser's back button); on a desktop it sits beside the list. */
function openPanel() {
  if (!PHONE.matches || document.body.classList.contains("panel-open")) return;
  listPlace = { scroll: window.scrollY, focus: document.activeElement };
  document.body.classList.add("panel-open");
  history.pushState({ panel: true }, "");
  window.scrollTo(0, 0);
}

function closePanel() {
  if (!document.body.classList.contains("panel-open")) return;
  document.body.classList.remove("panel-open");
  const place = listPlace;
  listPlace = null;
  window.scrollTo(0, place ? place.scroll : 0);
  const back = place?.focus?.isConnected ? place.focus
    : $("alerts").querySelector(`li.alert[data-resident="${CSS.escape(selected || "")}"]`);
  (back || $("alerts-heading")).focus({ preventScroll: true });
}

function back() {
  if (history.state?.panel) history.back(); // popstate closes the panel
  else closePanel();
}

const STATUS_WORDS = {
  ok: ["Alt er rolig", "All is well"],
  alert: ["Varsel", "Alert"],
  attention: ["Trenger oppmerksomhet", "Needs attention"],
};

async function showResident(id, { quiet = false } = {}) {
  const changed = selected !== id;
  selected = id;
  renderResidents();
  const panel = $("panel");
  const body = $("panel-body");
  panel.dataset.resident = id;
  if (!quiet) openPanel();
  if (changed) {
    fill(body, h("h2", { id: "panel-heading" }, residentName(id)), h("p", { class: "muted" }, t("Henter …", "Loading …")));
  }
  const until = new Date(Date.now() + 60_000).toISOString();
  const since = new Date(Date.now() - 24 * 3600_000).toISOString();
  let status, timeline;
  try {
    [status, timeline] = await Promise.all([
      api(`/api/residents/${encodeURIComponent(id)}/status`),
      api(`/api/residents/${encodeURIComponent(id)}/events?since=${encodeURIComponent(since)}&until=${encodeURIComponent(until)}&limit=2000`),
    ]);
  } catch (err) {
    if (selected !== id) return;
    if (err instanceof ApiError && err.status === 404) {
      fill(body, h("h2", { id: "panel-heading" }, residentName(id)),
        h("p", {}, t("Du har ikke tilgang til denne beboerens data, eller beboeren finnes ikke.",
          "You have no access to this resident's data, or the resident does not exist.")));
    } else showError(err);
    return;
  }
  if (selected !== id) return;
  await renderPanel(body, id, status, timeline);
  if (changed && !quiet) panel.focus({ preventScroll: true });
}

async function renderPanel(body, id, status, timeline) {
  const r = residents.get(id);
  const [snb, sen] = STATUS_WORDS[status.state] || [status.state, status.state];
  const events = [...timeline.events].sort((a, b) => new Date(b.ts) - new Date(a.ts));
  const points = events.filter((e) => e.type === "location" && e.data)
    .map((e) => ({ lat: e.data.lat, lon: e.data.lon, accuracy_m: e.data.accuracy_m, ts: e.ts })).reverse();
  if (status.location && !points.some((p) => p.ts === status.location.ts)) points.push(status.location);
  for (const a of status.open_alerts || []) if (a.location && Number.isFinite(a.location.lat)) points.push(a.location);

  // The resident card (js/card.js): name, address, access, contacts, devices' health.
  const card = h("div", { class: "card-box" });
  let carded = true; // the card shows the team and the devices with their health
  try {
    await renderCard(card, id);
  } catch (err) {
    if (!(err instanceof ApiError)) console.error(err);
    fill(card, h("h2", {}, r ? r.name : id));
    carded = false;
  }
  if (selected !== id) return;
  const heading = card.querySelector("h2, h3");
  if (heading) heading.id = "panel-heading";
  panelMap?.destroy();
  panelMap = null;
  const mapBox = h("div", { class: "map-box", id: "resident-map" });
  // What is happening now comes right under the name, before the card's address and access.
  const now = [
    h("div", { class: `status-line st-${status.state}` },
      h("span", { class: "badge status" }, snb, h("span", { class: "en inline" }, ` / ${sen}`)),
      h("span", {}, "Sist kontakt ", h("span", { class: "en inline" }, "/ Last contact "),
        status.last_contact_at ? timeAgo(status.last_contact_at) : "–")),
    h("h3", {}, t("Åpne varsler", "Open alerts")),
    (status.open_alerts || []).length
      ? h("ul", { class: "plain" }, status.open_alerts.map((a) => h("li", { class: `mini p-${a.priority}` },
        h("span", { class: "badge priority" }, (PRIORITY_WORDS[a.priority] || [a.priority])[0]), " ",
        kindWords(a.kind)[0], " · ", (STATE_WORDS[a.state] || [a.state])[0], " · ", clock(a.opened_at))))
      : h("p", { class: "muted" }, t("Ingen.", "None.")),
  ];
  if (heading) heading.after(...now);
  else card.prepend(...now);
  fill(body,
    card,
    r ? h("dl", { class: "facts" },
      carded ? null : [h("dt", {}, t("Team", "Team")), h("dd", {}, teamName(r.team)),
        h("dt", {}, t("Utstyr", "Devices")),
        h("dd", {}, h("ul", { class: "plain devices" }, r.devices.map((d) => {
          const [nb, en] = deviceWords(d.kind);
          return h("li", {}, nb, h("span", { class: "en inline" }, ` / ${en}`), h("span", { class: "muted" }, ` ${d.id}`));
        })))],
      h("dt", {}, t("Natt", "Night")), h("dd", {}, `${r.night.start}–${r.night.end}`),
      h("dt", {}, t("Posisjon", "Position")),
      h("dd", {}, timeline.locations_shown ? t("grunnlag gyldig", "legal basis valid") : t("ikke tillatt (mangler grunnlag)", "not allowed (no basis)")),
    ) : null,
    h("h3", {}, t("Kart", "Map")),
    points.length ? mapBox : h("p", { class: "muted" }, t("Ingen posisjoner siste døgn.", "No positions in the last 24 hours.")),
    h("h3", {}, t("Tidslinje siste døgn", "Timeline, last 24 hours")),
    timelineList(id, events.slice(0, 300), timeline.truncated || events.length > 300));
  if (points.length) panelMap = showPositions(mapBox, points);
}

function detail(e) {
  const d = e.data || {};
  const parts = [];
  if (d.confidence !== undefined) parts.push(`sikkerhet ${Math.round(d.confidence * 100)} %`);
  if (d.room) parts.push(d.room);
  if (d.door) parts.push(d.door);
  if (d.by) parts.push(`av ${d.by}`);
  if (d.source) parts.push(d.source);
  if (d.battery_pct !== undefined) parts.push(`batteri ${d.battery_pct} %`);
  if (d.lat !== undefined) parts.push(`${Number(d.lat).toFixed(5)}, ${Number(d.lon).toFixed(5)}${d.accuracy_m !== undefined ? ` ±${Math.round(d.accuracy_m)} m` : ""}`);
  return parts.join(" · ");
}

function timelineList(residentId, events, truncated) {
  if (!events.length) return h("p", { class: "muted" }, t("Ingen hendelser.", "No events."));
  return h("div", {},
    h("ol", { class: "timeline" }, events.map((e) => {
      const [nb, en] = EVENT_WORDS[e.type] || [e.type, e.type];
      return h("li", { class: `ev ev-${e.type.replace(".", "-")}` },
        h("time", { datetime: e.ts }, clock(e.ts)), " ",
        h("span", { class: "ev-type" }, nb, h("span", { class: "en inline" }, ` / ${en}`)),
        h("span", { class: "muted device" }, ` ${(deviceOf(residentId, e.device_id) || [e.device_id])[0]}`),
        detail(e) ? h("span", { class: "ev-detail" }, ` · ${detail(e)}`) : null);
    })),
    truncated ? h("p", { class: "muted" }, t("Bare de nyeste hendelsene vises.", "Only the newest events are shown.")) : null);
}

// --- start ------------------------------------------------------------------------------------

/** The header's menu is nav.js's; Escape also closes the resident view on a phone. */
function menu() {
  headerMenu();
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("panel-open")) back();
  });
}

/** Who is signed in; started without network (the shell from the service worker), ask
 *  again until Trygg answers, with the red connection bar meanwhile. */
async function signedIn() {
  for (;;) {
    try {
      return await whoAmI();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err; // on the way to /login
      setConn("lost");
      await new Promise((done) => {
        const timer = setTimeout(done, 3000);
        window.addEventListener("online", () => { clearTimeout(timer); done(); }, { once: true });
      });
    }
  }
}

async function main() {
  languageToggle();
  menu();
  $("sound").addEventListener("click", () => sound.toggle());
  $("resident-filter").addEventListener("input", renderResidents);
  $("panel-back").addEventListener("click", back);
  window.addEventListener("popstate", closePanel);
  PHONE.addEventListener("change", () => PHONE.matches || closePanel());
  $("closed-box").open = true;
  registerServiceWorker();
  setInterval(() => sound.remind(), 5000);
  me = await signedIn();
  document.body.dataset.role = me.role;
  pageNav(me);
  notifier.setup();
  watchHealth();
  // Names before the first alert, so that no card is drawn with an id alone.
  residentsAskedAt = Date.now();
  await Promise.all([loadResidents(), loadTeams()]);
  render();
  loadClosed();
  loadInsights();
  setInterval(loadInsights, INSIGHTS_MS);
  document.addEventListener(SEEN_EVENT, loadInsights);
  if (me.role === "admin") {
    poll(); // the live stream is for staff and operators
  } else {
    connect();
    watchdog();
  }
  window.tryggConsole = { alerts, closed, sound, reconnect: connect };
}

main().catch((err) => {
  if (!(err instanceof ApiError && err.status === 401)) showError(err);
});

// Shared by every page: building DOM, bilingual text, API calls with the session
// cookie, times in Norwegian and English, the header (who is signed in, language).

/** Build an element: h("p", {class: "x", onclick: fn}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Norwegian text with its English version beneath (hidden by the language toggle). */
export function t(nb, en, tag = "span") {
  const frag = document.createDocumentFragment();
  frag.append(h(tag, { lang: "nb", class: "nb" }, nb));
  if (en) frag.append(" ", h(tag, { lang: "en", class: "en" }, en)); // " ": names read "Løs … Resolve …"
  return frag;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

/** Call the API with the session cookie; JSON in and out. A 401 goes to the sign-in page. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "not signed in");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const doc = await response.json();
      detail = typeof doc.detail === "string" ? doc.detail : JSON.stringify(doc.detail);
    } catch { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

export function toLogin() {
  window.location.assign("/login");
}

// --- times ---------------------------------------------------------------------------

const clockNb = new Intl.DateTimeFormat("nb-NO", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTimeNb = new Intl.DateTimeFormat("nb-NO", {
  weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
});

export function parseTime(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "14:03:07" today, else "lør. 21. nov. 14:03". */
export function clock(value) {
  const d = parseTime(value);
  if (!d) return "–";
  const today = new Date();
  return d.toDateString() === today.toDateString() ? clockNb.format(d) : dateTimeNb.format(d);
}

/** ["for 3 min siden", "3 min ago"]. */
export function ago(value, now = Date.now()) {
  const d = parseTime(value);
  if (!d) return ["–", "–"];
  const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (s < 45) return ["akkurat nå", "just now"];
  const m = Math.round(s / 60);
  if (m < 60) return [`for ${m} min siden`, `${m} min ago`];
  const hr = Math.round(m / 60);
  if (hr < 48) return [`for ${hr} t siden`, `${hr} h ago`];
  const days = Math.round(hr / 24);
  return [`for ${days} døgn siden`, `${days} days ago`];
}

/** A <time> with the clock time and "(for 3 min siden / 3 min ago)", refreshed by tick(). */
export function timeAgo(value) {
  const el = h("time", { datetime: value || "", class: "ago", "data-ago": value || "" });
  renderAgo(el);
  return el;
}

function renderAgo(el) {
  const value = el.dataset.ago;
  const [nb, en] = ago(value);
  fill(el, clock(value), " ", h("span", { class: "muted" }, `(${nb}`), h("span", { class: "en inline muted" }, ` / ${en}`),
    h("span", { class: "muted" }, ")"));
}

/** Refresh every "… ago" on the page once a minute (and now). */
export function tick() {
  document.querySelectorAll("time[data-ago]").forEach(renderAgo);
}
setInterval(tick, 30_000);

// --- the header ------------------------------------------------------------------------

const ROLE_NAMES = {
  staff: ["helsepersonell", "staff"],
  operator: ["operatør", "operator"],
  admin: ["administrator", "administrator"],
  relative: ["pårørende", "relative"],
  researcher: ["forsker", "researcher"],
};

export function roleName(role) {
  return ROLE_NAMES[role] || [role, role];
}

/** Who is signed in (GET /api/auth/me), shown in the header's #who. */
export async function whoAmI() {
  const me = await api("/api/auth/me");
  showWho(me);
  if (me.teams.length && CARE_ROLES.has(me.role)) {
    // The teams' names ("Hjemmetjenesten Øst", not `east`), when they come.
    api("/api/teams").then((teams) => {
      const names = new Map(teams.map((team) => [team.id, team.name]));
      showWho(me, (id) => names.get(id) || id);
    }).catch(() => {});
  }
  return me;
}

const CARE_ROLES = new Set(["staff", "operator", "admin"]);

/** Fill the header's #who: name, role and teams (`teamName(id)` gives a team's name). */
export function showWho(me, teamName = (id) => id) {
  const who = document.getElementById("who");
  if (!who) return;
  const [nb, en] = roleName(me.role);
  const teams = me.teams.length ? ` · ${me.teams.map(teamName).join(", ")}` : "";
  fill(who, h("strong", {}, me.username), ` · ${nb}`, h("span", { class: "en inline" }, ` / ${en}`), teams);
}

/** The "English on/off" button; the choice is remembered in this browser. */
export function languageToggle() {
  const button = document.getElementById("lang-toggle");
  const apply = (hidden) => {
    document.body.classList.toggle("no-en", hidden);
    if (button) {
      button.setAttribute("aria-pressed", String(!hidden));
      button.textContent = hidden ? "Vis engelsk · Show English" : "Skjul engelsk · Hide English";
    }
  };
  let hidden = localStorage.getItem("trygg.hideEnglish") === "1";
  apply(hidden);
  button?.addEventListener("click", () => {
    hidden = !hidden;
    localStorage.setItem("trygg.hideEnglish", hidden ? "1" : "0");
    apply(hidden);
  });
}

/** A message in the page's #notice area (role=alert for errors). */
export function notice(nb, en, kind = "error") {
  const box = document.getElementById("notice");
  if (!box) return;
  if (!nb) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  box.hidden = false;
  box.className = `notice ${kind}`;
  fill(box, t(nb, en));
}

/** What went wrong with an API call, in Norwegian and English: [nb, en]. The server's
 * own message (English) is added after the English sentence only. */
export function errorWords(err) {
  const status = err instanceof ApiError ? err.status : 0;
  const detail = err instanceof ApiError && err.detail ? ` (${err.detail})` : "";
  const words = {
    0: ["Fikk ikke kontakt med Trygg. Sjekk nettet og prøv igjen.", "Could not reach Trygg. Check the network and try again."],
    400: ["Forespørselen var ugyldig.", "The request was not valid."],
    401: ["Du er logget ut. Logg inn igjen.", "You are signed out. Sign in again."],
    403: ["Du har ikke tilgang til dette.", "You may not do this."],
    404: ["Finnes ikke, eller du har ikke tilgang.", "Not found, or you may not see it."],
    409: ["Noen andre endret dette samtidig. Siden er oppdatert.", "Someone else changed this at the same time. The page is updated."],
    413: ["For stort.", "Too large."],
    422: ["Noen felt er ikke gyldige.", "Some fields are not valid."],
    429: ["For mange forsøk. Vent litt og prøv igjen.", "Too many attempts. Wait a moment and try again."],
    503: ["Trygg er midlertidig utilgjengelig. Prøv igjen om litt.", "Trygg is briefly unavailable. Try again shortly."],
  };
  const [nb, en] = words[status] || (status >= 500
    ? ["Noe gikk galt hos Trygg. Prøv igjen.", "Something went wrong in Trygg. Try again."]
    : ["Det gikk ikke.", "That did not work."]);
  return [nb, en + detail];
}

/** Show an API error in the page's #notice area, in both languages. */
export function showApiError(err) {
  if (!(err instanceof ApiError)) console.error(err);
  const [nb, en] = errorWords(err);
  notice(nb, en);
}

// --- words ---------------------------------------------------------------------------

export const KIND_WORDS = {
  smoke: ["Røykvarsler", "Smoke alarm"],
  alarm: ["Trygghetsalarm", "Safety alarm"],
  fall: ["Fall", "Fall"],
  wandering: ["Ute om natten", "Wandering at night"],
  geofence_exit: ["Utenfor trygg sone", "Left safe zone"],
  door_open: ["Dør står åpen", "Door left open"],
  inactivity: ["Ingen aktivitet", "No activity"],
  device_offline: ["Utstyr svarer ikke", "Device offline"],
  battery_low: ["Lavt batteri", "Battery low"],
};

export function kindWords(kind) {
  return KIND_WORDS[kind] || [kind, kind];
}

/** Device kinds (docs/contract.md, trygg/contract.py DeviceKind) in words: [nb, en]. */
export const DEVICE_WORDS = {
  alarm_unit: ["Trygghetsalarm", "Safety alarm"],
  auto_alarm: ["Selvutløsende alarm", "Automatic alarm"],
  fall_sensor: ["Fallsensor", "Fall sensor"],
  smoke_detector: ["Røykvarsler", "Smoke detector"],
  door_sensor: ["Dørsensor", "Door sensor"],
  door_lock: ["Dørlås", "Door lock"],
  motion_sensor: ["Bevegelsessensor", "Motion sensor"],
  gps_tracker: ["GPS-sporer", "GPS tracker"],
  phone: ["Mobiltelefon", "Mobile phone"],
};

export function deviceWords(kind) {
  return DEVICE_WORDS[kind] || [kind, kind];
}

export const PRIORITY_WORDS = {
  critical: ["Kritisk", "Critical"],
  high: ["Høy", "High"],
  medium: ["Middels", "Medium"],
  low: ["Lav", "Low"],
};

export const STATE_WORDS = {
  open: ["Åpen", "Open"],
  acknowledged: ["Tatt", "Acknowledged"],
  resolved: ["Løst", "Resolved"],
  cancelled: ["Avbrutt", "Cancelled"],
};

export const EVENT_WORDS = {
  "alarm.button": ["Alarmknapp trykket", "Alarm button pressed"],
  "alarm.auto": ["Selvutløsende alarm", "Automatic alarm"],
  "alarm.cancel": ["Alarm avbrutt av beboer", "Alarm cancelled by resident"],
  "fall.detected": ["Fall registrert", "Fall detected"],
  "smoke.detected": ["Røyk registrert", "Smoke detected"],
  "smoke.cleared": ["Røyk borte", "Smoke cleared"],
  "door.opened": ["Dør åpnet", "Door opened"],
  "door.closed": ["Dør lukket", "Door closed"],
  "door.unlocked": ["Dør låst opp", "Door unlocked"],
  "door.locked": ["Dør låst", "Door locked"],
  motion: ["Bevegelse", "Motion"],
  location: ["Posisjon", "Position"],
  heartbeat: ["Livstegn fra utstyr", "Device heartbeat"],
  "battery.low": ["Lavt batteri", "Battery low"],
};

export function eventWords(type) {
  return EVENT_WORDS[type] || [type, type];
}

export const EVENT_TYPES = Object.keys(EVENT_WORDS);

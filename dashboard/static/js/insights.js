// Early signs of decline (docs/insights.md, docs/console.md "Changes worth a look"):
// the resident card's section "Endringer å se på / Changes worth a look" — each notice
// with its reason, the day, a small chart of the feature's last 60 days against the
// baseline band, and "Sett / Mark seen" with a note — and the console's team list.
//
// A notice is a review item, never an alarm: calm colours (no alarm colours), no sound,
// no system notification. The server decides who may see it (404 to everyone else) and
// writes the reasons in both languages; the feature names and units come with the answer
// (GET /api/residents/{id}/insights), so this file holds no word list of the features.

import { ApiError, api, clock, fill, h, showApiError, t } from "./common.js";

/** Days the chart shows. */
export const CHART_DAYS = 60;
/** Fired on `document` after a notice was marked seen: lists that show it refresh. */
export const SEEN_EVENT = "trygg:insight-seen";

const SVG = "http://www.w3.org/2000/svg";
const dayNb = new Intl.DateTimeFormat("nb-NO", { day: "numeric", month: "short", timeZone: "UTC" });
const dayEn = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
const weekdayNb = new Intl.DateTimeFormat("nb-NO", { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" });
const weekdayEn = new Intl.DateTimeFormat("en-GB", { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" });

/** A calendar day "2026-12-05" as a Date at UTC midnight (formatted in UTC: no zone shift). */
function dayOf(text) {
  return new Date(`${text}T00:00:00Z`);
}

/** ["lørdag 5. desember", "Saturday 5 December"]. */
export function dayWords(text) {
  const d = dayOf(text);
  return [weekdayNb.format(d), weekdayEn.format(d)];
}

/** A feature's value in words: a clock time as HH:MM, else with the feature's decimals and unit. */
export function valueWords(value, feature, lang = "nb") {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  if (feature.clock) {
    const minutes = Math.round((((value % 24) + 24) % 24) * 60);
    return `${String(Math.floor(minutes / 60) % 24).padStart(2, "0")}:${String(minutes % 60).padStart(2, "0")}`;
  }
  const digits = Math.max(0, Math.min(3, feature.decimals ?? 1));
  const number = new Intl.NumberFormat(lang === "nb" ? "nb-NO" : "en-GB",
    { maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(value);
  const unit = (feature.unit || ["", ""])[lang === "nb" ? 0 : 1];
  return unit ? `${number} ${unit}` : number;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

/** Runs of consecutive points whose value is known: [[{x, y}, …], …]. */
function runs(points) {
  const out = [];
  let run = [];
  for (const p of points) {
    if (p === null) {
      if (run.length) out.push(run);
      run = [];
    } else run.push(p);
  }
  if (run.length) out.push(run);
  return out;
}

const fmt = (n) => n.toFixed(1);

/**
 * A small chart of feature `index` over the `CHART_DAYS` days up to the newest of `days`:
 * the baseline band (low–high, shaded), the usual value (dashed), the day's values
 * (a line through days that count; hollow grey rings for days that do not: sensors
 * silent or away) and the notice's day (a thin vertical line). Read out as one image
 * with a sentence: the usual value and the latest.
 */
export function featureChart(days, index, feature, noticeDay) {
  const width = 320;
  const height = 120;
  const pad = { left: 38, right: 8, top: 8, bottom: 18 };
  const last = days.length ? dayOf(days[days.length - 1].day) : dayOf(noticeDay);
  const first = new Date(last.getTime() - (CHART_DAYS - 1) * 86_400_000);
  const byDay = new Map(days.map((d) => [d.day, d]));
  const series = [];
  for (let i = 0; i < CHART_DAYS; i += 1) {
    const key = new Date(first.getTime() + i * 86_400_000).toISOString().slice(0, 10);
    series.push({ i, key, d: byDay.get(key) });
  }
  const numbers = [];
  for (const { d } of series) {
    if (!d) continue;
    for (const v of [d.values[index], d.usual[index], d.low[index], d.high[index]]) {
      if (Number.isFinite(v)) numbers.push(v);
    }
  }
  let lo = numbers.length ? Math.min(...numbers) : 0;
  let hi = numbers.length ? Math.max(...numbers) : 1;
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const span = hi - lo;
  lo -= span * 0.08;
  hi += span * 0.08;
  const x = (i) => pad.left + (i / (CHART_DAYS - 1)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);
  const at = (key) => (d) => (d && Number.isFinite(d[key][index]) ? d[key][index] : null);

  const band = runs(series.map(({ i, d }) => {
    const low = at("low")(d);
    const high = at("high")(d);
    return low !== null && high !== null ? { x: x(i), low: y(low), high: y(high) } : null;
  })).map((run) => {
    const upper = run.map((p) => `${fmt(p.x)},${fmt(p.high)}`);
    const lower = run.slice().reverse().map((p) => `${fmt(p.x)},${fmt(p.low)}`);
    return svg("polygon", { class: "band", points: [...upper, ...lower].join(" ") });
  });
  const usual = runs(series.map(({ i, d }) => {
    const v = at("usual")(d);
    return v !== null ? { x: x(i), y: y(v) } : null;
  })).map((run) => svg("polyline", { class: "usual", points: run.map((p) => `${fmt(p.x)},${fmt(p.y)}`).join(" ") }));
  const counted = series.map(({ i, d }) => {
    const v = at("values")(d);
    return v !== null && d.usable && !d.away ? { x: x(i), y: y(v) } : null;
  });
  const line = runs(counted).map((run) => svg("polyline", { class: "values", points: run.map((p) => `${fmt(p.x)},${fmt(p.y)}`).join(" ") }));
  const dots = counted.filter(Boolean).map((p) => svg("circle", { class: "value", cx: fmt(p.x), cy: fmt(p.y), r: 1.8 }));
  const skipped = series.filter(({ d }) => d && Number.isFinite(d.values[index]) && (!d.usable || d.away))
    .map(({ i, d }) => svg("circle", { class: "skipped", cx: fmt(x(i)), cy: fmt(y(d.values[index])), r: 2.2 }));
  const mark = series.find((s) => s.key === noticeDay);
  const marker = mark ? svg("line", { class: "marker", x1: fmt(x(mark.i)), x2: fmt(x(mark.i)), y1: pad.top, y2: height - pad.bottom }) : null;
  const text = (tx, ty, words, anchor = "start") => svg("text", { x: tx, y: ty, "text-anchor": anchor }, document.createTextNode(words));
  const axis = [
    text(pad.left - 4, y(hi - span * 0.08) + 4, valueWords(hi - span * 0.08, { ...feature, unit: null }), "end"),
    text(pad.left - 4, y(lo + span * 0.08) + 4, valueWords(lo + span * 0.08, { ...feature, unit: null }), "end"),
    text(pad.left, height - 4, dayNb.format(first)),
    text(width - pad.right, height - 4, dayNb.format(last), "end"),
  ];

  const newest = [...series].reverse().find(({ d }) => d && Number.isFinite(d.values[index]));
  const usualNow = [...series].reverse().find(({ d }) => d && Number.isFinite(d.usual[index]));
  const said = (lang) => {
    const [label, from, to, now, usualWord, days60] = lang === "nb"
      ? [feature.label[0], dayNb.format(first), dayNb.format(last), "sist", "vanlig", `siste ${CHART_DAYS} dager`]
      : [feature.label[1], dayEn.format(first), dayEn.format(last), "latest", "usual", `last ${CHART_DAYS} days`];
    const parts = [`${label}, ${days60} (${from}–${to})`];
    if (usualNow) parts.push(`${usualWord} ${valueWords(usualNow.d.usual[index], feature, lang)}`);
    if (newest) parts.push(`${now} ${valueWords(newest.d.values[index], feature, lang)}`);
    return parts.join(", ");
  };
  const label = `${said("nb")}. ${said("en")}.`;
  return svg("svg", {
    class: "insight-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet", focusable: "false",
  }, svg("title", {}, document.createTextNode(label)),
  svg("line", { class: "axis", x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }),
  svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }),
  ...band, ...usual, marker, ...line, ...dots, ...skipped, ...axis);
}

function legend() {
  return h("p", { class: "insight-legend small muted", "aria-hidden": "true" },
    h("span", { class: "key key-values" }), t("dag for dag", "day by day", "span"), " ",
    h("span", { class: "key key-band" }), t("vanlig område", "usual range", "span"), " ",
    h("span", { class: "key key-usual" }), t("vanlig", "usual", "span"));
}

/** "Sett av ola, lør. 5. des. 14:03" and the note. */
function seenLine(n) {
  return h("div", { class: "insight-seen" },
    h("p", {}, h("strong", {}, t(`Sett av ${n.seen_by}`, `Seen by ${n.seen_by}`, "span")), " · ",
      h("time", { datetime: n.seen_at }, clock(n.seen_at))),
    n.seen_note ? h("p", { class: "insight-note" }, n.seen_note) : null);
}

function seenForm(n, onSeen) {
  const noteId = `insight-note-${n.notice_id}`;
  const form = h("form", { class: "insight-seen-form" },
    h("label", { for: noteId }, t("Notat (valgfritt)", "Note (optional)", "span")),
    h("textarea", { id: noteId, name: "note", rows: 2, maxlength: 1000 }),
    h("div", { class: "form-buttons" },
      h("button", { type: "submit", class: "secondary insight-mark" }, t("Sett", "Mark seen", "span"))));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const note = form.elements.note.value.trim();
      const done = await api(`/api/insights/notices/${n.notice_id}/seen`, { method: "POST", body: note ? { note } : {} });
      onSeen(done);
    } catch (err) {
      button.disabled = false;
      if (err instanceof ApiError && err.status === 409) onSeen(null); // seen by someone else meanwhile
      else showApiError(err);
    }
  });
  return form;
}

function noticeItem(doc, n, level, reload) {
  const index = doc.features.findIndex((f) => f.name === n.feature);
  const feature = index >= 0 ? doc.features[index] : { name: n.feature, label: n.label, unit: ["", ""], decimals: 1 };
  const [dnb, den] = dayWords(n.day);
  const li = h("li", { class: `insight ${n.seen_at ? "is-seen" : "is-open"}`, dataset: { notice: n.notice_id, feature: n.feature } });
  fill(li,
    h(`h${level}`, { class: "insight-label" }, t(n.label[0], n.label[1], "span")),
    h("p", { class: "insight-reason" }, t(n.reason[0], n.reason[1])),
    h("p", { class: "small muted insight-day" }, t(`Merket ${dnb}`, `Raised on ${den}`, "span")),
    index >= 0 ? h("figure", { class: "insight-figure" }, featureChart(doc.days, index, feature, n.day), legend()) : null,
    n.seen_at ? seenLine(n) : doc.may_mark_seen ? seenForm(n, (done) => {
      document.dispatchEvent(new CustomEvent(SEEN_EVENT, { detail: done }));
      reload();
    }) : null);
  return li;
}

/**
 * The card's section "Endringer å se på / Changes worth a look" for `residentId`, its
 * heading of `level`: filled when the answer comes; notices not yet seen first. Shows
 * "none" when there is nothing, and nothing at all when the caller may not see it.
 */
export function insightsSection(residentId, level = 2) {
  const section = h("section", { class: "card-insights", "aria-labelledby": `insights-${residentId}` });
  const heading = () => h(`h${level}`, { class: "card-section", id: `insights-${residentId}` },
    t("Endringer å se på", "Changes worth a look", "span"));
  fill(section, heading(), h("p", { class: "muted" }, t("Henter …", "Loading …")));
  const load = async () => {
    let doc;
    try {
      doc = await api(`/api/residents/${encodeURIComponent(residentId)}/insights?days=90`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) section.remove();
      else fill(section, heading(), h("p", { class: "muted" }, t("Kunne ikke hente endringene nå.", "Could not fetch the changes now.")));
      return;
    }
    const notices = [...doc.notices].sort((a, b) => (!!a.seen_at - !!b.seen_at) || b.day.localeCompare(a.day));
    fill(section, heading(),
      notices.length
        ? h("ul", { class: "insight-list" }, notices.map((n) => noticeItem(doc, n, Math.min(level + 1, 6), load)))
        : h("p", { class: "muted" }, t("Ingen endringer å se på.", "No changes worth a look.")));
  };
  load();
  return section;
}

// --- the team list (the console) -------------------------------------------------------------

/**
 * The console's list "Endringer å se på": every open notice of the caller's teams
 * (`teamIds`), newest first, each with the resident (a button: `onResident(id)`), the
 * reason and the day; seen ones of the last 14 days folded away. Resolves to the number
 * of open notices.
 */
export async function renderTeamInsights(container, teamIds, onResident) {
  const answers = await Promise.all(teamIds.map((team) => api(`/api/teams/${encodeURIComponent(team)}/insights`)
    .catch((err) => (err instanceof ApiError && err.status === 404 ? null : Promise.reject(err)))));
  const open = new Map();
  const seen = new Map();
  for (const doc of answers.filter(Boolean)) {
    for (const n of doc.open) open.set(n.notice_id, n);
    for (const n of doc.seen) seen.set(n.notice_id, n);
  }
  const openList = [...open.values()].sort((a, b) => b.day.localeCompare(a.day) || b.notice_id - a.notice_id);
  const seenList = [...seen.values()].sort((a, b) => b.seen_at.localeCompare(a.seen_at));
  const item = (n) => {
    const [dnb, den] = dayWords(n.day);
    return h("li", { class: `team-insight ${n.seen_at ? "is-seen" : "is-open"}`, dataset: { notice: n.notice_id, resident: n.resident.id } },
      h("button", { type: "button", class: "link resident-link", onclick: () => onResident(n.resident.id) }, n.resident.name),
      h("div", { class: "team-insight-reason" }, t(n.reason[0], n.reason[1])),
      h("div", { class: "small muted" }, t(`Merket ${dnb}`, `Raised on ${den}`, "span"),
        n.seen_at ? [" · ", t(`sett av ${n.seen_by}`, `seen by ${n.seen_by}`, "span")] : null));
  };
  fill(container,
    openList.length ? h("ul", { class: "team-insights" }, openList.map(item))
      : h("p", { class: "empty" }, t("Ingen nye endringer å se på.", "No new changes worth a look.")),
    seenList.length ? h("details", { class: "team-insights-seen" },
      h("summary", {}, t(`Sett siste 14 dager (${seenList.length})`, `Seen in the last 14 days (${seenList.length})`, "span")),
      h("ul", { class: "team-insights" }, seenList.map(item))) : null);
  return openList.length;
}

// The shift page (docs/shift.md): a team and 8/12/24 hours; a summary (how many alerts,
// median time to take and to resolve), every alert of the period with who took and
// resolved it and after how long, the notes, and the same as a CSV download.
// Everything comes from GET /api/shift; nothing about residents is in the HTML.

import { ApiError, STATE_WORDS, api, clock, fill, h, kindWords, languageToggle, showApiError, t, whoAmI } from "./common.js";
import { pageNav } from "./nav.js";

const $ = (id) => document.getElementById(id);

/** Who closed an alert, in words, when it was not a person. */
const ACTOR_WORDS = {
  system: ["Trygg (automatisk)", "Trygg (automatic)"],
  resident: ["Beboeren", "The resident"],
};

function actor(name) {
  const words = ACTOR_WORDS[name];
  return words ? t(words[0], words[1]) : name;
}

/** ["3 min 20 s", "3 min 20 s"], ["1 t 5 min", "1 h 5 min"]. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return null;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return [`${s} s`, `${s} s`];
  const m = Math.floor(s / 60);
  if (m < 10) return [`${m} min ${s % 60} s`, `${m} min ${s % 60} s`];
  if (m < 60) return [`${m} min`, `${m} min`];
  const hours = Math.floor(m / 60);
  return [`${hours} t ${m % 60} min`, `${hours} h ${m % 60} min`];
}

function durationText(seconds) {
  const words = duration(seconds);
  return words ? t(words[0], words[1]) : "–";
}

/** The team and hours chosen, also kept in the address (a reload shows the same). */
function chosen() {
  const team = $("team").value;
  const hours = document.querySelector('input[name="hours"]:checked')?.value || "8";
  return { team, hours };
}

function query({ team, hours }, extra = {}) {
  const params = new URLSearchParams({ hours, ...extra });
  if (team) params.set("team", team);
  return params;
}

function fillTeams(teams, me, wanted) {
  const all = me.role === "staff" ? ["Alle mine team", "All my teams"] : ["Alle team", "All teams"];
  fill($("team"), h("option", { value: "" }, `${all[0]} · ${all[1]}`),
    teams.map((team) => h("option", { value: team.id, selected: team.id === wanted }, team.name)));
}

function fact(nb, en, value) {
  return h("div", { class: "fact" }, h("dt", {}, t(nb, en)), h("dd", {}, value));
}

function renderSummary(report, teamNames) {
  const s = report.summary;
  fill($("period"), t(
    `${teamNames} · siste ${report.hours} timer: ${clock(report.since)} – ${clock(report.until)}`,
    `${teamNames} · last ${report.hours} hours: ${clock(report.since)} – ${clock(report.until)}`));
  fill($("summary"),
    fact("Varsler", "Alerts", String(s.alerts)),
    fact("Løst", "Resolved", String(s.resolved)),
    fact("Avbrutt", "Cancelled", String(s.cancelled)),
    fact("Fortsatt åpne eller tatt", "Still open or taken", String(s.open + s.acknowledged)),
    fact("Median tid til tatt", "Median time to take", durationText(s.median_seconds_to_take)),
    fact("Median tid til løst", "Median time to resolve", durationText(s.median_seconds_to_resolve)));
}

function cell(nb, en, ...children) {
  return h("td", { "data-label": `${nb} · ${en}` }, ...children);
}

function takenCell(alert) {
  if (!alert.acknowledged_at) return cell("Tatt", "Taken", h("span", { class: "muted" }, t("Ikke tatt", "Not taken")));
  return cell("Tatt", "Taken",
    h("span", { class: "who-did" }, alert.acknowledged_by), " ",
    h("span", { class: "after" }, t(`etter ${duration(alert.seconds_to_take)[0]}`, `after ${duration(alert.seconds_to_take)[1]}`)),
    h("br"), h("time", { datetime: alert.acknowledged_at, class: "muted small" }, clock(alert.acknowledged_at)));
}

function closedCell(alert) {
  if (!alert.closed_at) {
    const [nb, en] = STATE_WORDS[alert.state] || [alert.state, alert.state];
    return cell("Løst", "Resolved", h("span", { class: "badge" }, t(nb, en)));
  }
  const [nb, en] = STATE_WORDS[alert.state] || [alert.state, alert.state];
  const after = alert.seconds_to_resolve === null ? null : duration(alert.seconds_to_resolve);
  return cell("Løst", "Resolved",
    alert.state === "resolved" ? null : h("span", { class: "badge" }, t(nb, en)), alert.state === "resolved" ? null : " ",
    h("span", { class: "who-did" }, actor(alert.closed_by)), " ",
    after ? h("span", { class: "after" }, t(`etter ${after[0]}`, `after ${after[1]}`)) : null,
    h("br"), h("time", { datetime: alert.closed_at, class: "muted small" }, clock(alert.closed_at)));
}

function notesCell(alert) {
  if (!alert.notes.length) return cell("Notater", "Notes", h("span", { class: "muted" }, "–"));
  return cell("Notater", "Notes", h("ul", { class: "notes" },
    alert.notes.map((note) => h("li", {}, h("span", { class: "who-did" }, `${note.by}: `), h("span", { class: "note" }, note.text)))));
}

function row(alert) {
  const [nb, en] = kindWords(alert.kind);
  return h("tr", { class: `p-${alert.priority} s-${alert.state}`, dataset: { alert: alert.alert_id } },
    h("th", { scope: "row", "data-label": "Beboer · Resident" }, alert.resident_name || alert.resident_id),
    cell("Hva", "What", t(nb, en),
      alert.escalation_level > 0 ? h("span", { class: "escalated" }, t(` Nivå ${alert.escalation_level}`, ` Level ${alert.escalation_level}`)) : null),
    cell("Åpnet", "Opened", h("time", { datetime: alert.opened_at }, clock(alert.opened_at))),
    takenCell(alert),
    closedCell(alert),
    notesCell(alert));
}

function head(nb, en) {
  return h("th", { scope: "col" }, t(nb, en));
}

function renderTable(report) {
  const box = $("shift-table");
  if (!report.alerts.length) {
    fill(box, h("p", { class: "empty" }, t("Ingen varsler i dette tidsrommet.", "No alerts in this period.")));
    return;
  }
  fill(box,
    report.truncated ? h("p", { class: "notice info" }, t("Bare de nyeste varslene vises.", "Only the newest alerts are shown.")) : null,
    h("table", { class: "shift-table" },
      h("caption", { class: "visually-hidden" }, t("Varsler i vakten", "Alerts of the shift")),
      h("thead", {}, h("tr", {}, head("Beboer", "Resident"), head("Hva", "What"), head("Åpnet", "Opened"),
        head("Tatt", "Taken"), head("Løst", "Resolved"), head("Notater", "Notes"))),
      h("tbody", {}, report.alerts.map(row))));
}

let teams = [];

async function load() {
  const choice = chosen();
  const url = new URL(window.location.href);
  url.search = query(choice).toString();
  window.history.replaceState(null, "", url);
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  $("download").href = `/api/shift.csv?${query(choice, { tz })}`;
  try {
    const report = await api(`/api/shift?${query(choice)}`);
    const names = report.teams.map((team) => team.name).join(", ") || "–";
    renderSummary(report, names);
    renderTable(report);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    showApiError(err);
  }
}

async function start() {
  languageToggle();
  const params = new URLSearchParams(window.location.search);
  const hours = params.get("hours");
  const radio = document.querySelector(`input[name="hours"][value="${CSS.escape(hours || "8")}"]`);
  if (radio) radio.checked = true;
  try {
    const me = await whoAmI();
    pageNav(me);
    teams = await api("/api/teams");
    fillTeams(teams, me, params.get("team"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    showApiError(err);
    return;
  }
  $("choose").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("choose").addEventListener("change", () => load());
  await load();
}

start();

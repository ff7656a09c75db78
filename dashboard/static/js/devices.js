// The page /devices: the devices of the caller's teams that need a visit, what needs one
// first first (GET /api/devices/health, docs/devices.md): an alarm unit that does not
// answer, other devices that do not answer, devices never heard from, low batteries.
// Choose a team by name (GET /api/teams); each row links to the resident's card.

import { api, fill, h, languageToggle, notice, showApiError, t, timeAgo, whoAmI } from "./common.js";
import { pageNav } from "./nav.js";

const REFRESH_MS = 60_000;
const LIMIT = 500;

const $ = (id) => document.getElementById(id);

function chosen() {
  const params = new URLSearchParams(location.search);
  return { team: params.get("team") || "", all: params.get("all") === "true" };
}

/** Keep the choice in the address, so a reload or a shared link shows the same list. */
function remember({ team, all }) {
  const params = new URLSearchParams();
  if (team) params.set("team", team);
  if (all) params.set("all", "true");
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

async function fillTeams(team) {
  const teams = await api("/api/teams");
  const select = $("team");
  select.append(...teams.map((tm) => h("option", { value: tm.id, selected: tm.id === team }, tm.name)));
  if (teams.length === 1) select.closest("div").hidden = true; // nothing to choose
}

function row(d) {
  const [kindNb, kindEn] = d.kind_words;
  const [healthNb, healthEn] = d.health_words;
  const facts = [
    d.last_seen ? h("span", {}, t("Sist hørt:", "Last heard:"), " ", timeAgo(d.last_seen)) : null,
    d.battery_pct !== null ? h("span", {}, t(`Batteri ${d.battery_pct} %`, `Battery ${d.battery_pct} %`)) : null,
  ].filter(Boolean);
  return h("li", { class: `device-row health-${d.health}`, dataset: { device: d.id, health: d.health } },
    h("div", { class: "device-head" },
      h("a", { class: "resident", href: `/residents/${encodeURIComponent(d.resident.id)}` }, d.resident.name),
      h("span", { class: "muted small" }, d.team.name)),
    h("div", { class: "device-what" },
      h("span", { class: "device-health" }, healthNb, h("span", { class: "en inline" }, ` / ${healthEn}`)),
      h("span", {}, kindNb, h("span", { class: "en inline" }, ` / ${kindEn}`),
        h("span", { class: "muted small" }, ` (${d.id})`))),
    facts.length ? h("div", { class: "device-facts small" }, facts) : null);
}

function count(result, all) {
  const n = result.devices.length;
  const more = result.truncated ? ["(flere finnes – velg et team)", "(there are more – choose a team)"] : ["", ""];
  if (all) return t(`${n} enheter ${more[0]}`, `${n} devices ${more[1]}`);
  if (n === 0) return t("Alt utstyr er i orden.", "Every device is in order.");
  return t(`${n} trenger besøk ${more[0]}`, `${n} need a visit ${more[1]}`);
}

async function load() {
  const choice = chosen();
  const params = new URLSearchParams({ limit: String(LIMIT) });
  if (choice.team) params.set("team", choice.team);
  if (choice.all) params.set("all", "true");
  const result = await api(`/api/devices/health?${params}`);
  notice(null);
  fill($("device-count"), count(result, choice.all));
  fill($("devices"), result.devices.map(row));
}

async function main() {
  languageToggle();
  const me = await whoAmI();
  pageNav(me);
  const choice = chosen();
  $("all").checked = choice.all;
  await fillTeams(choice.team);
  $("filter").addEventListener("change", () => {
    remember({ team: $("team").value, all: $("all").checked });
    load().catch(showApiError);
  });
  $("filter").addEventListener("submit", (e) => e.preventDefault());
  await load();
  setInterval(() => load().catch(showApiError), REFRESH_MS);
}

main().catch(showApiError);

// The resident card (GET /api/residents/{id}/card, docs/contract.md#the-resident-card):
// name, team, address, how to get in, contact persons (tap to call), devices and their
// health in plain words, and the changes worth a look (js/insights.js). Used by the
// console's resident panel and by /residents/{id}.
// The server decides who may see it (404 to everyone else) and puts device kinds and
// health in words (dashboard/routes_teams.py), so this file holds no word lists of its own.

import { api, fill, h, t, timeAgo } from "./common.js";
import { insightsSection } from "./insights.js";

/** The number to dial for a phone number as people write it: "+47 400 00 001" → "+4740000001". */
export function dialable(phone) {
  return String(phone).replace(/[^0-9+]/g, "");
}

function heading(level, nb, en) {
  return h(`h${Math.min(Math.max(level, 1), 6)}`, { class: "card-section" }, t(nb, en, "span"));
}

/** A <dl> row; nothing when the value is empty. */
function row(nb, en, value) {
  if (!value) return null;
  return h("div", { class: "card-row" }, h("dt", {}, t(nb, en)), h("dd", {}, value));
}

function notRecorded() {
  return h("p", { class: "muted" }, t("Ikke registrert", "Not recorded"));
}

function access(card, level) {
  const a = card.access || {};
  const rows = [
    row("Nøkkelboks", "Key box", a.key_box),
    row("Dørlås", "Door lock", a.door_lock),
    row("Merknader", "Notes", a.notes),
  ].filter(Boolean);
  return h("section", { class: "card-access" }, heading(level, "Adgang", "Access"),
    rows.length ? h("dl", {}, rows) : notRecorded());
}

function contact(c) {
  const number = dialable(c.phone);
  return h("li", { class: "card-contact" },
    h("div", { class: "card-contact-who" },
      h("strong", {}, c.name), c.relation ? h("span", { class: "muted" }, ` · ${c.relation}`) : null,
      c.notes ? h("div", { class: "small muted" }, c.notes) : null),
    h("a", { class: "button secondary card-call", href: `tel:${number}`, "aria-label": `Ring ${c.name}, ${c.phone} · Call ${c.name}` },
      h("span", { class: "card-call-word", "aria-hidden": "true" }, "☎ "), c.phone));
}

function contacts(card, level) {
  return h("section", { class: "card-contacts" }, heading(level, "Kontaktpersoner", "Contact persons"),
    card.contacts.length ? h("ul", { class: "card-contact-list" }, card.contacts.map(contact)) : notRecorded());
}

/** One device: its kind, its health in words, when it was last heard, its battery. */
export function deviceItem(d) {
  const [kindNb, kindEn] = d.kind_words || [d.kind, d.kind];
  const [healthNb, healthEn] = d.health_words || [d.health, d.health];
  return h("li", { class: `card-device health-${d.health}`, dataset: { device: d.id, health: d.health } },
    h("div", { class: "card-device-kind" }, h("strong", {}, kindNb), h("span", { class: "en inline" }, ` / ${kindEn}`),
      h("span", { class: "muted small" }, ` (${d.id})`)),
    h("div", { class: "card-health" }, t(healthNb, healthEn)),
    d.last_seen ? h("div", { class: "small" }, t("Sist hørt:", "Last heard:"), " ", timeAgo(d.last_seen)) : null,
    d.battery_pct !== null && d.battery_pct !== undefined
      ? h("div", { class: "small" }, t(`Batteri ${d.battery_pct} %`, `Battery ${d.battery_pct} %`)) : null);
}

function devices(card, level) {
  return h("section", { class: "card-devices" }, heading(level, "Utstyr", "Devices"),
    card.devices.length ? h("ul", { class: "card-device-list" }, card.devices.map(deviceItem))
      : h("p", { class: "muted" }, t("Ikke noe utstyr registrert.", "No devices registered.")));
}

/** Render resident `residentId`'s card into `container`, its name as a heading of
 * `headingLevel` (its sections one level below); resolves to the card JSON or throws
 * ApiError (404: no such resident, or not one the caller may see). */
export async function renderCard(container, residentId, { headingLevel = 2 } = {}) {
  const card = await api(`/api/residents/${encodeURIComponent(residentId)}/card`);
  const level = Math.min(Math.max(headingLevel, 1), 5);
  fill(container,
    h("article", { class: "card", "aria-label": card.name },
      h(`h${level}`, { class: "card-name" }, card.name),
      h("p", { class: "card-team" }, "Team: ", h("strong", {}, card.team.name)),
      h("section", { class: "card-address" }, heading(level + 1, "Adresse", "Address"),
        card.address ? h("p", { class: "card-address-text" }, card.address) : notRecorded()),
      access(card, level + 1),
      contacts(card, level + 1),
      devices(card, level + 1),
      insightsSection(residentId, level + 1)));
  return card;
}

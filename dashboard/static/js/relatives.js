// The relatives' page: a calm status of their own person(s), from
// GET /api/residents/{id}/status for each resident the signed-in relative is linked to.
// No sensor detail; a position only when the API returns one (consent and legal basis).

import { ApiError, api, clock, fill, h, languageToggle, notice, t, timeAgo, whoAmI } from "./common.js";
import { showPositions } from "./map.js";

const REFRESH_MS = 20_000;

const STATE_TEXT = {
  ok: {
    title: ["Alt er rolig", "All is well"],
    body: ["Ingen varsler nå.", "No alerts right now."],
  },
  alert: {
    title: ["Varsel under behandling av hjemmetjenesten", "An alert is being handled by home care"],
    body: ["Hjemmetjenesten er varslet og følger opp. Du trenger ikke gjøre noe.",
      "Home care has been notified and is following up. You need not do anything."],
  },
  attention: {
    title: ["Noe trenger litt oppmerksomhet", "Something needs a little attention"],
    body: ["Det haster ikke. Hjemmetjenesten følger med.", "It is not urgent. Home care is keeping an eye on it."],
  },
};

/** What a relative reads about an alert, in Norwegian (the API gives the English one). */
const KIND_NB = {
  smoke: "Røykvarsleren gikk",
  alarm: "Trygghetsalarmen ble brukt",
  fall: "Et mulig fall ble registrert",
  wandering: "Gikk ut om natten",
  geofence_exit: "Er utenfor det vanlige området",
  door_open: "En dør har stått åpen en stund",
  inactivity: "Ingen aktivitet på en stund",
  device_offline: "Noe av trygghetsutstyret svarer ikke",
  battery_low: "Noe av utstyret må lades",
};

/** Norwegian, then " / English" on the same line. */
function inline(nb, en) {
  return h("span", {}, h("span", { lang: "nb" }, nb), h("span", { class: "en inline", lang: "en" }, ` / ${en}`));
}

const maps = new Map(); // resident id -> map handle
const seen = new Map(); // resident id -> Map(key -> alert) seen during this visit

async function refresh(me) {
  const people = document.getElementById("people");
  if (!me.residents.length) {
    fill(people, h("p", { class: "big" }, t("Du er ikke registrert som pårørende til noen ennå. Kontakt hjemmetjenesten.",
      "You are not registered as the relative of anyone yet. Please contact home care.")));
    return;
  }
  const results = await Promise.all(me.residents.map(async (id) => {
    try {
      return { id, status: await api(`/api/residents/${encodeURIComponent(id)}/status`) };
    } catch (err) {
      return { id, error: err };
    }
  }));
  const failed = results.find((r) => r.error && !(r.error instanceof ApiError && r.error.status === 404));
  if (failed) {
    notice("Kunne ikke hente status akkurat nå. Vi prøver igjen.", "Could not fetch the status right now. We will try again.");
  } else {
    notice(null);
  }
  for (const { id, status, error } of results) {
    let card = people.querySelector(`section[data-resident="${CSS.escape(id)}"]`);
    if (!card) {
      if (!people.querySelector("section.person")) people.replaceChildren();
      card = h("section", { class: "person", dataset: { resident: id }, "aria-labelledby": `h-${id}` });
      people.append(card);
    }
    if (status) renderPerson(card, id, status);
    else if (error instanceof ApiError && error.status === 404) renderUnavailable(card, id);
  }
  fill(document.getElementById("updated"), inline(`Oppdatert ${clock(new Date().toISOString())}`,
    `Updated ${new Date().toLocaleTimeString("en-GB")}`));
}

function renderUnavailable(card, id) {
  card._json = null;
  maps.get(id)?.destroy();
  maps.delete(id);
  card.className = "person st-unknown";
  card.dataset.state = "unavailable";
  fill(card,
    h("h2", { id: `h-${id}` }, "Status", h("span", { class: "muted small" }, ` (${id})`)),
    h("p", { class: "big" }, t("Ingen status tilgjengelig.", "No status available.")),
    h("p", {}, t("Det kan være at samtykke til å dele status med pårørende mangler. Snakk med hjemmetjenesten om du lurer.",
      "Consent to share the status with relatives may be missing. Talk to home care if you are unsure.")));
}

function key(a) {
  return `${a.kind}|${a.opened_at}`;
}

function renderPerson(card, id, status) {
  const json = JSON.stringify(status);
  if (card._json === json) {
    return;
  }
  card._json = json;
  const text = STATE_TEXT[status.state] || STATE_TEXT.attention;
  const memory = seen.get(id) || new Map();
  seen.set(id, memory);
  const now = new Set(status.open_alerts.map(key));
  for (const a of status.open_alerts) memory.set(key(a), { ...a, closed: false });
  for (const [k, a] of memory) if (!now.has(k) && !a.closed) memory.set(k, { ...a, closed: true, closedSeen: new Date().toISOString() });
  const recent = [...memory.values()].sort((a, b) => new Date(b.opened_at) - new Date(a.opened_at)).slice(0, 10);

  maps.get(id)?.destroy();
  maps.delete(id);
  card.className = `person st-${status.state}`;
  card.dataset.state = status.state;
  const mapBox = h("div", { class: "map-box" });
  fill(card,
    h("h2", { id: `h-${id}` }, "Status", h("span", { class: "muted small" }, ` (${id})`)),
    h("div", { class: "state-box" },
      h("span", { class: "state-icon", "aria-hidden": "true" }, status.state === "ok" ? "✓" : status.state === "alert" ? "!" : "i"),
      h("div", {},
        h("p", { class: "state-title" }, t(...text.title, "span")),
        h("p", {}, t(...text.body)))),
    h("p", { class: "contact" }, h("strong", {}, "Sist kontakt", h("span", { class: "en inline" }, " / Last contact")), ": ",
      status.last_contact_at ? timeAgo(status.last_contact_at) : inline("ingen kontakt registrert", "no contact recorded")),
    recent.length
      ? [h("h3", {}, t("Varsler", "Alerts")), h("ul", { class: "relative-alerts" }, recent.map((a) => h("li", { class: a.closed ? "closed" : "open" },
        h("p", { class: "summary" }, t(KIND_NB[a.kind] || "Noe trenger oppmerksomhet", a.summary)),
        h("p", { class: "handling" },
          a.closed
            ? inline("Avsluttet av hjemmetjenesten", "Closed by home care")
            : a.being_handled
              ? inline("Hjemmetjenesten har tatt saken", "Home care has taken it")
              : inline("Hjemmetjenesten er varslet", "Home care has been notified")),
        h("p", { class: "muted" }, timeAgo(a.opened_at)))))]
      : null,
    status.location
      ? [h("h3", {}, t("Sist kjente posisjon", "Last known position")),
        h("p", { class: "muted" }, timeAgo(status.location.ts)), mapBox]
      : null);
  if (status.location) {
    maps.set(id, showPositions(mapBox, [status.location], { title: "Sist kjente posisjon / Last known position" }));
  }
}

async function main() {
  languageToggle();
  let me;
  try {
    me = await whoAmI();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      notice("Kunne ikke hente siden. Prøv igjen om litt.", "Could not load the page. Try again shortly.");
    }
    return;
  }
  const run = () => refresh(me).catch((err) => {
    if (!(err instanceof ApiError && err.status === 401)) {
      notice("Kunne ikke hente status akkurat nå. Vi prøver igjen.", "Could not fetch the status right now. We will try again.");
    }
  });
  await run();
  setInterval(run, REFRESH_MS);
}

main();

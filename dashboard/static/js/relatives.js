// The relatives' page: a calm status of their own person(s), from
// GET /api/residents/{id}/status and the alerts of the last 30 days from
// GET /api/residents/{id}/alert-history, for each resident the signed-in relative is
// linked to, and — only with the relatives_insights consent — the changes home care is
// keeping an eye on (GET /api/residents/{id}/insights: a calm sentence each, no values). No sensor detail; a position only when the API returns one (consent and
// legal basis).

import { ApiError, api, clock, fill, h, languageToggle, notice, t, timeAgo, whoAmI } from "./common.js";
import { showPositions } from "./map.js";

const REFRESH_MS = 20_000;
const HISTORY_DAYS = 30;
const HISTORY_LIMIT = 20;

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

/** Where an alert stands, in plain words: [Norwegian, English]. */
const STATE_WORDING = {
  open: ["Hjemmetjenesten er varslet", "Home care has been notified"],
  acknowledged: ["Hjemmetjenesten har tatt saken", "Home care has taken it"],
  resolved: ["Avsluttet av hjemmetjenesten", "Closed by home care"],
  cancelled: ["Avblåst – ikke lenger aktuelt", "Called off – no longer needed"],
};

const whenNb = new Intl.DateTimeFormat("nb-NO", { weekday: "long", day: "numeric", month: "long", hour: "2-digit", minute: "2-digit" });
const whenEn = new Intl.DateTimeFormat("en-GB", { weekday: "long", day: "numeric", month: "long", hour: "2-digit", minute: "2-digit" });

/** ["tirsdag 22. november kl. 14:03", "Tuesday 22 November at 14:03"]. */
function when(value) {
  const d = new Date(value);
  return [whenNb.format(d), whenEn.format(d)];
}

/** Norwegian, then " / English" on the same line. */
function inline(nb, en) {
  return h("span", {}, h("span", { lang: "nb" }, nb), h("span", { class: "en inline", lang: "en" }, ` / ${en}`));
}

const maps = new Map(); // resident id -> map handle
let me = null;
const people = () => me?.residents || [];

async function refresh(me) {
  const people = document.getElementById("people");
  if (!me.residents.length) {
    fill(people, h("p", { class: "big" }, t("Du er ikke registrert som pårørende til noen ennå. Kontakt hjemmetjenesten.",
      "You are not registered as the relative of anyone yet. Please contact home care.")));
    return;
  }
  const history = `?days=${HISTORY_DAYS}&limit=${HISTORY_LIMIT}`;
  const results = await Promise.all(me.residents.map(async (id) => {
    const path = `/api/residents/${encodeURIComponent(id)}`;
    try {
      const [status, past, changes] = await Promise.all([api(`${path}/status`), api(`${path}/alert-history${history}`),
        // only with the relatives_insights consent; else 404 and nothing is shown
        api(`${path}/insights`).catch(() => null)]);
      return { id, status: { ...status, history: past.alerts, changes: changes?.notices || [] } };
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

/** The card's heading: the person's name (GET …/status gives it where the API has it),
 *  else "Din nærmeste / Your person"; the id only tells apart several persons. */
function heading(id, status, many) {
  if (status?.name) return h("h2", { id: `h-${id}` }, status.name);
  return h("h2", { id: `h-${id}` }, "Din nærmeste", h("span", { class: "en inline", lang: "en" }, " / Your person"),
    many ? h("span", { class: "muted small" }, ` (${id})`) : null);
}

function renderUnavailable(card, id) {
  card._json = null;
  maps.get(id)?.destroy();
  maps.delete(id);
  card.className = "person st-unknown";
  card.dataset.state = "unavailable";
  fill(card,
    heading(id, null, people().length > 1),
    h("p", { class: "big" }, t("Ingen status tilgjengelig.", "No status available.")),
    h("p", {}, t("Det kan være at samtykke til å dele status med pårørende mangler. Snakk med hjemmetjenesten om du lurer.",
      "Consent to share the status with relatives may be missing. Talk to home care if you are unsure.")));
}

function renderPerson(card, id, status) {
  const json = JSON.stringify(status);
  if (card._json === json) {
    return;
  }
  card._json = json;
  const text = STATE_TEXT[status.state] || STATE_TEXT.attention;
  maps.get(id)?.destroy();
  maps.delete(id);
  card.className = `person st-${status.state}`;
  card.dataset.state = status.state;
  const mapBox = h("div", { class: "map-box" });
  fill(card,
    heading(id, status, people().length > 1),
    h("div", { class: "state-box" },
      h("span", { class: "state-icon", "aria-hidden": "true" }, status.state === "ok" ? "✓" : status.state === "alert" ? "!" : "i"),
      h("div", {},
        h("p", { class: "state-title" }, t(...text.title, "span")),
        h("p", {}, t(...text.body)))),
    h("p", { class: "contact" }, h("strong", {}, "Sist kontakt", h("span", { class: "en inline" }, " / Last contact")), ": ",
      status.last_contact_at ? timeAgo(status.last_contact_at) : inline("ingen kontakt registrert", "no contact recorded")),
    h("h3", {}, t(`Varsler siste ${HISTORY_DAYS} dager`, `Alerts in the last ${HISTORY_DAYS} days`)),
    status.history.length
      ? h("ul", { class: "relative-alerts" }, status.history.map(historyItem))
      : h("p", { class: "muted no-alerts" }, t("Ingen varsler.", "No alerts.")),
    status.changes.length
      ? [h("h3", {}, t("Endringer hjemmetjenesten følger med på", "Changes home care is keeping an eye on")),
        h("ul", { class: "relative-changes" }, status.changes.map(changeItem))]
      : null,
    status.location
      ? [h("h3", {}, t("Sist kjente posisjon", "Last known position")),
        h("p", { class: "muted" }, timeAgo(status.location.ts)), mapBox]
      : null);
  if (status.location) {
    maps.set(id, showPositions(mapBox, [status.location], { title: "Sist kjente posisjon / Last known position" }));
  }
}

/** A change worth a look as a relative reads it (GET …/insights): a calm sentence, no values. */
function changeItem(c) {
  const day = new Date(`${c.day}T12:00:00Z`);
  const opts = { day: "numeric", month: "long", timeZone: "UTC" };
  return h("li", { class: "change" },
    h("p", { class: "summary" }, t(c.summary[0], c.summary[1])),
    h("p", { class: "muted times" }, inline(`Merket ${day.toLocaleDateString("nb-NO", opts)}`,
      `Noticed ${day.toLocaleDateString("en-GB", opts)}`)),
    c.looked_at ? h("p", { class: "handling" }, inline("Hjemmetjenesten har sett på det", "Home care has looked at it")) : null);
}

function historyItem(a) {
  const closed = a.state === "resolved" || a.state === "cancelled";
  const [state, stateEn] = STATE_WORDING[a.state] || STATE_WORDING.open;
  const [opened, openedEn] = when(a.opened_at);
  return h("li", { class: closed ? "closed" : "open", dataset: { state: a.state } },
    h("p", { class: "summary" }, t(KIND_NB[a.kind] || "Noe trengte oppmerksomhet", a.summary)),
    h("p", { class: "handling" }, inline(state, stateEn)),
    h("p", { class: "muted times" }, inline(`Startet ${opened}`, `Started ${openedEn}`)),
    a.closed_at
      ? h("p", { class: "muted times" }, inline(`Avsluttet ${when(a.closed_at)[0]}`, `Ended ${when(a.closed_at)[1]}`))
      : null);
}

async function main() {
  languageToggle();
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

// The admin page (docs/admin.md): residents and their devices, users and one-time
// password links, the change log and the audit log. Every edit sends the registry's
// version it was made on (409 when someone changed it meanwhile: the page reloads what
// it shows); a 422 names the fields, shown next to each field.

import { ApiError, api, errorWords, fill, h, languageToggle, notice, roleName, showApiError, t, timeAgo, whoAmI } from "./common.js";
import { pageNav } from "./nav.js";

const $ = (id) => document.getElementById(id);
const PAGE = 25;
const KINDS = {
  alarm_unit: ["Trygghetsalarm", "Safety alarm unit"],
  auto_alarm: ["Selvutløsende alarm", "Automatic alarm"],
  fall_sensor: ["Fallsensor", "Fall sensor"],
  smoke_detector: ["Røykvarsler", "Smoke detector"],
  door_sensor: ["Dørsensor", "Door sensor"],
  door_lock: ["Elektronisk dørlås", "Electronic door lock"],
  motion_sensor: ["Bevegelsessensor", "Motion sensor"],
  gps_tracker: ["GPS-sporer", "GPS tracker"],
  phone: ["Telefon", "Phone"],
};
const ROLES = ["staff", "operator", "admin", "relative", "researcher"];

const state = { version: null, teams: [], offset: 0, me: null, changesBefore: null, auditBefore: null };

function remember(answer) {
  if (answer && answer.version) state.version = answer.version;
  return answer;
}

function ok(nb, en) {
  notice(nb, en, "info");
}

// --- forms and their errors -------------------------------------------------------------

/** Norwegian and English words of a label or button, with a space between (the
 * accessible name reads "Navn Name", not "NavnName"). */
function words(nb, en) {
  return [h("span", { lang: "nb", class: "nb" }, nb), " ", h("span", { lang: "en", class: "en inline" }, en)];
}

/** A labelled input: h-attrs for the input; `path` names it for the API's field errors. */
function field(label, path, attrs = {}, tag = "input") {
  const id = `f-${path.replaceAll(".", "-")}-${Math.random().toString(36).slice(2, 7)}`;
  const input = h(tag, { id, name: path, "data-path": path, ...attrs });
  if (tag === "select") for (const [value, text] of attrs.options || []) input.append(h("option", { value }, text));
  input.removeAttribute("options");
  return h("div", { class: "field" }, h("label", { for: id }, words(label[0], label[1])), input);
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  form.querySelectorAll("[aria-invalid]").forEach((el) => {
    el.removeAttribute("aria-invalid");
    el.removeAttribute("aria-describedby");
  });
}

/** Show an API error: the notice in both languages, and each 422 field error beside its field. */
function showError(err, form) {
  showApiError(err);
  if (!form || !(err instanceof ApiError) || err.status !== 422) return;
  clearErrors(form);
  let details = [];
  try { details = JSON.parse(err.detail); } catch { return; }
  if (!Array.isArray(details)) return;
  let first = null;
  for (const d of details) {
    const loc = (d.loc || []).filter((p) => p !== "body");
    // ["resident", "contacts", 0, "phone"] → "contacts.0.phone"; ["resident.id"] → "id";
    // a field that is not in the form → its nearest enclosing one (e.g. "teams").
    const parts = (loc.slice(1).join(".") || String(loc[0] || "").replace(/^(resident|device|user)\./, "")).split(".");
    let input = null;
    for (let n = parts.length; n > 0 && !input; n--) {
      input = form.querySelector(`[data-path="${CSS.escape(parts.slice(0, n).join("."))}"]`);
    }
    const id = `err-${Math.random().toString(36).slice(2, 9)}`;
    const message = h("p", { class: "field-error", id }, t("Ugyldig verdi.", `${loc.slice(1).join(".") || "?"}: ${d.msg}`));
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", id);
      input.closest(".field, fieldset")?.append(message);
      first = first || input;
    } else {
      form.querySelector(".form-errors")?.append(message);
    }
  }
  first?.focus();
}

/** Run an edit; on 409 reload what the page shows. */
async function edit(path, method, body, form) {
  try {
    const answer = remember(await api(path, { method, body: { version: state.version, ...body } }));
    if (form) clearErrors(form);
    return answer;
  } catch (err) {
    showError(err, form);
    if (err instanceof ApiError && err.status === 409) await reloadAll();
    return null;
  }
}

function value(form, path) {
  const input = form.querySelector(`[data-path="${path}"]`);
  if (!input) return undefined;
  if (input.type === "checkbox") return input.checked;
  const text = input.value.trim();
  if (input.type === "number") return text === "" ? undefined : Number(text);
  return text === "" ? undefined : text;
}

function set(form, path, v) {
  const input = form.querySelector(`[data-path="${path}"]`);
  if (!input) return;
  if (input.type === "checkbox") input.checked = Boolean(v);
  else input.value = v ?? "";
}

// --- residents ------------------------------------------------------------------------------

async function loadTeams() {
  state.teams = await api("/api/teams");
  const select = $("team-filter");
  for (const team of state.teams) select.append(h("option", { value: team.id }, team.name));
}

function teamName(id) {
  return state.teams.find((x) => x.id === id)?.name || id;
}

async function loadResidents() {
  const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
  if ($("q").value.trim()) params.set("q", $("q").value.trim());
  if ($("team-filter").value) params.set("team", $("team-filter").value);
  const page = remember(await api(`/api/admin/residents?${params}`));
  fill($("resident-count"), t(`${page.total} beboere`, `${page.total} residents`));
  fill($("resident-list"), ...page.residents.map((r) => h("li", { class: "row" },
    h("div", { class: "row-main" }, h("strong", {}, r.name), " ", h("span", { class: "muted" }, r.id)),
    h("div", { class: "muted" }, r.team_name, " · ", words(`${r.devices} enheter`, `${r.devices} devices`)),
    h("button", { type: "button", class: "secondary", onclick: () => openResident(r.id) },
      words("Endre", "Edit"), h("span", { class: "visually-hidden" }, ` ${r.name}`)))));
  $("resident-prev").disabled = state.offset === 0;
  $("resident-next").disabled = state.offset + PAGE >= page.total;
}

function residentForm(resident) {
  const adding = !resident;
  const teamOptions = state.teams.map((x) => [x.id, x.name]);
  const form = h("form", { class: "editor", novalidate: true },
    h("h2", { tabindex: "-1" }, adding ? words("Ny beboer", "New resident") : words(`Endre ${resident.name}`, `Edit ${resident.name}`)),
    h("div", { class: "form-errors" }),
    h("fieldset", {}, h("legend", {}, words("Beboer", "Resident")),
      adding ? field(["Id", "Id"], "id", { required: true, maxlength: 64, autocomplete: "off", pattern: "[A-Za-z0-9_.\\-]{1,64}" }) : null,
      field(["Navn", "Name"], "name", { required: true, maxlength: 200, autocomplete: "off" }),
      field(["Team", "Team"], "team", { options: teamOptions }, "select"),
      field(["Adresse", "Address"], "address", { maxlength: 300, autocomplete: "off" }),
      field(["Tidssone", "Time zone"], "timezone", { maxlength: 64, value: "Europe/Oslo" })),
    h("fieldset", {}, h("legend", {}, words("Tilgang til boligen", "Access to the home")),
      field(["Nøkkelboks (hvor, kode)", "Key box (where, code)"], "access.key_box", { maxlength: 200, autocomplete: "off" }),
      field(["Elektronisk dørlås", "Electronic door lock"], "access.door_lock", { maxlength: 500, autocomplete: "off" }),
      field(["Annet (hund, trapp, inngang)", "Other (dog, stairs, entrance)"], "access.notes", { maxlength: 1000, rows: 2 }, "textarea")),
    h("fieldset", { class: "contacts" }, h("legend", {}, words("Kontaktpersoner", "Contact persons")),
      h("div", { class: "contact-rows" }),
      h("button", { type: "button", class: "secondary", onclick: (e) => addContact(e.target.closest("form")) },
        words("Legg til kontakt", "Add contact"))),
    h("fieldset", {}, h("legend", {}, words("Samtykker", "Consents")),
      checkbox(["Forskning", "Research"], "consents.research"),
      checkbox(["Pårørende ser status", "Relatives see status"], "consents.relatives_status"),
      checkbox(["Pårørende ser posisjon", "Relatives see location"], "consents.relatives_location")),
    h("fieldset", {}, h("legend", {}, words("Grunnlag for posisjon", "Basis for location")),
      field(["Grunnlag", "Basis"], "location_basis.kind",
        { options: [["", "Ingen · None"], ["consent", "Samtykke · Consent"], ["vedtak", "Vedtak · Decision"]] }, "select"),
      field(["Gyldig til", "Valid until"], "location_basis.valid_until", { type: "date" })),
    h("fieldset", {}, h("legend", {}, words("Natt og innstillinger", "Night and settings")),
      field(["Natt fra", "Night from"], "night.start", { type: "time", value: "23:00" }),
      field(["Natt til", "Night until"], "night.end", { type: "time", value: "06:00" }),
      field(["Ute om natten etter (min)", "Out at night after (min)"], "settings.wander_minutes", { type: "number", min: 1, step: "any", value: 10 }),
      field(["Dør åpen etter (min)", "Door open after (min)"], "settings.door_open_minutes", { type: "number", min: 1, step: "any", value: 15 }),
      field(["Ingen aktivitet etter (t)", "No activity after (h)"], "settings.inactivity_hours", { type: "number", min: 1, step: "any", value: 12 }),
      field(["Trygge soner (JSON)", "Safe zones (JSON)"], "safe_zones", { rows: 3, spellcheck: "false", value: "[]" }, "textarea")),
    h("div", { class: "form-buttons" },
      h("button", { type: "submit", class: "primary" }, words("Lagre", "Save")),
      h("button", { type: "button", class: "secondary", onclick: closeResident }, words("Avbryt", "Cancel"))));
  form.querySelector('[data-path="safe_zones"]').textContent = "[]";
  if (resident) {
    for (const path of ["name", "team", "address", "timezone", "access.key_box", "access.door_lock", "access.notes",
      "consents.research", "consents.relatives_status", "consents.relatives_location", "location_basis.kind",
      "location_basis.valid_until", "night.start", "night.end", "settings.wander_minutes",
      "settings.door_open_minutes", "settings.inactivity_hours"]) {
      set(form, path, path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), resident));
    }
    set(form, "safe_zones", JSON.stringify(resident.safe_zones || []));
    for (const c of resident.contacts || []) addContact(form, c);
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    saveResident(form, resident);
  });
  return form;
}

function checkbox(label, path) {
  const id = `f-${path.replaceAll(".", "-")}`;
  return h("div", { class: "field" }, h("label", { class: "check", for: id },
    h("input", { type: "checkbox", id, "data-path": path }), words(label[0], label[1])));
}

function addContact(form, contact = {}) {
  const rows = form.querySelector(".contact-rows");
  const n = rows.children.length;
  const row = h("div", { class: "contact", "data-index": n },
    field(["Navn", "Name"], `contacts.${n}.name`, { maxlength: 200, autocomplete: "off" }),
    field(["Relasjon", "Relation"], `contacts.${n}.relation`, { maxlength: 100, autocomplete: "off" }),
    field(["Telefon", "Phone"], `contacts.${n}.phone`, { type: "tel", maxlength: 32, autocomplete: "off" }),
    field(["Merknad", "Notes"], `contacts.${n}.notes`, { maxlength: 500, autocomplete: "off" }),
    h("button", { type: "button", class: "link", onclick: () => row.remove() }, words("Fjern kontakt", "Remove contact")));
  rows.append(row);
  for (const k of ["name", "relation", "phone", "notes"]) set(row, `contacts.${n}.${k}`, contact[k]);
}

function residentBody(form) {
  const body = {};
  for (const path of ["id", "name", "team", "address", "timezone"]) body[path] = value(form, path);
  const access = { key_box: value(form, "access.key_box"), door_lock: value(form, "access.door_lock"), notes: value(form, "access.notes") };
  if (Object.values(access).some((v) => v !== undefined)) body.access = access;
  body.contacts = [...form.querySelectorAll(".contact")].map((row) => {
    const n = row.dataset.index;
    return Object.fromEntries(["name", "relation", "phone", "notes"].map((k) => [k, value(row, `contacts.${n}.${k}`)]));
  });
  body.consents = Object.fromEntries(["research", "relatives_status", "relatives_location"].map((k) => [k, value(form, `consents.${k}`)]));
  const kind = value(form, "location_basis.kind");
  if (kind) body.location_basis = { kind, valid_until: value(form, "location_basis.valid_until") };
  body.night = { start: value(form, "night.start"), end: value(form, "night.end") };
  body.settings = Object.fromEntries(["wander_minutes", "door_open_minutes", "inactivity_hours"].map((k) => [k, value(form, `settings.${k}`)]));
  try {
    body.safe_zones = JSON.parse(value(form, "safe_zones") || "[]");
  } catch {
    body.safe_zones = value(form, "safe_zones");
  }
  return body;
}

async function saveResident(form, resident) {
  const body = residentBody(form);
  const answer = resident
    ? await edit(`/api/admin/residents/${encodeURIComponent(resident.id)}`, "PUT", { resident: body }, form)
    : await edit("/api/admin/residents", "POST", { resident: body }, form);
  if (!answer) return;
  ok(resident ? "Endringen er lagret." : "Beboeren er lagt til.", resident ? "The change is saved." : "The resident is added.");
  await loadResidents();
  await openResident(answer.result.id);
}

function closeResident() {
  $("resident-editor").hidden = true;
  $("resident-editor").replaceChildren();
  $("resident-new").focus();
}

async function openResident(id) {
  let answer = null;
  if (id) {
    try {
      answer = remember(await api(`/api/admin/residents/${encodeURIComponent(id)}`));
    } catch (err) {
      showError(err);
      return;
    }
  }
  const resident = answer?.resident;
  const box = $("resident-editor");
  box.hidden = false;
  fill(box, residentForm(resident), resident ? devicesPanel(resident) : null, resident ? retirePanel(resident) : null);
  box.querySelector("h2").focus();
}

function kindOptions() {
  return Object.entries(KINDS).map(([k, [nb, en]]) => [k, `${nb} · ${en}`]);
}

function devicesPanel(resident) {
  const list = h("ul", { class: "rows", "aria-label": "Utstyr · Devices" }, ...(resident.devices || []).map((d) => deviceRow(resident, d)));
  const add = h("form", { class: "editor inline-form", novalidate: true },
    h("div", { class: "form-errors" }),
    field(["Id for nytt utstyr", "New device id"], "id", { required: true, maxlength: 64, autocomplete: "off" }),
    field(["Type", "Kind"], "kind", { options: kindOptions() }, "select"),
    field(["Livstegn hvert (s)", "Heartbeat every (s)"], "heartbeat_s", { type: "number", min: 1, step: "any", value: 60 }),
    h("button", { type: "submit", class: "primary" }, words("Legg til utstyr", "Add device")));
  add.addEventListener("submit", async (e) => {
    e.preventDefault();
    const device = { id: value(add, "id"), kind: value(add, "kind"), heartbeat_s: value(add, "heartbeat_s") };
    if (await edit(`/api/admin/residents/${encodeURIComponent(resident.id)}/devices`, "POST", { device }, add)) {
      ok("Utstyret er lagt til.", "The device is added.");
      await openResident(resident.id);
      await loadResidents();
    }
  });
  return h("section", { class: "devices", "aria-label": "Utstyr · Devices" },
    h("h3", {}, words("Utstyr", "Devices")), list, add);
}

function deviceRow(resident, d) {
  const form = h("form", { class: "inline-form", novalidate: true },
    h("div", { class: "form-errors" }),
    h("p", { class: "row-main" }, h("strong", {}, d.id)),
    field(["Type", "Kind"], "kind", { options: kindOptions() }, "select"),
    field(["Livstegn hvert (s)", "Heartbeat every (s)"], "heartbeat_s", { type: "number", min: 1, step: "any" }),
    h("button", { type: "submit", class: "secondary" }, words("Lagre", "Save"), h("span", { class: "visually-hidden" }, ` ${d.id}`)),
    field(["Flytt til beboer (id)", "Move to resident (id)"], "resident_id", { maxlength: 64, autocomplete: "off" }),
    h("button", { type: "button", class: "secondary", onclick: () => move() }, words("Flytt", "Move"), h("span", { class: "visually-hidden" }, ` ${d.id}`)),
    h("button", { type: "button", class: "danger", onclick: () => remove() }, words("Fjern", "Remove"), h("span", { class: "visually-hidden" }, ` ${d.id}`)));
  set(form, "kind", d.kind);
  set(form, "heartbeat_s", d.heartbeat_s);
  const path = `/api/admin/devices/${encodeURIComponent(d.id)}`;
  const done = async (nb, en) => {
    ok(nb, en);
    await openResident(resident.id);
    await loadResidents();
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await edit(path, "PUT", { device: { kind: value(form, "kind"), heartbeat_s: value(form, "heartbeat_s") } }, form)) {
      await done("Utstyret er lagret.", "The device is saved.");
    }
  });
  async function move() {
    if (await edit(`${path}/move`, "POST", { resident_id: value(form, "resident_id") || "" }, form)) {
      await done("Utstyret er flyttet.", "The device is moved.");
    }
  }
  async function remove() {
    if (!window.confirm(`Fjerne ${d.id}? · Remove ${d.id}?`)) return;
    if (await edit(`${path}/remove`, "POST", {}, form)) await done("Utstyret er fjernet.", "The device is removed.");
  }
  return h("li", { class: "row" }, form);
}

function retirePanel(resident) {
  const confirmBox = h("div", { class: "confirm", role: "group", "aria-label": "Bekreft · Confirm", hidden: true },
    h("p", {}, t(`Avslutte ${resident.name}? Beboeren og utstyret fjernes fra registeret. Historikk, varsler og tilgangslogg beholdes.`,
      `Retire ${resident.name}? The resident and the devices are removed from the registry. History, alerts and the audit log are kept.`)),
    h("div", { class: "form-buttons" },
      h("button", { type: "button", class: "danger", onclick: retire }, words("Ja, avslutt", "Yes, retire")),
      h("button", { type: "button", class: "secondary", onclick: () => { confirmBox.hidden = true; ask.focus(); } }, words("Avbryt", "Cancel"))));
  const ask = h("button", { type: "button", class: "danger", onclick: () => { confirmBox.hidden = false; confirmBox.querySelector("button").focus(); } },
    words("Avslutt beboer", "Retire resident"));
  async function retire() {
    if (await edit(`/api/admin/residents/${encodeURIComponent(resident.id)}/retire`, "POST", {})) {
      ok("Beboeren er avsluttet.", "The resident is retired.");
      closeResident();
      await loadResidents();
    }
  }
  return h("section", { class: "retire", "aria-label": "Avslutt · Retire" }, ask, confirmBox);
}

// --- users ------------------------------------------------------------------------------------

async function loadUsers() {
  const answer = remember(await api("/api/admin/users"));
  fill($("user-list"), ...answer.users.map((u) => {
    const [nb, en] = roleName(u.role);
    const links = u.role === "relative" ? u.residents : u.teams.map(teamName);
    return h("li", { class: "row" },
      h("div", { class: "row-main" }, h("strong", {}, u.username), " · ", nb, h("span", { class: "en inline" }, ` / ${en}`)),
      links.length ? h("div", { class: "muted" }, links.join(", ")) : null,
      h("div", { class: "muted" }, u.has_password ? words("Har passord", "Has a password") : words("Uten passord", "No password yet"),
        u.link_expires_at ? [" · ", words("Åpen lenke til", "Open link until"), " ", timeAgo(u.link_expires_at)] : null),
      h("div", { class: "form-buttons" },
        h("button", { type: "button", class: "secondary", onclick: () => openUser(u) }, words("Endre", "Edit"), h("span", { class: "visually-hidden" }, ` ${u.username}`)),
        h("button", { type: "button", class: "secondary", onclick: (e) => makeLink(u.username, e.target.closest("button")) },
          words("Lag engangslenke", "Make one-time link"), h("span", { class: "visually-hidden" }, ` ${u.username}`))));
  }));
}

function openUser(user) {
  const adding = !user;
  const teamBoxes = state.teams.map((x) => {
    const id = `user-team-${x.id}`;
    return h("label", { class: "check", for: id }, h("input", { type: "checkbox", id, value: x.id, "data-team": x.id }), x.name);
  });
  const form = h("form", { class: "editor", novalidate: true },
    h("h2", { tabindex: "-1" }, adding ? words("Ny bruker", "New user") : words(`Endre ${user.username}`, `Edit ${user.username}`)),
    h("div", { class: "form-errors" }),
    adding ? field(["Brukernavn", "Username"], "username", { required: true, maxlength: 64, autocomplete: "off", autocapitalize: "none" }) : null,
    field(["Rolle", "Role"], "role", { options: ROLES.map((r) => [r, roleName(r).join(" · ")]) }, "select"),
    h("fieldset", { "data-path": "teams" }, h("legend", {}, words("Team (helsepersonell)", "Teams (staff)")), ...teamBoxes),
    field(["Beboere (pårørende), id-er med komma", "Residents (relatives), ids with commas"], "residents", { maxlength: 2000, autocomplete: "off" }),
    h("div", { class: "form-buttons" },
      h("button", { type: "submit", class: "primary" }, words("Lagre", "Save")),
      h("button", { type: "button", class: "secondary", onclick: () => { $("user-editor").hidden = true; $("user-new").focus(); } }, words("Avbryt", "Cancel"))));
  if (user) {
    set(form, "role", user.role);
    set(form, "residents", user.residents.join(", "));
    for (const box of form.querySelectorAll("[data-team]")) box.checked = user.teams.includes(box.dataset.team);
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      username: adding ? value(form, "username") : undefined,
      role: value(form, "role"),
      teams: [...form.querySelectorAll("[data-team]:checked")].map((b) => b.dataset.team),
      residents: (value(form, "residents") || "").split(",").map((s) => s.trim()).filter(Boolean),
    };
    const answer = adding
      ? await edit("/api/admin/users", "POST", { user: body }, form)
      : await edit(`/api/admin/users/${encodeURIComponent(user.username)}`, "PUT", { user: body }, form);
    if (!answer) return;
    ok(adding ? "Brukeren er lagt til. Lag en engangslenke så brukeren kan sette passord." : "Brukeren er lagret.",
      adding ? "The user is added. Make a one-time link so that the user can set a password." : "The user is saved.");
    $("user-editor").hidden = true;
    await loadUsers();
  });
  const box = $("user-editor");
  box.hidden = false;
  fill(box, form);
  form.querySelector("h2").focus();
}

async function makeLink(username, button) {
  let answer;
  try {
    answer = await api(`/api/admin/users/${encodeURIComponent(username)}/password-link`, { method: "POST" });
  } catch (err) {
    showError(err);
    return;
  }
  const input = h("input", { id: "link-url", type: "text", readonly: true, value: answer.url, class: "wide" });
  const copied = h("p", { class: "muted", "aria-live": "polite" });
  const box = $("link-box");
  box.hidden = false;
  fill(box,
    h("h2", { tabindex: "-1" }, words(`Engangslenke for ${username}`, `One-time link for ${username}`)),
    h("p", {}, t("Vises bare nå. Gi lenken til brukeren på en trygg måte. Den virker én gang, til",
      "Shown only now. Give the link to the user in a safe way. It works once, until", "span"), " ", timeAgo(answer.expires_at), "."),
    h("label", { for: "link-url" }, words("Lenke", "Link")), input,
    h("div", { class: "form-buttons" },
      h("button", { type: "button", class: "primary", onclick: async () => {
        try {
          await navigator.clipboard.writeText(answer.url);
        } catch {
          input.select();
          document.execCommand("copy");
        }
        fill(copied, t("Kopiert.", "Copied."));
      } }, words("Kopier", "Copy")),
      h("button", { type: "button", class: "secondary", onclick: () => { box.hidden = true; box.replaceChildren(); button?.focus(); } },
        words("Lukk", "Close"))),
    copied);
  box.querySelector("h2").focus();
  await loadUsers();
}

// --- the change log and the audit log -------------------------------------------------------

function summaryText(summary) {
  const parts = [];
  for (const [k, v] of Object.entries(summary || {})) {
    if (k === "changed") {
      for (const [name, change] of Object.entries(v)) {
        parts.push(change === true ? name : `${name}: ${JSON.stringify(change.from ?? null)} → ${JSON.stringify(change.to ?? null)}`);
      }
    } else {
      parts.push(`${k}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : v}`);
    }
  }
  return parts.join(" · ");
}

async function loadChanges(more = false) {
  const params = new URLSearchParams({ limit: 50 });
  for (const [id, name] of [["change-actor", "actor"], ["change-target", "target_id"]]) {
    if ($(id).value.trim()) params.set(name, $(id).value.trim());
  }
  if (more && state.changesBefore) params.set("before", state.changesBefore);
  const rows = await api(`/api/admin/changes?${params}`);
  const items = rows.map((c) => h("li", { class: "row" },
    h("div", { class: "row-main" }, h("strong", {}, c.action), " ", c.target_kind, " ", h("code", {}, c.target_id)),
    h("div", { class: "muted" }, c.actor, " · ", timeAgo(c.at)),
    h("div", { class: "small" }, summaryText(c.summary))));
  if (more) $("change-list").append(...items);
  else fill($("change-list"), ...(items.length ? items : [h("li", { class: "row muted" }, t("Ingen endringer.", "No changes."))]));
  state.changesBefore = rows.length ? rows[rows.length - 1].id : null;
  $("change-more").hidden = rows.length < 50;
}

function auditParams() {
  const params = new URLSearchParams();
  for (const [id, name] of [["audit-resident", "resident_id"], ["audit-actor", "actor"], ["audit-action", "action"]]) {
    if ($(id).value.trim()) params.set(name, $(id).value.trim());
  }
  for (const [id, name] of [["audit-since", "since"], ["audit-until", "until"]]) {
    if ($(id).value) params.set(name, new Date($(id).value).toISOString());
  }
  return params;
}

async function loadAudit(more = false) {
  const params = auditParams();
  $("audit-csv").href = `/api/audit.csv?${params}`;
  params.set("limit", 100);
  if (more && state.auditBefore) params.set("before", state.auditBefore);
  const rows = await api(`/api/audit?${params}`);
  const items = rows.map((r) => h("li", { class: "row" },
    h("div", { class: "row-main" }, h("strong", {}, r.actor), " · ", roleName(r.role)[0], r.resident_id ? [" · ", h("code", {}, r.resident_id)] : null),
    h("div", { class: "muted" }, timeAgo(r.at)),
    h("div", { class: "small action" }, r.action)));
  if (more) $("audit-list").append(...items);
  else fill($("audit-list"), ...(items.length ? items : [h("li", { class: "row muted" }, t("Ingen treff.", "Nothing found."))]));
  state.auditBefore = rows.length ? rows[rows.length - 1].id : null;
  $("audit-more").hidden = rows.length < 100;
}

// --- tabs and start ---------------------------------------------------------------------------

const LOADERS = { residents: loadResidents, users: loadUsers, changes: () => loadChanges(), audit: () => loadAudit() };

async function showTab() {
  const name = LOADERS[location.hash.slice(1)] ? location.hash.slice(1) : "residents";
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== name;
  for (const link of document.querySelectorAll(".admin-tabs a")) {
    if (link.dataset.tab === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  await guarded(LOADERS[name]);
}

async function reloadAll() {
  await guarded(LOADERS[location.hash.slice(1)] || loadResidents);
  if (!$("resident-editor").hidden) $("resident-editor").replaceChildren();
  $("resident-editor").hidden = true;
}

async function guarded(fn) {
  try {
    await fn();
  } catch (err) {
    showError(err);
  }
}

function wire() {
  $("resident-search").addEventListener("submit", (e) => {
    e.preventDefault();
    state.offset = 0;
    guarded(loadResidents);
  });
  $("resident-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); guarded(loadResidents); });
  $("resident-next").addEventListener("click", () => { state.offset += PAGE; guarded(loadResidents); });
  $("resident-new").addEventListener("click", () => openResident(null));
  $("user-new").addEventListener("click", () => openUser(null));
  $("change-filters").addEventListener("submit", (e) => { e.preventDefault(); guarded(() => loadChanges()); });
  $("change-more").addEventListener("click", () => guarded(() => loadChanges(true)));
  $("audit-filters").addEventListener("submit", (e) => { e.preventDefault(); guarded(() => loadAudit()); });
  $("audit-more").addEventListener("click", () => guarded(() => loadAudit(true)));
  window.addEventListener("hashchange", () => { notice(null); showTab(); });
}

async function start() {
  languageToggle();
  wire();
  try {
    state.me = await whoAmI();
    pageNav(state.me);
    await loadTeams();
  } catch (err) {
    const [nb, en] = errorWords(err);
    notice(nb, en);
    return;
  }
  await showTab();
}

start();

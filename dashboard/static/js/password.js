// Setting one's password with a one-time link (docs/admin.md "One-time password links").
// The token is in the URL's fragment (`/password#token=…`), which the browser never sends
// to the server with the page; this script takes it out of the address bar at once and
// posts it with the new password. The server checks the password policy
// (dashboard/passwords.py), uses the link up and ends every earlier session of the user.

import { ApiError, api, errorWords, fill, notice, t } from "./common.js";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
history.replaceState(null, "", location.pathname);  // not kept in the history or a bookmark

const GONE = ["Lenken virker ikke lenger: den er brukt, erstattet av en nyere eller utløpt. Be om en ny.",
  "This link no longer works: it was used, replaced by a newer one, or it expired. Ask for a new one."];

function problem(err) {
  if (err instanceof ApiError && err.status === 404) return GONE;
  if (err instanceof ApiError && err.status === 422) {
    return ["Passordet godtas ikke. Velg et lengre passord som ikke er vanlig og ikke inneholder brukernavnet.",
      `The password is not accepted (${err.detail}).`];
  }
  return errorWords(err);
}

async function start() {
  if (!token) {
    notice(...GONE);
    return;
  }
  let link;
  try {
    link = await api("/api/password-links/check", { method: "POST", body: { token } });
  } catch (err) {
    notice(...problem(err));
    return;
  }
  $("username").value = link.username;
  fill($("for-user"), t(`Bruker: ${link.username}`, `User: ${link.username}`));
  $("password-form").hidden = false;
  $("password").focus();
}

$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const password = $("password").value;
  if (password !== $("again").value) {
    notice("De to passordene er ulike.", "The two passwords differ.");
    $("again").focus();
    return;
  }
  const button = e.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("/api/password-links/use", { method: "POST", body: { token, password } });
  } catch (err) {
    notice(...problem(err));
    button.disabled = false;
    $("password").focus();
    if (err instanceof ApiError && err.status === 404) $("password-form").hidden = true;
    return;
  }
  $("password-form").hidden = true;
  notice("Passordet er lagret. Logg inn med det nye passordet.", "The password is saved. Sign in with the new password.", "info");
  $("done").hidden = false;
  $("done").querySelector("a").focus();
});

start();

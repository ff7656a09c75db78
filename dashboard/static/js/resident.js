// The page /residents/{id}: one resident's card (js/card.js) on a page of its own, for
// staff of the resident's team, operators and admins. The id is the last part of the
// page's path; the API decides who may see the card (404 to everyone else, said here in
// both languages as "not found").

import { ApiError, errorWords, fill, h, languageToggle, showApiError, t, whoAmI } from "./common.js";
import { renderCard } from "./card.js";
import { pageNav } from "./nav.js";

/** The resident id of a path "/residents/{id}", or null. */
export function residentIdOf(pathname) {
  const match = /^\/residents\/([^/]+)\/?$/.exec(pathname);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

function showMissing(container, err) {
  const [nb, en] = errorWords(err);
  fill(container,
    h("h1", {}, t("Beboer", "Resident")),
    h("p", { class: "card-missing notice error" }, t(nb, en)));
}

async function main() {
  languageToggle();
  const container = document.getElementById("card");
  const me = await whoAmI();
  pageNav(me);
  const id = residentIdOf(location.pathname);
  if (id === null) {
    showMissing(container, new ApiError(404, ""));
    return;
  }
  try {
    const card = await renderCard(container, id, { headingLevel: 1 });
    document.title = `${card.name} – Trygg`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) showMissing(container, err);
    else showApiError(err);
  }
}

main().catch(showApiError);

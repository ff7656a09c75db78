// The resident card (GET /api/residents/{id}/card): name, address, access, contacts, team,
// devices and their health. Used by the console's resident panel and by /residents/{id}.
// (A first version showing the name only; the card itself follows.)

import { api, fill, h } from "./common.js";

/** Render resident `residentId`'s card into `container`; resolves to the card or throws ApiError. */
export async function renderCard(container, residentId) {
  const card = await api(`/api/residents/${encodeURIComponent(residentId)}/card`);
  fill(container, h("h2", {}, card.name));
  return card;
}

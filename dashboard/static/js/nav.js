// The links between the care pages, in the header of each (`<nav id="pages">`): the
// console, the shift, devices, and for administrators the admin page. Which links a
// role sees follows dashboard/pages.py PAGE_ROLES; the server refuses the rest anyway.

import { h, t } from "./common.js";

const PAGES = [
  { path: "/", nb: "Varsler", en: "Alerts", roles: ["staff", "operator", "admin"] },
  { path: "/shift", nb: "Vakt", en: "Shift", roles: ["staff", "operator", "admin"] },
  { path: "/devices", nb: "Utstyr", en: "Devices", roles: ["staff", "operator", "admin"] },
  { path: "/admin", nb: "Admin", en: "Admin", roles: ["admin"] },
];

/** Fill `<nav id="pages">` with the pages `me.role` may open; the current one is marked. */
export function pageNav(me, nav = document.getElementById("pages")) {
  if (!nav || !me) return;
  const here = location.pathname;
  nav.replaceChildren(...PAGES.filter((p) => p.roles.includes(me.role)).map((p) => {
    const current = p.path === here || (p.path !== "/" && here.startsWith(`${p.path}/`));
    return h("a", { href: p.path, class: current ? "current" : null, "aria-current": current ? "page" : null },
      t(p.nb, p.en));
  }));
}

// The links between the care pages, in the header of each (`<nav id="pages">`): the
// console, the shift, devices, and for administrators the admin page; and the header's
// menu, which holds them on a phone. Which links a
// role sees follows dashboard/pages.py PAGE_ROLES; the server refuses the rest anyway.

import { h, t } from "./common.js";

const PAGES = [
  { path: "/", nb: "Varsler", en: "Alerts", roles: ["staff", "operator", "admin"] },
  { path: "/shift", nb: "Vakt", en: "Shift", roles: ["staff", "operator", "admin"] },
  { path: "/devices", nb: "Utstyr", en: "Devices", roles: ["staff", "operator", "admin"] },
  { path: "/admin", nb: "Admin", en: "Admin", roles: ["admin"] },
];

/** Fill `<nav id="pages">` with the pages `me.role` may open; the current one is marked.
 *  Also wires the header's menu (`#menu-toggle`, `#menu`) once. */
export function pageNav(me, nav = document.getElementById("pages")) {
  headerMenu();
  if (!nav || !me) return;
  const here = location.pathname;
  nav.replaceChildren(...PAGES.filter((p) => p.roles.includes(me.role)).map((p) => {
    const current = p.path === here || (p.path !== "/" && here.startsWith(`${p.path}/`));
    return h("a", { href: p.path, class: current ? "current" : null, "aria-current": current ? "page" : null },
      t(p.nb, p.en));
  }));
}

let menuWired = false;

/** The header's menu (page links, who, language, sign out): a button on a phone, always
 *  open on a desktop (css/trygg.css). Escape closes it and gives the focus back. */
export function headerMenu() {
  const button = document.getElementById("menu-toggle");
  const box = document.getElementById("menu");
  if (menuWired || !button || !box) return;
  menuWired = true;
  const set = (open) => {
    button.setAttribute("aria-expanded", String(open));
    box.classList.toggle("open", open);
  };
  button.addEventListener("click", () => set(button.getAttribute("aria-expanded") !== "true"));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && box.classList.contains("open")) {
      set(false);
      button.focus();
      e.stopImmediatePropagation();
    }
  });
}

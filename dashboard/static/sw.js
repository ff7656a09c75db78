// Trygg's service worker: the staff console's shell (its HTML, CSS, scripts and vendored
// files) for a start without network, and the console's system notifications.
//
// Never the API: a request to /api/ (or /healthz, /login, /logout) is not touched, so an
// alert list is never served from a cache; a console started offline shows its shell with
// the red connection bar and no alerts (docs/console.md). Pages and files are asked from
// the network first; the cache answers only when the network does not.

const CACHE = "trygg-shell-v1";
const SHELL = [
  "/",
  "/manifest.webmanifest",
  "/favicon.ico",
  "/static/css/trygg.css",
  "/static/css/card.css",
  "/static/js/common.js",
  "/static/js/console.js",
  "/static/js/card.js",
  "/static/js/map.js",
  "/static/js/nav.js",
  "/static/vendor/leaflet/leaflet.css",
  "/static/vendor/leaflet/leaflet.js",
  "/static/icons/icon-192.png",
  "/static/icons/icon.svg",
];
/** Never from the cache, never into it. */
const NEVER = /^\/(api|healthz|login|logout|auth|docs|redoc|openapi)(\/|$|\.)/;

self.addEventListener("install", (event) => {
  // A file that fails (e.g. "/" before sign-in redirects) does not stop the others.
  event.waitUntil(caches.open(CACHE).then((cache) => Promise.all(SHELL.map((path) =>
    fetch(path, { credentials: "same-origin", redirect: "manual" })
      .then((response) => (response.ok ? cache.put(path, response) : null))
      .catch(() => null)))).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((key) => key !== CACHE).map((key) => caches.delete(key))))
    .then(() => self.clients.claim()));
});

function cacheable(url) {
  return url.origin === self.location.origin && !NEVER.test(url.pathname)
    && (SHELL.includes(url.pathname) || url.pathname.startsWith("/static/"));
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || !cacheable(url)) return; // the browser asks the network itself
  event.respondWith((async () => {
    try {
      const response = await fetch(request);
      // Only a real answer is kept: not a redirect to /login, not an error.
      if (response.ok && !response.redirected && response.type === "basic") {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(url.pathname === "/" ? "/" : request, copy));
      }
      return response;
    } catch (err) {
      const cached = await caches.match(url.pathname === "/" ? "/" : request);
      if (cached) return cached;
      throw err;
    }
  })());
});

// A click on a notification brings the console to the front (or opens it).
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = new URL(event.notification.data?.url || "/", self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const open = windows.find((client) => new URL(client.url).pathname === "/") || windows[0];
    if (open) return open.focus();
    return self.clients.openWindow(target);
  })());
});

// Positions on a map: Leaflet with the tile server of TRYGG_MAP_TILES_URL when its tiles
// load, else (no network, tiles blocked) a plain SVG plot of the points on a grid, so a
// position is never missing just because the map server cannot be reached.
//
// The SVG plot is drawn first and stays until the first tile has arrived.

const SVG = "http://www.w3.org/2000/svg";
const TILE_WAIT_MS = 6000;

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The tile URL template the page was served with (<meta name="trygg-map-tiles">). */
export function tilesUrl() {
  return document.querySelector('meta[name="trygg-map-tiles"]')?.content || "";
}

function niceStep(span, target = 5) {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function metres(m) {
  return m >= 1000 ? `${(m / 1000).toLocaleString("nb-NO", { maximumFractionDigits: 1 })} km` : `${Math.round(m)} m`;
}

/**
 * Draw `points` ([{lat, lon, accuracy_m?, ts?}], oldest first) into `container`.
 * Returns a handle with destroy().
 */
export function showPositions(container, points, { title = "Posisjoner / Positions" } = {}) {
  container.replaceChildren();
  container.classList.add("map");
  const valid = points.filter((p) => Number.isFinite(p.lat) && Number.isFinite(p.lon));
  if (!valid.length) {
    container.dataset.map = "none";
    return { destroy() {} };
  }
  const plot = document.createElement("div");
  plot.className = "map-plot";
  container.append(plot);
  const note = document.createElement("p");
  note.className = "map-note";
  note.textContent = "Kartet er ikke tilgjengelig – punktene vises på et rutenett · Map unavailable – points on a grid";
  plot.append(drawPlot(valid, title, container.clientWidth || 480, container.clientHeight || 300), note);
  container.dataset.map = "plot";

  let leaflet = null;
  const url = tilesUrl();
  if (url && window.L) {
    const tiles = document.createElement("div");
    tiles.className = "map-tiles waiting";
    container.append(tiles);
    try {
      leaflet = drawLeaflet(tiles, valid, url, () => {
        tiles.classList.remove("waiting");
        plot.hidden = true;
        container.dataset.map = "tiles";
      });
    } catch (err) {
      console.warn("map tiles unavailable", err);
      tiles.remove();
    }
  }
  return {
    destroy() {
      leaflet?.remove();
    },
  };
}

function drawLeaflet(div, points, url, onFirstTile) {
  const L = window.L;
  const map = L.map(div, { zoomControl: true, attributionControl: true, keyboard: true });
  let loaded = false;
  const layer = L.tileLayer(url, {
    maxZoom: 19,
    attribution: '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a>',
  });
  layer.on("tileload", () => {
    if (!loaded) {
      loaded = true;
      onFirstTile();
      map.invalidateSize();
    }
  });
  const giveUp = setTimeout(() => {
    if (!loaded) {
      map.remove();
      div.remove();
    }
  }, TILE_WAIT_MS);
  map.on("unload", () => clearTimeout(giveUp));
  layer.addTo(map);
  const latlngs = points.map((p) => [p.lat, p.lon]);
  if (latlngs.length > 1) L.polyline(latlngs, { color: "#1d4ed8", weight: 3, opacity: 0.7 }).addTo(map);
  points.forEach((p, i) => {
    const last = i === points.length - 1;
    if (last && p.accuracy_m) L.circle([p.lat, p.lon], { radius: p.accuracy_m, color: "#1d4ed8", weight: 1 }).addTo(map);
    L.circleMarker([p.lat, p.lon], {
      radius: last ? 8 : 4, color: last ? "#b3261e" : "#1d4ed8", fillOpacity: 0.9, weight: 2,
    }).addTo(map);
  });
  if (latlngs.length === 1) map.setView(latlngs[0], 16);
  else map.fitBounds(L.latLngBounds(latlngs), { padding: [24, 24], maxZoom: 17 });
  return map;
}

function drawPlot(points, title, W, H) {
  const PL = 58, PR = 16, PT = 16, PB = 28; // room for the axis labels left and below
  const w = W - PL - PR, hgt = H - PT - PB;
  let minLat = Math.min(...points.map((p) => p.lat)), maxLat = Math.max(...points.map((p) => p.lat));
  let minLon = Math.min(...points.map((p) => p.lon)), maxLon = Math.max(...points.map((p) => p.lon));
  const midLat = (minLat + maxLat) / 2;
  const kx = Math.cos((midLat * Math.PI) / 180); // degrees of longitude are shorter up north
  // At least ~600 m across, and the same scale both ways.
  let spanLat = Math.max(maxLat - minLat, 0.0055), spanLon = Math.max(maxLon - minLon, 0.0055 / kx);
  const aspect = w / hgt;
  if ((spanLon * kx) / spanLat < aspect) spanLon = (spanLat * aspect) / kx;
  else spanLat = (spanLon * kx) / aspect;
  spanLat *= 1.2;
  spanLon *= 1.2;
  const cLat = (minLat + maxLat) / 2, cLon = (minLon + maxLon) / 2;
  minLat = cLat - spanLat / 2; maxLat = cLat + spanLat / 2;
  minLon = cLon - spanLon / 2; maxLon = cLon + spanLon / 2;
  const x = (lon) => PL + ((lon - minLon) / spanLon) * w;
  const y = (lat) => PT + hgt - ((lat - minLat) / spanLat) * hgt;
  const pxPerMetre = hgt / (spanLat * 111_320);

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "plot" });
  svg.append(s("title", {}, title));
  svg.append(s("rect", { x: 0, y: 0, width: W, height: H, class: "plot-bg" }));
  const grid = s("g", { class: "plot-grid" });
  const stepLat = niceStep(spanLat, hgt / 60), stepLon = niceStep(spanLon, w / 90);
  const decimals = (step) => Math.max(0, Math.ceil(-Math.log10(step)));
  for (let v = Math.ceil(minLat / stepLat) * stepLat; v <= maxLat; v += stepLat) {
    grid.append(s("line", { x1: PL, x2: W - PR, y1: y(v), y2: y(v) }));
    grid.append(s("text", { x: PL - 6, y: y(v) + 4, class: "plot-label", "text-anchor": "end" }, v.toFixed(decimals(stepLat))));
  }
  for (let v = Math.ceil(minLon / stepLon) * stepLon; v <= maxLon; v += stepLon) {
    grid.append(s("line", { y1: PT, y2: PT + hgt, x1: x(v), x2: x(v) }));
    grid.append(s("text", { x: x(v), y: H - 9, class: "plot-label", "text-anchor": "middle" }, v.toFixed(decimals(stepLon))));
  }
  svg.append(grid);
  svg.append(s("rect", { x: PL, y: PT, width: w, height: hgt, class: "plot-frame" }));

  // A scale bar of a round number of metres, about a fifth of the width, bottom right.
  const bar = niceStep(w / 5 / pxPerMetre, 1);
  const barPx = bar * pxPerMetre;
  const by = PT + hgt - 12;
  svg.append(s("line", { x1: W - PR - 12 - barPx, x2: W - PR - 12, y1: by, y2: by, class: "plot-scale" }));
  svg.append(s("text", { x: W - PR - 12 - barPx / 2, y: by - 6, class: "plot-label", "text-anchor": "middle" },
    metres(bar)));

  if (points.length > 1) {
    svg.append(s("polyline", { points: points.map((p) => `${x(p.lon)},${y(p.lat)}`).join(" "), class: "plot-track" }));
  }
  points.forEach((p, i) => {
    const last = i === points.length - 1;
    if (last && p.accuracy_m) {
      svg.append(s("circle", { cx: x(p.lon), cy: y(p.lat), r: Math.max(3, p.accuracy_m * pxPerMetre), class: "plot-accuracy" }));
    }
    const dot = s("circle", { cx: x(p.lon), cy: y(p.lat), r: last ? 7 : 4, class: last ? "plot-point last" : "plot-point" });
    dot.append(s("title", {}, `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}${p.ts ? ` · ${new Date(p.ts).toLocaleString("nb-NO")}` : ""}`));
    svg.append(dot);
  });
  const lastPoint = points[points.length - 1];
  svg.append(s("text", { x: x(lastPoint.lon) + 10, y: y(lastPoint.lat) - 10, class: "plot-label strong" },
    "Siste / Latest"));
  return svg;
}

// The research page: counts per bucket and type as a stacked bar chart (SVG, drawn here),
// response-time percentiles per alert kind, and export links — all for the chosen period.
// What each part guarantees is said on the page next to it (docs/research.md "What is
// guaranteed"); the smallest group shown (k) is the server's, written where the page says 5.

import { ApiError, EVENT_TYPES, api, eventWords, fill, h, kindWords, languageToggle, notice, showApiError, t, whoAmI } from "./common.js";
import { pageNav } from "./nav.js";

const SVG = "http://www.w3.org/2000/svg";
// Okabe–Ito colours (distinguishable with colour-blindness), then a few more.
const COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
  "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#2CA02C"];

const $ = (id) => document.getElementById(id);

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A Date as the value of <input type=datetime-local> (local time, minutes). */
function localInput(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The form's period as RFC 3339 with offset (the API takes offset-less times as UTC). */
function period() {
  const since = new Date($("since").value);
  const until = new Date($("until").value);
  return { since: since.toISOString(), until: until.toISOString() };
}

function query() {
  const { since, until } = period();
  const params = new URLSearchParams({ since, until, bucket: $("bucket").value });
  if ($("type").value) params.set("type", $("type").value);
  return params;
}

function updateExports() {
  const { since, until } = period();
  for (const format of ["csv", "parquet"]) {
    $(`export-${format}`).href = `/api/research/export?${new URLSearchParams({ since, until, format })}`;
  }
}

async function run() {
  const { since, until } = period();
  if (!(new Date(since) < new Date(until))) {
    notice("«Fra» må være før «Til».", "«From» must be before «Until».");
    return;
  }
  notice(null);
  updateExports();
  fill($("chart-info"), t("Henter …", "Loading …"));
  try {
    const [counts, times] = await Promise.all([
      api(`/api/research/events?${query()}`),
      api(`/api/research/response-times?${new URLSearchParams({ since, until })}`),
    ]);
    for (const k of document.querySelectorAll(".k")) k.textContent = String(counts.min_group);
    drawChart(counts);
    countsTable(counts);
    responseTable(times);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    fill($("chart-info"));
    showApiError(err);
  }
}

function bucketLabel(iso, bucket) {
  const d = new Date(iso);
  if (bucket === "hour") return d.toLocaleString("nb-NO", { day: "numeric", month: "numeric", hour: "2-digit", minute: "2-digit" });
  if (bucket === "month") return d.toLocaleDateString("nb-NO", { month: "short", year: "numeric" });
  if (bucket === "week") return `uke ${isoWeek(d)}`;
  return d.toLocaleDateString("nb-NO", { day: "numeric", month: "short" });
}

function isoWeek(d) {
  const date = new Date(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()));
  const day = date.getUTCDay() || 7;
  date.setUTCDate(date.getUTCDate() + 4 - day);
  const yearStart = new Date(Date.UTC(date.getUTCFullYear(), 0, 1));
  return Math.ceil(((date - yearStart) / 86400000 + 1) / 7);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const mag = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * mag >= v) return m * mag;
  return 10 * mag;
}

function drawChart(counts) {
  const chart = $("chart");
  const legend = $("legend");
  const buckets = [...new Set(counts.rows.map((r) => r.bucket_start))].sort();
  const totals = new Map();
  for (const r of counts.rows) totals.set(r.type, (totals.get(r.type) || 0) + r.events);
  const types = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
  const colour = new Map(types.map((type, i) => [type, COLOURS[i % COLOURS.length]]));
  const held = counts.suppressed_groups
    ? t(` ${counts.suppressed_groups} grupper holdt tilbake (færre enn ${counts.min_group} beboere).`,
      `${counts.suppressed_groups} groups held back (fewer than ${counts.min_group} residents).`)
    : "";
  const total = counts.rows.reduce((n, r) => n + r.events, 0);
  // The server widens the period to whole buckets and days (docs/research.md): say which.
  const shown = (iso) => new Date(iso).toLocaleString("nb-NO", { dateStyle: "short", timeStyle: "short" });
  const used = t(` Tidsrom (utvidet til hele perioder): ${shown(counts.since)} – ${shown(counts.until)}.`,
    ` Period (widened to whole buckets): ${shown(counts.since)} – ${shown(counts.until)}.`);
  fill($("chart-info"), t(`${total.toLocaleString("nb-NO")} hendelser i ${buckets.length} perioder.`,
    `${total.toLocaleString("en-GB")} events in ${buckets.length} buckets.`), held, used);
  if (!buckets.length) {
    chart.dataset.bars = "0";
    fill(chart, h("p", { class: "empty" }, t("Ingen data å vise for dette utvalget.", "No data to show for this selection.")));
    fill(legend);
    return;
  }

  const W = 900, H = 380, L = 64, R = 16, T = 16, B = 70;
  const stacks = new Map(buckets.map((b) => [b, new Map()]));
  for (const r of counts.rows) stacks.get(r.bucket_start).set(r.type, r);
  const maxTotal = Math.max(...buckets.map((b) => [...stacks.get(b).values()].reduce((n, r) => n + r.events, 0)));
  const top = niceMax(maxTotal);
  const plotW = W - L - R, plotH = H - T - B;
  const slot = plotW / buckets.length;
  const barW = Math.max(2, Math.min(60, slot * 0.7));
  const y = (v) => T + plotH - (v / top) * plotH;

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "bar-chart",
    "aria-label": `Hendelser per ${counts.bucket} og type · Events per ${counts.bucket} and type` });
  svg.append(s("title", {}, "Hendelser per periode og type · Events per bucket and type"));
  const axis = s("g", { class: "axis" });
  for (let i = 0; i <= 5; i++) {
    const v = (top * i) / 5;
    axis.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: i ? "gridline" : "baseline" }));
    axis.append(s("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end" }, Number.isInteger(v) ? v.toLocaleString("nb-NO") : v.toFixed(1)));
  }
  axis.append(s("text", { x: 14, y: T + plotH / 2, transform: `rotate(-90 14 ${T + plotH / 2})`, "text-anchor": "middle" },
    "Antall · Count"));
  svg.append(axis);

  const every = Math.ceil(buckets.length / Math.floor(plotW / 70));
  const bars = s("g", { class: "bars" });
  let drawn = 0;
  buckets.forEach((b, i) => {
    const cx = L + slot * i + slot / 2;
    let acc = 0;
    for (const type of types) {
      const row = stacks.get(b).get(type);
      if (!row) continue;
      const rect = s("rect", { x: cx - barW / 2, y: y(acc + row.events), width: barW,
        height: Math.max(0.5, y(acc) - y(acc + row.events)), fill: colour.get(type), class: "bar",
        "data-type": type, "data-bucket": b, "data-events": row.events });
      rect.append(s("title", {}, `${bucketLabel(b, counts.bucket)} · ${eventWords(type)[0]} / ${eventWords(type)[1]}: `
        + `${row.events} hendelser / events, ${row.residents} beboere / residents`));
      bars.append(rect);
      acc += row.events;
      drawn += 1;
    }
    if (i % every === 0) {
      svg.append(s("text", { x: cx, y: T + plotH + 16, "text-anchor": "end", class: "xlabel",
        transform: `rotate(-35 ${cx} ${T + plotH + 16})` }, bucketLabel(b, counts.bucket)));
    }
  });
  svg.append(bars);
  chart.dataset.bars = String(drawn);
  fill(chart, svg);
  fill(legend, h("ul", {}, types.map((type) => h("li", {},
    h("span", { class: "swatch", style: `background:${colour.get(type)}`, "aria-hidden": "true" }),
    eventWords(type)[0], h("span", { class: "en inline" }, ` / ${eventWords(type)[1]}`),
    h("span", { class: "muted" }, ` (${totals.get(type).toLocaleString("nb-NO")})`)))));
}

/** A wide table in a box of its own that scrolls sideways on a phone (the page does not). */
function scrolls(label, table) {
  return h("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": label }, table);
}

function countsTable(counts) {
  const rows = [...counts.rows].sort((a, b) => a.bucket_start.localeCompare(b.bucket_start) || a.type.localeCompare(b.type));
  fill($("counts-table"), rows.length
    ? scrolls("Tallene · The numbers", h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Periode · Bucket"), h("th", { scope: "col" }, "Type"),
        h("th", { scope: "col", class: "num" }, "Hendelser · Events"), h("th", { scope: "col", class: "num" }, "Beboere · Residents"))),
      h("tbody", {}, rows.map((r) => h("tr", {},
        h("td", {}, bucketLabel(r.bucket_start, counts.bucket)), h("td", {}, r.type),
        h("td", { class: "num" }, r.events), h("td", { class: "num" }, r.residents))))))
    : h("p", { class: "muted" }, t("Ingen rader.", "No rows.")));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${seconds.toLocaleString("nb-NO", { maximumFractionDigits: 1 })} s`;
  if (seconds < 5400) return `${(seconds / 60).toLocaleString("nb-NO", { maximumFractionDigits: 1 })} min`;
  return `${(seconds / 3600).toLocaleString("nb-NO", { maximumFractionDigits: 1 })} t`;
}

function responseTable(times) {
  const box = $("response-times");
  if (!times.kinds.length) {
    fill(box, h("p", { class: "muted", id: "rt-empty" }, times.suppressed_groups
      ? t(`Ingen varseltype å vise: ${times.suppressed_groups} ${times.suppressed_groups === 1 ? "varseltype" : "varseltyper"} `
        + `holdt tilbake, hver med varsler fra færre enn ${times.min_group} beboere i tidsrommet.`,
      `No alert kind to show: ${times.suppressed_groups} alert ${times.suppressed_groups === 1 ? "kind" : "kinds"} held back, `
        + `each with alerts of fewer than ${times.min_group} residents in the period.`)
      : t("Ingen varsler fra beboere som samtykker i tidsrommet.", "No alerts of consenting residents in the period.")));
    return;
  }
  const head = (nb, en, cls) => h("th", { scope: "col", class: cls }, nb, h("span", { class: "en" }, en));
  fill(box, scrolls("Responstider · Response times", h("table", { class: "rt", id: "rt-table" },
    h("thead", {},
      h("tr", {}, head("Varseltype", "Alert kind"), head("Varsler", "Alerts", "num"), head("Beboere", "Residents", "num"),
        h("th", { scope: "colgroup", colspan: 3, class: "num" }, "Til tatt", h("span", { class: "en" }, "To acknowledge")),
        h("th", { scope: "colgroup", colspan: 3, class: "num" }, "Til løst", h("span", { class: "en" }, "To resolve"))),
      h("tr", {}, h("td"), h("td"), h("td"), ...["p50", "p90", "p99", "p50", "p90", "p99"].map((p) => h("th", { scope: "col", class: "num" }, p)))),
    h("tbody", {}, times.kinds.map((k) => h("tr", { dataset: { kind: k.kind } },
      h("th", { scope: "row" }, kindWords(k.kind)[0], h("span", { class: "en" }, kindWords(k.kind)[1])),
      h("td", { class: "num" }, k.alerts), h("td", { class: "num" }, k.residents),
      ...["p50", "p90", "p99"].map((p) => h("td", { class: "num" }, duration(k.time_to_acknowledge_s[p]))),
      ...["p50", "p90", "p99"].map((p) => h("td", { class: "num" }, duration(k.time_to_resolve_s[p])))))))));
  if (times.suppressed_groups) {
    box.append(h("p", { class: "muted" }, t(`${times.suppressed_groups} varseltyper holdt tilbake (færre enn ${times.min_group} beboere).`,
      `${times.suppressed_groups} alert kinds held back (fewer than ${times.min_group} residents).`)));
  }
}

async function main() {
  languageToggle();
  const now = new Date();
  $("until").value = localInput(new Date(now.getTime() + 60_000));
  $("since").value = localInput(new Date(now.getTime() - 30 * 86400_000));
  for (const type of EVENT_TYPES) {
    const [nb, en] = eventWords(type);
    $("type").append(h("option", { value: type }, `${nb} · ${en} (${type})`));
  }
  $("query").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  for (const id of ["since", "until"]) $(id).addEventListener("change", updateExports);
  try {
    pageNav(await whoAmI());
  } catch {
    return;
  }
  await run();
}

main();

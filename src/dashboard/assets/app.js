// purgeq dashboard: polls /api/v1/summary and draws it. Every text from the server goes into
// the DOM with textContent or as an SVG text node; nothing is parsed as HTML.
"use strict";

const POLL_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const STATES = ["queued", "running", "confirming", "succeeded", "failed", "cancelled"];
const COLOURS = { queued: "#1565c0", running: "#6a1b9a", confirming: "#00838f", succeeded: "#2e7d32", failed: "#c62828", cancelled: "#757575" };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

async function get(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function ms(d) {
  if (d === null || d === undefined) return "–";
  if (d < 1000) return d + " ms";
  if (d < 120000) return (d / 1000).toFixed(1) + " s";
  if (d < 7200000) return (d / 60000).toFixed(1) + " min";
  return (d / 3600000).toFixed(1) + " h";
}

function when(t) { return t ? t.replace("T", " ").replace(/\.\d+Z$|Z$/, "Z") : ""; }

function lanes(data) {
  const box = $("lanes");
  clear(box);
  if (data.lanes.length === 0) box.appendChild(el("p", "No lane has been used yet.", "muted"));
  for (const l of data.lanes) {
    const card = el("div", null, "card lane");
    card.dataset.lane = l.provider + "/" + l.account + "/" + l.action;
    card.appendChild(el("h3", l.provider + " · " + l.account + " · " + l.action));
    if (l.quota_day !== null && l.surplus_day !== null) {
      const used = Math.max(0, l.quota_day - l.surplus_day);
      const pct = l.quota_day > 0 ? Math.min(100, (100 * used) / l.quota_day) : 100;
      const gauge = el("div", null, pct > 80 ? "gauge high" : "gauge");
      gauge.setAttribute("role", "meter");
      gauge.setAttribute("aria-valuemin", "0");
      gauge.setAttribute("aria-valuemax", String(l.quota_day));
      gauge.setAttribute("aria-valuenow", String(used));
      gauge.dataset.used = String(used);
      gauge.dataset.left = String(l.surplus_day);
      const bar = el("div");
      bar.style.width = pct.toFixed(1) + "%";
      gauge.appendChild(bar);
      card.appendChild(gauge);
      card.appendChild(el("p", used + " used · " + l.surplus_day + " left of " + l.quota_day + " today", "quota"));
      // The server's per-lane forecast (distinct targets queued against what is left today).
      const f = (data.forecast || []).find((x) =>
        x.provider === l.provider && x.account === l.account && x.action === l.action);
      if (f) card.appendChild(el("p", "forecast: " + f.message, "muted forecast"));
    } else {
      card.appendChild(el("p", "quota not reported yet", "muted quota"));
    }
    if (l.paused) {
      card.appendChild(el("p", "paused until " + when(l.paused_until) + (l.reason ? ": " + l.reason : ""), "paused"));
    } else {
      card.appendChild(el("p", "open", "muted state"));
    }
    box.appendChild(card);
  }
}

function bars(node, items, max) {
  clear(node);
  const w = 320, h = 160, top = 14, bottom = 20, left = 4;
  const slot = (w - left) / Math.max(1, items.length);
  node.appendChild(svg("line", { x1: left, y1: h - bottom, x2: w, y2: h - bottom, stroke: "#cfd4dc" }));
  items.forEach((it, i) => {
    const x = left + i * slot;
    let y = h - bottom;
    for (const part of it.parts) {
      const ph = max > 0 ? ((h - top - bottom) * part.value) / max : 0;
      y -= ph;
      const r = svg("rect", { x: x + 1, y: y, width: Math.max(1, slot - 2), height: ph, fill: part.colour });
      r.dataset.value = String(part.value);
      r.appendChild(svg("title", {}, it.label + ": " + part.name + " " + part.value));
      node.appendChild(r);
    }
    if (it.text !== undefined) node.appendChild(svg("text", { x: x + slot / 2, y: y - 3, "text-anchor": "middle" }, it.text));
    if (it.axis) node.appendChild(svg("text", { x: x + slot / 2, y: h - 6, "text-anchor": "middle" }, it.axis));
  });
}

function depth(data) {
  const totals = {};
  for (const s of STATES) totals[s] = 0;
  for (const c of data.counts) totals[c.state] = (totals[c.state] || 0) + c.count;
  const items = STATES.map((s) => ({ label: s, text: totals[s], axis: s, parts: [{ name: s, value: totals[s], colour: COLOURS[s] }] }));
  bars($("depth"), items, Math.max(1, ...STATES.map((s) => totals[s])));
  $("depth").dataset.counts = JSON.stringify(totals);
  $("oldest").textContent = data.oldest_queued_age_secs === null
    ? "nothing queued"
    : "oldest queued job waited " + ms(1000 * data.oldest_queued_age_secs);
}

function hours(data) {
  const now = Date.parse(data.now);
  const first = Math.floor(now / 3600000) - 23;
  const by = {};
  for (const h of data.hours) by[Math.floor(h.hour_start / 3600000)] = h;
  const items = [];
  let max = 1, total = 0;
  for (let i = 0; i < 24; i++) {
    const h = by[first + i] || { enqueued: 0, succeeded: 0, failed: 0 };
    max = Math.max(max, h.succeeded + h.failed, h.enqueued);
    total += h.succeeded + h.failed;
    const hh = new Date((first + i) * 3600000).getUTCHours();
    items.push({
      label: String(hh).padStart(2, "0") + ":00 UTC",
      axis: i % 6 === 0 ? String(hh).padStart(2, "0") + "h" : undefined,
      parts: [
        { name: "succeeded", value: h.succeeded, colour: COLOURS.succeeded },
        { name: "failed", value: h.failed, colour: COLOURS.failed },
      ],
      enqueued: h.enqueued,
    });
  }
  const node = $("hours");
  bars(node, items, max);
  const slot = (320 - 4) / 24;
  const points = items.map((it, i) => (4 + i * slot + slot / 2).toFixed(1) + "," + (140 - (126 * it.enqueued) / max).toFixed(1));
  node.appendChild(svg("polyline", { points: points.join(" "), fill: "none", stroke: COLOURS.queued, "stroke-width": 1.5 }));
  node.dataset.finished = String(total);
}

function finish(data) {
  const f = data.finish_ms;
  const keys = ["p50", "p90", "p99", "max"];
  const items = keys.map((k) => ({ label: k, axis: k, text: ms(f[k]), parts: [{ name: k, value: f[k] || 0, colour: COLOURS.succeeded }] }));
  bars($("finish"), items, Math.max(1, f.max || 0));
  $("finish").dataset.p50 = String(f.p50);
  $("finish-count").textContent = f.count + " succeeded jobs, enqueue to finish";
}

function row(cells, onclick) {
  const tr = el("tr");
  for (const c of cells) tr.appendChild(el("td", c === null || c === undefined ? "" : c));
  if (onclick) { tr.className = "link"; tr.addEventListener("click", onclick); }
  return tr;
}

function fill(table, rows) {
  const body = table.tBodies[0];
  clear(body);
  for (const r of rows) body.appendChild(r);
  if (rows.length === 0) body.appendChild(row(["none"]));
}

function tables(data) {
  fill($("recent"), data.jobs.map((j) => row([j.id, j.state, j.provider, j.target, j.tag, when(j.updated_at)], () => openJob(j.id))));
  fill($("failed"), data.failed.map((j) => row([j.id, j.provider, j.target, j.tag, j.last_error, when(j.finished_at)], () => openJob(j.id))));
  fill($("calls"), data.calls.map((c) => row([c.id, c.provider, c.account, c.operation, c.target_count, c.outcome, c.http_status, c.message, when(c.started_at)])));
}

function jobRows(jobs) {
  const t = el("table");
  const head = el("tr");
  for (const h of ["id", "state", "provider", "target", "tag", "updated"]) head.appendChild(el("th", h));
  t.appendChild(el("thead")).appendChild(head);
  const body = el("tbody");
  for (const j of jobs) body.appendChild(row([j.id, j.state, j.provider, j.target, j.tag, when(j.updated_at)], () => openJob(j.id)));
  t.appendChild(body);
  const wrap = el("div", null, "scroll");
  wrap.appendChild(t);
  return wrap;
}

async function openJob(id) {
  const box = $("job");
  clear(box);
  box.hidden = false;
  try {
    const d = await get("/api/v1/jobs/" + encodeURIComponent(id));
    const j = d.job;
    box.appendChild(el("h3", "Job " + j.id));
    const dl = el("dl");
    const steps = [["state", j.state], ["target", j.target], ["tag", j.tag], ["lane", j.provider + " · " + j.account + " · " + j.action],
      ["attempts", j.attempts], ["enqueued", when(j.created_at)], ["updated", when(j.updated_at)], ["finished", when(j.finished_at)],
      ["request id", j.request_id], ["last error", j.last_error]];
    for (const [k, v] of steps) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v === null ? "–" : v)); }
    box.appendChild(dl);
    box.appendChild(el("h3", "Calls (" + d.calls.length + ")"));
    const t = el("table");
    const head = el("tr");
    for (const h of ["id", "operation", "outcome", "HTTP", "code", "message", "started", "finished"]) head.appendChild(el("th", h));
    t.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    for (const c of d.calls) body.appendChild(row([c.id, c.operation, c.outcome, c.http_status, c.provider_code, c.message, when(c.started_at), when(c.finished_at)]));
    t.appendChild(body);
    const wrap = el("div", null, "scroll");
    wrap.appendChild(t);
    box.appendChild(wrap);
  } catch (e) {
    box.appendChild(el("p", "Cannot open job " + id + ": " + e.message, "paused"));
  }
}

async function search(ev) {
  ev.preventDefault();
  const q = $("q").value.trim();
  const out = $("results");
  clear(out);
  if (!q) return;
  if (/^\d+$/.test(q)) { openJob(q); return; }
  try {
    const byTag = await get("/api/v1/jobs?limit=20&tag=" + encodeURIComponent(q));
    const byUrl = await get("/api/v1/jobs?limit=20&url=" + encodeURIComponent(q));
    const seen = new Set();
    const jobs = byTag.jobs.concat(byUrl.jobs).filter((j) => !seen.has(j.id) && seen.add(j.id));
    out.appendChild(el("p", jobs.length + " jobs match", "muted"));
    if (jobs.length) out.appendChild(jobRows(jobs));
  } catch (e) {
    out.appendChild(el("p", e.message, "paused"));
  }
}

async function refresh() {
  try {
    const data = await get("/api/v1/summary");
    lanes(data);
    depth(data);
    hours(data);
    finish(data);
    tables(data);
    $("updated").textContent = "updated " + when(data.now);
    $("error").hidden = true;
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("error").textContent = "cannot load: " + e.message;
    $("error").hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", search);
  refresh();
  setInterval(refresh, POLL_MS);
});

// simsearch's page: pick or drop a photo, see the nearest stored images as a grid and as a
// map placed by distance. Plain DOM and SVG; no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
// last: what was searched last ({file} or {result}), searched again when a control changes;
// again: a control changed while a search ran.
const state = { busy: false, last: null, again: false };
const REMEMBERED_SET = "simsearch.featureSet";

function remembered() {
  try { return localStorage.getItem(REMEMBERED_SET); } catch { return null; }
}

function remember(name) {
  try { if (name) localStorage.setItem(REMEMBERED_SET, name); } catch { /* private mode */ }
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function params() {
  const q = new URLSearchParams();
  q.set("n", String(Math.max(1, Math.min(100, parseInt($("n").value, 10) || 12))));
  const fs = $("feature-set").value;
  if (fs) q.set("feature_set", fs);
  if ($("exact").checked) q.set("exact", "true");
  for (const condition of $("where").value.split(";")) {
    if (condition.trim()) q.append("where", condition.trim());
  }
  return q;
}

const thumb = (id, size = 256) => `/thumbnails/${encodeURIComponent(id)}?size=${size}`;

async function loadFeatureSets() {
  const select = $("feature-set");
  try {
    const response = await fetch("/feature-sets");
    const sets = await response.json();
    select.replaceChildren(...sets.map((fs) => {
      const option = document.createElement("option");
      option.value = fs.name;
      option.textContent = `${fs.name} (${fs.rows.toLocaleString()})`;
      return option;
    }));
    // The feature set used last on this browser, while it exists; else the first.
    const last = remembered();
    if (sets.some((fs) => fs.name === last)) select.value = last;
    if (!sets.length) {
      setStatus("The database has no feature sets yet: run `simsearch index PHOTO_DIR` " +
                "(a folder of photos) or `simsearch ingest FEATURE_DIR` (.npy shards).");
    }
  } catch (err) {
    setStatus(`Cannot reach the server: ${err}`, true);
  }
}

async function run(label, request) {
  if (state.busy) {
    state.again = true;  // searched again with the newest settings once this one is done
    return;
  }
  state.busy = true;
  setStatus(`Searching ${label} ...`);
  const started = performance.now();
  try {
    const response = await request();
    const body = await response.json();
    if (!response.ok) throw new Error(errorText(body, response));
    const ms = Math.round(performance.now() - started);
    render(body);
    remember(body.feature_set);
    setStatus(`${body.results.length} results from ${body.feature_set} in ${ms} ms`);
  } catch (err) {
    clearResults();  // results of an earlier search must not pass for this one's
    setStatus(err.message || String(err), true);
  } finally {
    state.busy = false;
  }
  if (state.again) {
    state.again = false;
    searchAgain();
  }
}

function errorText(body, response) {
  if (Array.isArray(body.detail)) {  // FastAPI's validation errors: say which field and why
    return body.detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
  }
  return body.error || body.detail || response.statusText;
}

function clearResults() {
  $("results").replaceChildren();
  $("results-title").hidden = true;
  $("map").replaceChildren();
}

// A control changed: the same query again, with the new settings.
function searchAgain() {
  if (state.last && state.last.file) searchFile(state.last.file);
  else if (state.last && state.last.result) searchSimilar(state.last.result);
}

function showQuery(src, caption) {
  const img = $("query-image");
  img.src = src;
  img.hidden = false;
  $("drop-hint").hidden = true;
  $("query-caption").textContent = caption;
  state.querySrc = src;
}

function searchFile(file) {
  if (!file) return;
  state.last = { file };
  showQuery(URL.createObjectURL(file), file.name);
  const form = new FormData();
  form.append("image", file, file.name);
  run(file.name, () => fetch(`/search?${params()}`, { method: "POST", body: form }));
}

function searchSimilar(result) {
  state.last = { result };
  showQuery(thumb(result.object_id, 512), result.path || result.object_id);
  run(result.object_id, () => fetch(`/similar/${encodeURIComponent(result.object_id)}?${params()}`));
}

function render(body) {
  $("results-title").hidden = false;
  $("results").replaceChildren(...body.results.map((r, i) => {
    const li = document.createElement("li");
    li.dataset.objectId = r.object_id;
    const button = document.createElement("button");
    button.type = "button";
    button.title = `Search by ${r.object_id}`;
    const img = document.createElement("img");
    img.src = thumb(r.object_id);
    img.alt = r.path || r.object_id;
    img.loading = "lazy";
    // No file recorded for this id (e.g. loaded from shards only): a quiet placeholder.
    img.addEventListener("error", () => { img.replaceWith(placeholder(r)); }, { once: true });
    const meta = document.createElement("div");
    meta.className = "meta";
    const size = r.width && r.height ? ` · ${r.width}×${r.height}` : "";
    meta.innerHTML = `<span class="rank">${i + 1}.</span> <span class="distance"></span>${size}` +
      `<div class="path"></div>`;
    meta.querySelector(".distance").textContent = r.distance.toFixed(4);
    meta.querySelector(".path").textContent = r.path || r.object_id;
    button.append(img, meta);
    button.addEventListener("click", () => searchSimilar(r));
    li.append(button);
    return li;
  }));
  drawMap(body.results);
}

function placeholder(r) {
  const div = document.createElement("div");
  div.className = "no-image";
  div.textContent = "no image file";
  div.title = r.object_id;
  return div;
}

function niceStep(max) {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
}

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.append(node);
  return node;
}

// Results on rings around the query: a dot at each result's distance (radius grows linearly
// with distance from the query's edge; the axis and the rings give the scale), angle by rank so
// that near results spread out. Thumbnails sit as near their dots as they can without
// covering each other, the query, or the axis; a leader line joins a moved thumbnail to its dot.
const MAP = { cx: 320, cy: 210, R: 190, inner: 40, query: 64, width: 640, gap: 4 };

function drawMap(results) {
  const svg = $("map");
  svg.replaceChildren();
  const { cx, cy, R, inner } = MAP;
  const size = tileSize(results.length);
  const maxDistance = Math.max(...results.map((r) => r.distance), 1e-9);
  const step = niceStep(maxDistance);
  const top = Math.ceil(maxDistance / step) * step;
  const scale = (R - inner) / top;
  const radiusOf = (d) => inner + d * scale;
  for (let d = 0; d <= top + 1e-9; d += step) {
    el("circle", { class: "ring", cx, cy, r: radiusOf(d) }, svg);
  }
  const axis = el("g", { class: "axis-group" }, svg);
  el("line", { class: "axis", x1: cx + inner, y1: cy + R + 14, x2: cx + R, y2: cy + R + 14 }, axis);
  for (let d = 0; d <= top + 1e-9; d += step) {
    const x = cx + radiusOf(d);
    el("line", { class: "axis", x1: x, y1: cy + R + 10, x2: x, y2: cy + R + 18 }, axis);
    el("text", { class: "tick", x, y: cy + R + 30, "text-anchor": "middle" }, axis).textContent =
      Number(d.toFixed(4)).toString();
  }
  el("text", { class: "tick", x: cx + R + 8, y: cy + R + 18 }, axis).textContent = "distance";
  const golden = Math.PI * (3 - Math.sqrt(5));
  const spots = results.map((r, i) => {
    const angle = -Math.PI / 2 + i * golden;
    const radius = radiusOf(r.distance);
    const x = cx + radius * Math.cos(angle), y = cy + radius * Math.sin(angle);
    return { r, i, dotX: x, dotY: y, x, y };
  });
  layOut(spots, size);
  for (const s of spots) {
    el("line", { class: "spoke", x1: cx, y1: cy, x2: s.dotX, y2: s.dotY }, svg);
    if (Math.hypot(s.x - s.dotX, s.y - s.dotY) > 1) {
      el("line", { class: "leader", x1: s.dotX, y1: s.dotY, x2: s.x, y2: s.y }, svg);
    }
    el("circle", { class: "dot", cx: s.dotX, cy: s.dotY, r: 2.5 }, svg);
  }
  if (state.querySrc) {
    const h = MAP.query / 2;
    const q = el("g", { class: "query" }, svg);
    el("rect", { x: cx - h, y: cy - h, width: MAP.query, height: MAP.query, fill: "#fff" }, q);
    el("image", { href: state.querySrc, x: cx - h, y: cy - h, width: MAP.query,
                  height: MAP.query, preserveAspectRatio: "xMidYMid meet" }, q);
    el("rect", { class: "frame", x: cx - h, y: cy - h, width: MAP.query, height: MAP.query,
                 fill: "none", stroke: "#2f6fdd", "stroke-width": 2 }, q);
  }
  for (const s of [...spots].reverse()) {  // nearest drawn last
    const g = el("g", { class: "hit", tabindex: 0, "data-object-id": s.r.object_id,
                        transform: `translate(${s.x - size / 2},${s.y - size / 2})` }, svg);
    el("title", {}, g).textContent = `${s.i + 1}. ${s.r.path || s.r.object_id}\ndistance ${s.r.distance.toFixed(4)}`;
    el("rect", { class: "frame", x: -2, y: -2, width: size + 4, height: size + 4, rx: 3 }, g);
    el("image", { href: thumb(s.r.object_id, 128), width: size, height: size,
                  preserveAspectRatio: "xMidYMid meet" }, g);
    // The rank as a badge inside the tile's corner: no other tile can cover it.
    const badge = el("g", { class: "badge" }, g);
    const label = String(s.i + 1);
    el("rect", { x: -2, y: -2, width: 7 + 6 * label.length, height: 13, rx: 3 }, badge);
    el("text", { class: "rank", x: 1.5, y: 8 }, badge).textContent = label;
    g.addEventListener("click", () => searchSimilar(s.r));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") searchSimilar(s.r); });
  }
}

function tileSize(count) {
  // Room for every tile: about a third of the map's area, shared out, within 18..44 pixels.
  const area = MAP.width * (MAP.cy + MAP.R) * 0.33;
  return Math.max(18, Math.min(44, Math.floor(Math.sqrt(area / Math.max(count, 1))) - MAP.gap));
}

// Move tiles (centres s.x, s.y; squares of `size` plus a frame) apart until none overlaps
// another or the query tile, keeping them inside the map above the axis. Each overlap is
// undone along the axis where it is smaller, half by each tile; the query tile does not move.
function layOut(spots, size) {
  const half = size / 2 + 2 + MAP.gap / 2;  // frame and gap included
  const qHalf = MAP.query / 2 + 1 + MAP.gap / 2;
  const box = { left: half, right: MAP.width - half, top: half, bottom: MAP.cy + MAP.R + 8 - half };
  const clamp = (s) => {
    s.x = Math.min(box.right, Math.max(box.left, s.x));
    s.y = Math.min(box.bottom, Math.max(box.top, s.y));
  };
  const apart = (dx, dy, needX, needY, fallback) => {
    const ox = needX - Math.abs(dx), oy = needY - Math.abs(dy);
    if (ox <= 0 || oy <= 0) return null;
    if (ox < oy) return [ox * (Math.sign(dx) || fallback), 0];
    return [0, oy * (Math.sign(dy) || fallback)];
  };
  for (let round = 0; round < 500; round++) {
    let moved = false;
    for (const s of spots) {
      const push = apart(s.x - MAP.cx, s.y - MAP.cy, qHalf + half, qHalf + half, -1);
      if (push) { s.x += push[0]; s.y += push[1]; clamp(s); moved = true; }
    }
    for (let a = 0; a < spots.length; a++) {
      for (let b = a + 1; b < spots.length; b++) {
        const s = spots[a], t = spots[b];
        const push = apart(t.x - s.x, t.y - s.y, 2 * half, 2 * half, b % 2 ? 1 : -1);
        if (!push) continue;
        s.x -= push[0] / 2; s.y -= push[1] / 2;
        t.x += push[0] / 2; t.y += push[1] / 2;
        clamp(s); clamp(t);
        moved = true;
      }
    }
    if (!moved) return;
  }
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    searchFile(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  // Every control searches again: the menu, the count, exact, and where (on Enter or leaving it).
  for (const id of ["feature-set", "n", "exact", "where"]) {
    $(id).addEventListener("change", () => {
      if (id === "feature-set") remember($(id).value);
      searchAgain();
    });
  }
  loadFeatureSets();
}

wire();

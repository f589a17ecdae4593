// simsearch's page: pick or drop a photo, see the nearest stored images as a grid and as a
// map placed by distance. Plain DOM and SVG; no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { busy: false };

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
    if (!sets.length) setStatus("The database has no feature sets yet: run `simsearch index IMAGE_DIR`.");
  } catch (err) {
    setStatus(`Cannot reach the server: ${err}`, true);
  }
}

async function run(label, request) {
  if (state.busy) return;
  state.busy = true;
  setStatus(`Searching ${label} ...`);
  const started = performance.now();
  try {
    const response = await request();
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || body.detail || response.statusText);
    const ms = Math.round(performance.now() - started);
    render(body);
    setStatus(`${body.results.length} results from ${body.feature_set} in ${ms} ms`);
  } catch (err) {
    setStatus(err.message || String(err), true);
  } finally {
    state.busy = false;
  }
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
  showQuery(URL.createObjectURL(file), file.name);
  const form = new FormData();
  form.append("image", file, file.name);
  run(file.name, () => fetch(`/search?${params()}`, { method: "POST", body: form }));
}

function searchSimilar(result) {
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

// Results on rings around the query: radius grows linearly with distance from the query's edge
// (the axis and the rings give the scale), angle by rank so that near results spread out.
function drawMap(results) {
  const svg = $("map");
  svg.replaceChildren();
  const cx = 320, cy = 210, R = 190, inner = 40, size = 44;
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
    return { r, i, x: cx + radius * Math.cos(angle), y: cy + radius * Math.sin(angle) };
  });
  for (const s of spots) el("line", { class: "spoke", x1: cx, y1: cy, x2: s.x, y2: s.y }, svg);
  // The query in the middle, drawn first so that a result at distance 0 sits on top of it.
  if (state.querySrc) {
    el("image", { href: state.querySrc, x: cx - 32, y: cy - 32, width: 64, height: 64,
                  preserveAspectRatio: "xMidYMid meet" }, svg);
    el("rect", { x: cx - 32, y: cy - 32, width: 64, height: 64, fill: "none",
                 stroke: "#2f6fdd", "stroke-width": 2 }, svg);
  }
  for (const s of [...spots].reverse()) {  // nearest drawn last, on top
    const g = el("g", { class: "hit", tabindex: 0, "data-object-id": s.r.object_id,
                        transform: `translate(${s.x - size / 2},${s.y - size / 2})` }, svg);
    el("title", {}, g).textContent = `${s.i + 1}. ${s.r.path || s.r.object_id}\ndistance ${s.r.distance.toFixed(4)}`;
    el("rect", { x: -2, y: -2, width: size + 4, height: size + 4, rx: 3 }, g);
    el("image", { href: thumb(s.r.object_id, 128), width: size, height: size,
                  preserveAspectRatio: "xMidYMid meet" }, g);
    el("text", { class: "rank", x: 0, y: size + 12 }, g).textContent = String(s.i + 1);
    g.addEventListener("click", () => searchSimilar(s.r));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") searchSimilar(s.r); });
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
  loadFeatureSets();
}

wire();

// The page's "Duplicates" view: groups of copies from GET /duplicates, a page at a time, with
// thumbnails and the copy to keep marked. Shown when the address ends in #duplicates; the
// search view (app.js) is left as it is. Plain DOM; no build step.
"use strict";

(() => {
  const el = (id) => document.getElementById(id);
  const view = { page: 1, perPage: 10, pages: 1, busy: false };

  function make(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    Object.assign(node, props);
    node.append(...children);
    return node;
  }

  function show() {
    const on = location.hash === "#duplicates";
    el("duplicates-view").hidden = !on;
    document.querySelector("main").hidden = on;
    el("duplicates-link").classList.toggle("current", on);
    el("search-link").classList.toggle("current", !on);
    if (on) load();
  }

  function memberCard(group, member) {
    const keeper = member.object_id === group.keep;
    const size = member.width && member.height ? `${member.width}\u00d7${member.height}` : "size unknown";
    const bytes = member.bytes == null ? "" : ` \u00b7 ${member.bytes.toLocaleString()} bytes`;
    return make("li", { className: keeper ? "member keeper" : "member", title: member.object_id }, [
      make("img", {
        src: `/thumbnails/${encodeURIComponent(member.object_id)}?size=160`,
        alt: member.path || member.object_id,
      }),
      make("span", { className: "badge", textContent: keeper ? "keep" : `copy \u00b7 ${member.distance.toFixed(2)}` }),
      make("span", { className: "path", textContent: member.path || member.object_id }),
      make("span", { className: "size", textContent: size + bytes }),
    ]);
  }

  function render(body) {
    view.pages = body.pages;
    el("duplicates-page").textContent = `page ${body.page} of ${body.pages}`;
    el("duplicates-prev").disabled = body.page <= 1;
    el("duplicates-next").disabled = body.page >= body.pages;
    el("duplicates-summary").textContent =
      `${body.total_groups} group(s) in ${body.feature_set} at level ${body.level}`;
    el("duplicate-groups").replaceChildren(...body.groups.map((group) => make(
      "li", { className: "duplicate-group" }, [
        make("h3", { textContent: `Group ${group.group} \u00b7 ${group.level} \u00b7 diameter ${group.diameter.toFixed(2)}` }),
        make("p", { className: "reason", textContent: `keep: ${group.reason}` }),
        make("ol", { className: "members" }, group.members.map((m) => memberCard(group, m))),
      ])));
  }

  async function load() {
    if (view.busy) return;
    view.busy = true;
    const q = new URLSearchParams({ level: el("duplicates-level").value, page: view.page, per_page: view.perPage });
    const fs = el("feature-set").value;
    if (fs) q.set("feature_set", fs);
    el("duplicates-summary").textContent = "Looking for duplicates ...";
    try {
      const response = await fetch(`/duplicates?${q}`);
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || body.detail || response.statusText);
      render(body);
    } catch (err) {
      el("duplicates-summary").textContent = err.message || String(err);
    } finally {
      view.busy = false;
    }
  }

  el("duplicates-prev").addEventListener("click", () => { view.page = Math.max(1, view.page - 1); load(); });
  el("duplicates-next").addEventListener("click", () => { view.page = Math.min(view.pages, view.page + 1); load(); });
  el("duplicates-level").addEventListener("change", () => { view.page = 1; load(); });
  el("feature-set").addEventListener("change", () => { view.page = 1; if (location.hash === "#duplicates") load(); });
  window.addEventListener("hashchange", show);
  show();
})();

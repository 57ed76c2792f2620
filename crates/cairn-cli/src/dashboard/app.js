// Cairn's dashboard: reads /api/* (same origin, the session cookie) and
// builds the page with DOM calls only (names from the cluster are never
// parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function bar(done, total) {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  const i = el("i");
  i.style.width = pct.toFixed(1) + "%";
  return el("span", { class: "bar", title: pct.toFixed(0) + "%" }, i);
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function showError(e) {
  const box = $("error");
  if (e) { box.textContent = String(e.message || e); box.hidden = false; }
  else box.hidden = true;
}

// ---- cluster ------------------------------------------------------------

function renderStatus(d) {
  const s = d.status;
  const live = s.nodes.filter((n) => n.state === "live").length;
  $("summary").replaceChildren(
    el("span", {}, `${live} of ${s.nodes.length} nodes live`),
    el("span", {}, `${s.chunks} chunks`),
    el("span", {}, `${bytes(s.logical_bytes)} of files`),
    el("span", {}, `${s.under_replicated_chunks} under-replicated`),
    el("span", {}, `${s.unavailable_chunks} unavailable`),
    el("span", {}, `${s.pending_garbage_chunks} garbage pending`),
  );
  $("nodes").tBodies[0].replaceChildren(...s.nodes.map((n) => el("tr", { "data-node": n.id },
    el("td", {}, el("code", {}, n.id)),
    el("td", {}, n.addr),
    el("td", {}, n.zone),
    el("td", {}, n.host),
    el("td", { class: "state-" + n.state }, n.state),
    el("td", {}, (n.groups || []).join(", ")),
    el("td", { class: "num" }, n.chunks),
    el("td", {}, bar(n.used_bytes, n.total_bytes), `${bytes(n.used_bytes)} / ${bytes(n.total_bytes)}`),
    el("td", { class: "num" }, bytes(n.free_bytes)),
    el("td", { class: "num" }, bytes(n.cache_bytes)),
    el("td", {}, n.problem || ""),
  )));
  const r = s.repair;
  $("repair").replaceChildren(
    el("div", {}, `repair: ${r.chunks_pending} chunks pending, ${bytes(r.bytes_left)} left` +
      (r.bytes_per_s ? ` at ${bytes(r.bytes_per_s)}/s` : "") +
      `; ${r.copies_done} copies made, ${r.copies_failed} failed, ${r.orphans_deleted} orphans deleted`),
  );
  $("workers").replaceChildren(...s.workers.map((w) => el("li", {},
    el("b", {}, w.name), `: ${w.state}`, w.progress ? ` — ${w.progress}` : "",
    w.last_error ? el("span", { class: "state-dead" }, ` (last error: ${w.last_error})`) : null)));
  $("prefetch").replaceChildren(...(d.prefetch.length ? d.prefetch.map((j) => el("div", {},
    bar(j.copies_done, j.copies_total),
    `job ${j.id} to ${j.group}: ${j.state}, ${j.copies_done}/${j.copies_total} copies, ` +
    `${j.nodes_done}/${j.nodes} nodes, ${bytes(j.bytes_done)} of ${bytes(j.bytes * Math.max(1, j.nodes))}`))
    : [el("div", {}, "no prefetch jobs")]));
  renderThroughput(d.throughput);
}

function renderThroughput(samples) {
  const svg = $("throughput");
  const ns = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, pad = 24;
  svg.replaceChildren();
  const max = Math.max(1, ...samples.map((s) => Math.max(s.read_bps, s.write_bps)));
  const t1 = samples.length ? samples[samples.length - 1].t_ms : 0;
  const span = 6 * 60 * 1000;
  const x = (t) => pad + ((W - 2 * pad) * (span - (t1 - t))) / span;
  const y = (v) => H - pad - ((H - 2 * pad) * v) / max;
  for (const [key, cls] of [["read_bps", "read"], ["write_bps", "write"]]) {
    const p = document.createElementNS(ns, "polyline");
    p.setAttribute("class", cls);
    p.setAttribute("points", samples.map((s) => `${x(s.t_ms).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" "));
    svg.append(p);
  }
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", pad);
  label.setAttribute("y", 14);
  label.textContent = `max ${bytes(max)}/s over the last 6 min`;
  svg.append(label);
  const last = samples[samples.length - 1];
  $("rate-now").textContent = last ? ` now: read ${bytes(last.read_bps)}/s, written ${bytes(last.write_bps)}/s` : " (sampling…)";
}

async function refreshStatus() {
  try { renderStatus(await api("/api/status")); showError(null); }
  catch (e) { showError(e); }
}

// ---- files --------------------------------------------------------------

function current() {
  const h = decodeURIComponent(location.hash.replace(/^#/, ""));
  return h.startsWith("/") ? h : "/";
}

function parentOf(p) {
  const i = p.lastIndexOf("/");
  return i <= 0 ? "/" : p.slice(0, i);
}

function join(dir, name) {
  return dir === "/" ? "/" + name : dir + "/" + name;
}

function go(p) { location.hash = encodeURIComponent(p).replace(/%2F/g, "/"); }

function crumbs(p) {
  const parts = p.split("/").filter(Boolean);
  const out = [el("a", { onclick: () => go("/") }, "/")];
  let acc = "";
  for (const part of parts) {
    acc += "/" + part;
    const to = acc;
    out.push(el("a", { onclick: () => go(to) }, part), " / ");
  }
  $("crumbs").replaceChildren(...out);
}

async function showDir(dir, selected) {
  const rows = [];
  let after = null;
  for (;;) {
    const q = "/api/ls?path=" + encodeURIComponent(dir) + (after ? "&after=" + encodeURIComponent(after) : "");
    const page = await api(q);
    rows.push(...page.entries);
    if (!page.more || rows.length >= 5000) break;
    after = page.entries[page.entries.length - 1].name;
  }
  $("listing").tBodies[0].replaceChildren(...(dir !== "/" ? [el("tr", {},
    el("td", {}, el("a", { onclick: () => go(parentOf(dir)) }, "..")))] : []),
    ...rows.map((e) => {
      const p = join(dir, e.name);
      const isDir = e.type === "dir" || e.type === "directory";
      return el("tr", { class: e.name === selected ? "selected" : "", "data-name": e.name },
        el("td", {}, el("a", { onclick: () => go(p) }, e.name + (isDir ? "/" : ""))),
        el("td", { class: "num" }, isDir ? "" : bytes(e.size)),
        el("td", {}, when(e.mtime_ms)),
        el("td", { class: "num" }, e.version),
        el("td", {}, isDir ? "" : e.inline ? "in meta" : `${e.chunks} chunk(s)`));
    }));
}

function showFile(d) {
  const s = d.stat;
  const dl = el("dl", {},
    el("dt", {}, "path"), el("dd", {}, d.path),
    el("dt", {}, "size"), el("dd", {}, `${bytes(s.size)} (${s.size} bytes)`),
    el("dt", {}, "version"), el("dd", {}, s.version),
    el("dt", {}, "modified"), el("dd", {}, when(s.mtime_ms)),
    el("dt", {}, "mode, owner"), el("dd", {}, `${s.mode}, ` + (s.uid === null ? "no owner (written by the CLI, S3 or Python)" : `${s.uid}:${s.gid}`)),
    el("dt", {}, "cues"), el("dd", {}, el("code", {}, d.cues || "")),
    el("dt", {}, "stored"), el("dd", {}, s.inline ? "in meta's record (inline)" : `${s.chunks} chunk(s) of ${bytes(s.chunk_size)}`),
  );
  const versions = el("table", { id: "versions" },
    el("thead", {}, el("tr", {}, el("th", {}, "version"), el("th", { class: "num" }, "size"), el("th", {}, "modified"))),
    el("tbody", {}, ...(d.versions || []).map((v, i) => el("tr", {},
      el("td", {}, v.version + (i === 0 ? " (current)" : "")),
      el("td", { class: "num" }, bytes(v.size)),
      el("td", {}, when(v.mtime_ms))))));
  const chunks = el("table", { id: "chunks" },
    el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", { class: "num" }, "offset"),
      el("th", { class: "num" }, "size"), el("th", {}, "crc32c"), el("th", {}, "copies"))),
    el("tbody", {}, ...(d.chunks || []).map((c) => el("tr", {},
      el("td", {}, c.index),
      el("td", { class: "num" }, bytes(c.offset)),
      el("td", { class: "num" }, bytes(c.size)),
      el("td", {}, el("code", {}, c.crc32c)),
      el("td", {}, ...c.nodes.map((n) => el("div", { class: "state-" + n.state, "data-node": n.id },
        (n.shard !== undefined ? `shard ${n.shard}: ` : "") + `${n.id} @ ${n.addr} (${n.state})`)),
        c.remote ? el("div", {}, `remote: ${c.remote}`) : null)))));
  $("file").replaceChildren(el("h2", {}, d.path), dl,
    el("h2", {}, "Versions"), versions,
    el("h2", {}, "Chunks"), s.inline ? el("div", {}, "none: the bytes are in meta") : chunks);
}

async function browse() {
  const p = current();
  crumbs(p);
  try {
    const d = await api("/api/file?path=" + encodeURIComponent(p));
    if (d.stat.type === "dir" || d.stat.type === "directory") {
      $("file").replaceChildren(el("div", {}, el("b", {}, "cues here: "), el("code", {}, d.cues || "(none)")));
      await showDir(p, null);
    } else {
      showFile(d);
      await showDir(parentOf(p), p.slice(p.lastIndexOf("/") + 1));
    }
    showError(null);
  } catch (e) { showError(e); }
}

window.addEventListener("hashchange", browse);
refreshStatus();
browse();
setInterval(refreshStatus, 5000);

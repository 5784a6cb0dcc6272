// semcache dashboard: polls the admin API and draws its charts as plain SVG (no libraries).
"use strict";
(() => {
  const REFRESH_MS = 3000;
  const TOKEN_KEY = "semcache.adminToken";
  const OUTCOMES = ["hit-exact", "hit-semantic", "miss", "bypass"];
  const COLORS = { "hit-exact": "#16a34a", "hit-semantic": "#0891b2", miss: "#f59e0b", bypass: "#94a3b8" };
  const LABELS = { "hit-exact": "exact hit", "hit-semantic": "semantic hit", miss: "miss", bypass: "bypass" };
  const ACCENT = "#2f5bea";
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // auth -----------------------------------------------------------------------------------

  let token = localStorage.getItem(TOKEN_KEY) || "";
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    token = params.get("token");
    localStorage.setItem(TOKEN_KEY, token);
    params.delete("token"); // keep the token out of the address bar and the history
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }

  class AuthError extends Error {}

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (token) headers.Authorization = "Bearer " + token;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch("/admin/api/" + path, {
      method: options.method || "GET", headers, cache: "no-store",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const body = await resp.json().catch(() => ({}));
    if (resp.status === 401 || resp.status === 403) {
      showAuth(body.error ? body.error.message : "not allowed");
      throw new AuthError(String(resp.status));
    }
    if (!resp.ok) throw new Error(body.error ? body.error.message : "HTTP " + resp.status);
    return body;
  }

  function showAuth(message) {
    $("auth-message").textContent = message;
    $("auth").classList.remove("hidden");
    $("auth-token").focus();
  }

  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("auth-token").value.trim();
    localStorage.setItem(TOKEN_KEY, token);
    $("auth").classList.add("hidden");
    refresh();
  });

  // formatting -----------------------------------------------------------------------------

  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  function fmtCount(n) {
    if (n == null) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return Math.round(n).toLocaleString("en-US");
  }
  const fmtPct = (x) => (x == null ? "–" : (100 * x).toFixed(1) + "%");
  const fmtMoney = (x) => (x == null ? "–" : x === 0 ? "$0" : "$" + (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(4)));
  const fmtDecade = (s) => (s >= 1 ? s + " s" : +(s * 1000).toPrecision(3) + " ms");
  const plural = (n, word) => `${fmtCount(n)} ${word}${n === 1 ? "" : "s"}`;
  function fmtMs(s) {
    if (s == null) return "–";
    const ms = s * 1000;
    if (ms < 10) return ms.toFixed(2) + " ms";
    if (ms < 1000) return ms.toFixed(0) + " ms";
    return s < 10 ? s.toFixed(2) + " s" : s.toFixed(0) + " s";
  }
  function fmtBytes(b) {
    if (b == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b) + " " + units[i];
  }
  function fmtAge(s) {
    if (s == null) return "–";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  const pad = (n) => String(n).padStart(2, "0");
  const hhmm = (t) => { const d = new Date(t * 1000); return pad(d.getHours()) + ":" + pad(d.getMinutes()); };
  const hhmmss = (t) => { const d = new Date(t * 1000); return hhmm(t) + ":" + pad(d.getSeconds()); };

  // svg helpers ----------------------------------------------------------------------------

  function node(tag, attrs, parent, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) n.setAttribute(k, v);
    if (text != null) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }

  function frame(svg, margin) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const w = Math.max(200, svg.clientWidth || 600), h = Math.max(60, svg.clientHeight || 210);
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const m = { top: 10, right: 12, bottom: 22, left: 42, ...margin };
    return { w, h, m, iw: w - m.left - m.right, ih: h - m.top - m.bottom };
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const s of [1, 2, 2.5, 5, 10]) if (s * p >= v) return s * p;
    return 10 * p;
  }

  function yGrid(svg, f, max, fmt, ticks = 4, side = "left") {
    for (let i = 0; i <= ticks; i++) {
      const v = (max * i) / ticks, y = f.m.top + f.ih - (f.ih * i) / ticks;
      if (side === "left") node("line", { class: i ? "gridline" : "axis", x1: f.m.left, x2: f.m.left + f.iw, y1: y, y2: y }, svg);
      const x = side === "left" ? f.m.left - 6 : f.m.left + f.iw + 6;
      node("text", { x, y: y + 3.5, "text-anchor": side === "left" ? "end" : "start" }, svg, fmt(v));
    }
  }

  function xLabels(svg, f, times, xOf) {
    const step = Math.max(1, Math.ceil(times.length / Math.max(2, Math.floor(f.iw / 70))));
    times.forEach((t, i) => {
      if (i % step) return;
      node("text", { x: xOf(i), y: f.h - 6, "text-anchor": "middle" }, svg, hhmm(t));
    });
  }

  function emptyNote(svg, f, text) {
    node("text", { class: "empty", x: f.m.left + f.iw / 2, y: f.m.top + f.ih / 2, "text-anchor": "middle" }, svg, text);
  }

  function legend(id, items) {
    $(id).innerHTML = items.map(([label, color, kind]) =>
      `<span><i class="sw ${kind || ""}" style="background:${color};border-color:${color}"></i>${esc(label)}</span>`).join("");
  }

  function linePath(points) {
    // points: [[x, y|null]]; a null breaks the line
    let d = "", pen = false;
    for (const [x, y] of points) {
      if (y == null || !isFinite(y)) { pen = false; continue; }
      d += (pen ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
      pen = true;
    }
    return d;
  }

  // charts ---------------------------------------------------------------------------------

  function drawRequests(points) {
    const svg = $("chart-requests");
    const f = frame(svg, { right: 40 });
    const max = niceMax(Math.max(1, ...points.map((p) => p.total)));
    yGrid(svg, f, max, (v) => fmtCount(v));
    yGrid(svg, f, 1, (v) => Math.round(v * 100) + "%", 4, "right");
    const band = f.iw / Math.max(1, points.length);
    const bw = Math.max(1, band * 0.78);
    const xOf = (i) => f.m.left + band * i + band / 2;
    let drawn = 0;
    points.forEach((p, i) => {
      let y = f.m.top + f.ih;
      for (const o of OUTCOMES) {
        const n = p.requests[o];
        if (!n) continue;
        const hgt = (f.ih * n) / max;
        y -= hgt;
        const r = node("rect", { x: xOf(i) - bw / 2, y, width: bw, height: Math.max(0.5, hgt), fill: COLORS[o],
          "data-series": o, "data-t": p.t, "data-value": n }, svg);
        node("title", {}, r, `${hhmm(p.t)} · ${LABELS[o]}: ${n}`);
        drawn++;
      }
    });
    const rate = points.map((p, i) => [xOf(i), p.hit_rate == null ? null : f.m.top + f.ih * (1 - p.hit_rate)]);
    node("path", { d: linePath(rate), fill: "none", stroke: "#0f1726", "stroke-width": 1.6, "stroke-linejoin": "round",
      "data-series": "hit-rate", "data-points": rate.filter((r) => r[1] != null).length }, svg);
    xLabels(svg, f, points.map((p) => p.t), xOf);
    if (!drawn) emptyNote(svg, f, "no requests in this window yet");
    legend("legend-requests", [...OUTCOMES.map((o) => [LABELS[o], COLORS[o]]), ["hit rate (right axis)", "#0f1726", "line"]]);
  }

  function drawSimilarity(similarity, threshold) {
    const svg = $("chart-similarity");
    const f = frame(svg, { left: 34 });
    const bins = similarity.bins, counts = similarity.counts;
    // Exact hits are 1.0 by definition and would dwarf the rest: they are counted in the legend.
    const series = ["hit-semantic", "miss"].filter((o) => counts[o]);
    const exact = (counts["hit-exact"] || []).reduce((a, b) => a + b, 0);
    let first = bins;
    for (const o of series) first = Math.min(first, counts[o].findIndex((n) => n > 0));
    if (threshold != null) first = Math.min(first, Math.floor(threshold * bins));
    const lo = Math.max(0, Math.min(Math.floor(first / 5) * 5, bins - 10)); // start on a 0.1 boundary
    const n = bins - lo;
    const totals = Array.from({ length: n }, (_, i) => series.reduce((s, o) => s + counts[o][lo + i], 0));
    const max = niceMax(Math.max(1, ...totals));
    yGrid(svg, f, max, (v) => fmtCount(v));
    const band = f.iw / n, bw = Math.max(1, band - 1.5);
    for (let i = 0; i < n; i++) {
      let y = f.m.top + f.ih;
      for (const o of series) {
        const c = counts[o][lo + i];
        if (!c) continue;
        const hgt = (f.ih * c) / max;
        y -= hgt;
        const r = node("rect", { x: f.m.left + band * i + 0.75, y, width: bw, height: Math.max(0.5, hgt),
          fill: COLORS[o], "data-series": o, "data-bin": lo + i, "data-value": c }, svg);
        const a = (lo + i) / bins, b = (lo + i + 1) / bins;
        node("title", {}, r, `${a.toFixed(2)}–${b.toFixed(2)} · ${LABELS[o]}: ${c}`);
      }
    }
    const xOfSim = (s) => f.m.left + ((s * bins - lo) / n) * f.iw;
    for (let s = Math.ceil((lo / bins) * 10) / 10; s <= 1.0001; s += 0.1) {
      node("text", { x: xOfSim(s), y: f.h - 6, "text-anchor": "middle" }, svg, s.toFixed(1));
    }
    if (threshold != null) {
      const x = xOfSim(threshold);
      node("line", { class: "thr", x1: x, x2: x, y1: f.m.top, y2: f.m.top + f.ih, "data-threshold": threshold }, svg);
      node("text", { class: "thr-label", x: x - 4, y: f.m.top + 9, "text-anchor": "end" }, svg, "threshold " + threshold.toFixed(2));
    }
    if (!series.length) emptyNote(svg, f, "no lookups with a similarity yet");
    legend("legend-similarity", [["semantic hit", COLORS["hit-semantic"]], ["miss (best)", COLORS.miss],
      [`exact (1.0): ${fmtCount(exact)}`, COLORS["hit-exact"]]]);
  }

  function drawLatency(points) {
    const svg = $("chart-latency");
    const f = frame(svg, { left: 52 });
    const lines = [
      ["hit p50", "latency_hit", "p50", COLORS["hit-exact"], ""],
      ["hit p95", "latency_hit", "p95", COLORS["hit-exact"], "4 3"],
      ["miss p50", "latency_miss", "p50", COLORS.miss, ""],
      ["miss p95", "latency_miss", "p95", COLORS.miss, "4 3"],
    ];
    const values = points.flatMap((p) => lines.map(([, k, q]) => p[k][q])).filter((v) => v > 0);
    const band = f.iw / Math.max(1, points.length);
    const xOf = (i) => f.m.left + band * i + band / 2;
    xLabels(svg, f, points.map((p) => p.t), xOf);
    if (!values.length) {
      yGrid(svg, f, 1, () => "");
      emptyNote(svg, f, "no latencies in this window yet");
    } else {
      // log scale: hits take milliseconds and misses seconds, both must stay readable
      const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values)))), hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values))));
      const decades = Math.max(1, Math.round(Math.log10(hi / lo)));
      const yOf = (v) => f.m.top + f.ih * (1 - Math.log10(v / lo) / decades);
      for (let i = 0; i <= decades; i++) {
        const v = lo * Math.pow(10, i), y = yOf(v);
        node("line", { class: i ? "gridline" : "axis", x1: f.m.left, x2: f.m.left + f.iw, y1: y, y2: y }, svg);
        node("text", { x: f.m.left - 6, y: y + 3.5, "text-anchor": "end" }, svg, fmtDecade(v));
      }
      for (const [label, k, q, color, dash] of lines) {
        const pts = points.map((p, i) => [xOf(i), p[k][q] > 0 ? yOf(p[k][q]) : null]);
        const count = pts.filter((p) => p[1] != null).length;
        node("path", { d: linePath(pts), fill: "none", stroke: color, "stroke-width": 1.8, "stroke-dasharray": dash || null,
          "stroke-linejoin": "round", "data-series": label, "data-points": count }, svg);
        if (!dash) pts.forEach(([x, y]) => { if (y != null) node("circle", { cx: x, cy: y, r: 2.2, fill: color }, svg); });
      }
    }
    legend("legend-latency", lines.map(([label, , , color, dash]) => [label, color, dash ? "dash" : "line"]));
  }

  function drawSavings(points, priced) {
    const svg = $("chart-savings");
    const f = frame(svg, { right: 52, left: 48 });
    let tok = 0, usd = 0;
    const cum = points.map((p) => { tok += p.tokens_saved; usd += p.cost_saved; return [tok, usd]; });
    const tmax = niceMax(Math.max(1, tok)), umax = niceMax(Math.max(1e-4, usd));
    yGrid(svg, f, tmax, (v) => fmtCount(v));
    if (priced) yGrid(svg, f, umax, (v) => fmtMoney(v), 4, "right");
    const band = f.iw / Math.max(1, points.length);
    const xOf = (i) => f.m.left + band * i + band / 2;
    const base = f.m.top + f.ih;
    const tpts = cum.map(([t], i) => [xOf(i), base - (f.ih * t) / tmax]);
    if (tok > 0) {
      const area = linePath(tpts) + `L${xOf(points.length - 1).toFixed(1)},${base}L${xOf(0).toFixed(1)},${base}Z`;
      node("path", { d: area, fill: "rgba(22,163,74,.14)", stroke: "none" }, svg);
      node("path", { d: linePath(tpts), fill: "none", stroke: COLORS["hit-exact"], "stroke-width": 1.8,
        "data-series": "tokens", "data-points": tpts.length, "data-value": tok }, svg);
      if (priced) {
        const upts = cum.map(([, u], i) => [xOf(i), base - (f.ih * u) / umax]);
        node("path", { d: linePath(upts), fill: "none", stroke: ACCENT, "stroke-width": 1.8, "data-series": "usd",
          "data-points": upts.length, "data-value": usd }, svg);
      }
    } else {
      emptyNote(svg, f, "no hits in this window yet");
    }
    xLabels(svg, f, points.map((p) => p.t), xOf);
    legend("legend-savings", [["tokens (left)", COLORS["hit-exact"], "line"],
      priced ? ["money (right)", ACCENT, "line"] : ["no [costs] prices configured", "#a4adba", "line"]]);
  }

  function drawSpark(points) {
    const svg = document.querySelector("[data-chart=hitrate-spark]");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("viewBox", "0 0 70 26");
    const pts = points.map((p, i) => [(70 * i) / Math.max(1, points.length - 1), p.hit_rate == null ? null : 24 - 22 * p.hit_rate]);
    node("path", { d: linePath(pts), fill: "none", stroke: COLORS["hit-exact"], "stroke-width": 1.4, "data-series": "hit-rate" }, svg);
  }

  // tiles and tables -----------------------------------------------------------------------

  function kpi(id, value, note, cls) {
    const k = $(id);
    k.querySelector(".value").textContent = value;
    k.querySelector(".value").className = "value " + (cls || "");
    k.querySelector(".note").textContent = note;
  }

  function drawKpis(stats) {
    const w = stats.window, r = w.requests, inv = stats.inventory;
    const hits = r["hit-exact"] + r["hit-semantic"];
    kpi("kpi-hitrate", fmtPct(w.hit_rate), `${fmtCount(hits)} hits · ${fmtCount(r["hit-semantic"])} sem.`);
    kpi("kpi-requests", fmtCount(w.total), `${fmtCount(r.miss)} miss · ${fmtCount(r.bypass)} bypass`);
    const hp = w.latency.hit.p50, mp = w.latency.miss.p50;
    kpi("kpi-latency", hp == null ? "–" : fmtMs(hp), mp == null ? "no misses" : `miss ${fmtMs(mp)}` + (hp ? ` · ${(mp / hp).toFixed(0)}×` : ""));
    const tok = w.tokens_saved.prompt + w.tokens_saved.completion;
    const allTok = (stats.totals["tok:prompt"] || 0) + (stats.totals["tok:completion"] || 0);
    kpi("kpi-tokens", fmtCount(tok), `${fmtCount(allTok)} all time`);
    kpi("kpi-money", stats.prices_configured ? fmtMoney(w.cost_saved) : "–",
      stats.prices_configured ? `${fmtMoney(stats.totals.cost || 0)} all time` : "set prices in [costs]");
    kpi("kpi-entries", fmtCount(inv.entries) + (inv.entries_complete ? "" : "+"),
      inv.index ? `${plural(inv.index.entries, "vector")} · ${plural(inv.index.scopes, "scope")}` : "exact tier only");
    kpi("kpi-memory", fmtBytes(inv.entry_bytes), `Redis ${fmtBytes(inv.redis_used_memory)} · ${fmtCount(inv.redis_keys)} keys`);
    kpi("kpi-feedback", fmtCount(w.feedback), `${fmtCount(stats.totals.feedback || 0)} all time`, w.feedback ? "warn" : "");
  }

  function drawStatus(stats) {
    const redis = $("pill-redis");
    redis.textContent = stats.redis_up ? "Redis up" : "Redis down: bypassing";
    redis.className = "pill " + (stats.redis_up ? "ok" : "bad");
    const sem = $("pill-semantic");
    sem.textContent = stats.semantic ? "semantic tier on" : "semantic tier off";
    sem.className = "pill " + (stats.semantic ? "ok" : "off");
    const input = $("threshold-input");
    if (document.activeElement !== input) {
      const shown = stats.threshold.applied ?? stats.threshold.configured;
      input.placeholder = shown == null ? "config" : shown.toFixed(2);
      input.value = stats.threshold.runtime == null ? "" : stats.threshold.runtime;
    }
  }

  function rows(tbody, html, cols, empty) {
    tbody.innerHTML = html.length ? html.join("") : `<tr><td class="empty-row" colspan="${cols}">${esc(empty)}</td></tr>`;
  }

  function drawTop(entries) {
    rows($("table-top").tBodies[0], entries.map((e) => `<tr class="clickable" data-entry="${esc(e.id)}">
      <td class="q" title="${esc(e.query)}">${esc(e.query)}</td><td>${esc(e.model)}</td>
      <td class="num">${fmtCount(e.hits)}</td><td class="num">${fmtAge(e.age_s)}</td>
      <td class="num">${fmtAge(e.ttl_left_s)}</td>
      <td><button class="icon" title="Delete this entry" data-delete="${esc(e.id)}">✕</button></td></tr>`), 6, "no hits yet");
  }

  function simCell(e) {
    if (e.similarity == null) return `<span class="hint">–</span>`;
    const thr = e.threshold == null ? "" : `<b style="left:${(100 * e.threshold).toFixed(1)}%"></b>`;
    const color = COLORS[e.outcome] || COLORS.miss;
    return `<span class="simbar"><i style="width:${(100 * Math.max(0, e.similarity)).toFixed(1)}%;background:${color}"></i>${thr}</span>` +
      `${e.similarity.toFixed(3)}${e.threshold == null ? "" : ` / ${e.threshold.toFixed(2)}`}`;
  }

  function drawRecent(events) {
    rows($("table-recent").tBodies[0], events.map((e) => `<tr>
      <td>${hhmmss(e.at)}</td><td><span class="badge ${esc(e.outcome)}">${esc(LABELS[e.outcome] || e.outcome)}</span></td>
      <td>${simCell(e)}</td><td class="num">${fmtMs(e.latency_s)}</td>
      <td class="q" title="${esc(e.query)}">${esc(e.query)}${e.reason ? ` <span class="hint">(${esc(e.reason)})</span>` : ""}</td>
      <td>${e.outcome.startsWith("hit-") ? `<button class="icon" title="Report a wrong hit: removes the entry" data-report="${esc(e.request_id)}">⚑</button>` : ""}</td>
      </tr>`), 6, "no lookups yet");
  }

  function entryRow(e) {
    return `<tr class="clickable" data-entry="${esc(e.id)}">
      <td class="q" title="${esc(e.query)}">${esc(e.query)}</td><td>${esc(e.model)}</td>
      <td title="${esc(e.tenant)}">${esc(e.tenant.slice(0, 12))}</td><td>${esc(e.namespace || "–")}</td>
      <td class="num">${e.similarity == null ? "–" : e.similarity.toFixed(3)}</td>
      <td class="num">${fmtCount(e.hits)}</td><td class="num">${fmtAge(e.age_s)}</td><td class="num">${fmtAge(e.ttl_left_s)}</td>
      <td><button class="icon" title="Delete this entry" data-delete="${esc(e.id)}">✕</button></td></tr>`;
  }

  // The listing pages by cursor: "more" asks for the page after the last one shown, so every
  // entry is reachable however many there are.
  let entriesQuery = null, entriesCursor = null, entriesShown = 0;

  function drawEntries(body, append) {
    const tbody = $("table-entries").tBodies[0];
    if (append) {
      tbody.insertAdjacentHTML("beforeend", body.entries.map(entryRow).join(""));
      entriesShown += body.entries.length;
    } else {
      rows(tbody, body.entries.map(entryRow), 9,
        body.similar_to_ignored ? "search by meaning needs the embedding service" : "no matching entries");
      entriesShown = body.entries.length;
    }
    entriesCursor = body.cursor;
    const more = $("entries-more");
    more.classList.toggle("hidden", !entriesCursor);
    $("entries-count").textContent = entriesShown ? `${fmtCount(entriesShown)} shown` : "";
  }

  // actions --------------------------------------------------------------------------------

  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.classList.remove("hidden");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.add("hidden"), 3000);
  }

  async function act(fn, done) {
    try { toast(await fn() || done); refresh(); searchEntries(); } catch (e) { if (!(e instanceof AuthError)) toast(e.message); }
  }

  document.addEventListener("click", async (e) => {
    const del = e.target.closest("[data-delete]");
    if (del) {
      e.stopPropagation();
      return act(() => api("entries/" + encodeURIComponent(del.dataset.delete), { method: "DELETE" }).then(() => "entry deleted"));
    }
    const rep = e.target.closest("[data-report]");
    if (rep) {
      return act(() => api("feedback", { method: "POST", body: { request_id: rep.dataset.report, reason: "reported from the dashboard" } })
        .then((r) => ({
          removed: "wrong hit reported: entry removed",
          raised: `wrong hit reported: the entry now needs similarity ≥ ${r.threshold}`,
          recorded: "wrong hit recorded (the entry's confirmed hits keep its threshold)",
        })[r.result] || "reported (entry already gone)"));
    }
    const row = e.target.closest("[data-entry]");
    if (row) {
      try {
        const entry = await api("entries/" + encodeURIComponent(row.dataset.entry));
        const pre = $("entry-detail");
        pre.textContent = JSON.stringify(entry, null, 2);
        pre.classList.remove("hidden");
        pre.scrollIntoView({ block: "nearest" });
      } catch (err) { if (!(err instanceof AuthError)) toast(err.message); }
    }
  });

  $("threshold-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const raw = $("threshold-input").value.trim();
    const value = raw === "" ? null : Number(raw);
    act(() => api("threshold", { method: "PUT", body: { threshold: value } })
      .then((r) => (r.threshold == null ? "threshold back to the configured value" : "threshold set to " + r.threshold)));
    $("threshold-input").blur();
  });

  async function searchEntries() {
    const q = $("search-q").value.trim();
    const p = new URLSearchParams({ limit: "25" });
    if (q && $("search-similar").checked) p.set("similar_to", q); else if (q) p.set("q", q);
    if ($("search-model").value.trim()) p.set("model", $("search-model").value.trim());
    if ($("search-tenant").value.trim()) p.set("tenant", $("search-tenant").value.trim());
    entriesQuery = p;
    try { drawEntries(await api("entries?" + p), false); } catch (e) { if (!(e instanceof AuthError)) toast(e.message); }
  }

  async function moreEntries() {
    if (!entriesQuery || !entriesCursor) return;
    const p = new URLSearchParams(entriesQuery);
    p.set("cursor", entriesCursor);
    try { drawEntries(await api("entries?" + p), true); } catch (e) { if (!(e instanceof AuthError)) toast(e.message); }
  }
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); searchEntries(); });
  $("entries-more").addEventListener("click", moreEntries);

  // the refresh loop -----------------------------------------------------------------------

  let last = null;
  function draw() {
    if (!last) return;
    const [stats, series, recent] = last;
    // The bar a request without its own threshold starts from right now (the run-time one,
    // else the pair model's floor while it is loaded, else the configured one).
    const threshold = stats.threshold.applied ?? stats.threshold.runtime ?? stats.threshold.configured;
    drawStatus(stats);
    drawKpis(stats);
    drawSpark(series.points);
    drawRequests(series.points);
    drawSimilarity(series.window.similarity, threshold);
    drawLatency(series.points);
    drawSavings(series.points, stats.prices_configured);
    drawTop(stats.top_entries);
    drawRecent(recent.events);
  }

  let inFlight = false;
  async function refresh() {
    if (inFlight) return;
    inFlight = true;
    const minutes = $("window").value;
    try {
      last = await Promise.all([api("stats?minutes=" + minutes), api("timeseries?minutes=" + minutes), api("recent?limit=12")]);
      draw();
      $("updated").textContent = "updated " + hhmmss(Date.now() / 1000) + " · every " + REFRESH_MS / 1000 + " s";
      document.body.dataset.loaded = "true";
    } catch (e) {
      if (!(e instanceof AuthError)) $("updated").textContent = "refresh failed: " + e.message;
    } finally {
      inFlight = false;
    }
  }

  $("window").addEventListener("change", refresh);
  window.addEventListener("resize", draw);
  refresh().then(searchEntries);
  setInterval(refresh, REFRESH_MS);
})();

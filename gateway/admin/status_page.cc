#include "gateway/admin/status_page.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <string>

namespace gw {

namespace {

constexpr std::string_view kStyle = R"CSS(
:root{--bg:#f4f6f8;--card:#fff;--ink:#1c2430;--muted:#5d6b7c;--line:#e2e7ed;--ok:#15803d;--okbg:#dcfce7;
--warn:#b45309;--warnbg:#fef3c7;--bad:#dc2626;--badbg:#fee2e2;--chip:#eef2f7;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
@media (prefers-color-scheme:dark){:root{--bg:#0f141a;--card:#18202a;--ink:#e6edf3;--muted:#93a1b2;--line:#2a3441;
--okbg:#12361f;--warnbg:#3d2e0c;--badbg:#441a1a;--chip:#243040}}
*{box-sizing:border-box}body{margin:0;padding:16px;max-width:1400px;margin-inline:auto}
header{display:flex;flex-wrap:wrap;align-items:center;gap:8px 16px;margin-bottom:12px}
h1{font-size:20px;margin:0}h2{font-size:15px;margin:0 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.meta{color:var(--muted);font-size:13px;display:flex;flex-wrap:wrap;gap:4px 14px}
.pill{display:inline-block;padding:2px 10px;border-radius:999px;font-size:13px;font-weight:600}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}
.pill.ok{background:var(--okbg)}.pill.warn{background:var(--warnbg)}.pill.bad{background:var(--badbg)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-bottom:12px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.tile b{display:block;font-size:24px;font-variant-numeric:tabular-nums}.tile span{color:var(--muted);font-size:12px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px;margin-bottom:12px;overflow-x:auto}
table{width:100%;border-collapse:collapse;font-size:14px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;border-bottom:1px solid var(--line);padding:6px 8px;white-space:nowrap}
td{padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.down td{background:var(--badbg)}
.name{font-weight:600;word-break:break-all}
.chips{display:flex;flex-wrap:wrap;gap:4px}.chip{background:var(--chip);border-radius:6px;padding:1px 6px;font-size:12px;white-space:nowrap}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:baseline}
.dot.ok{background:var(--ok)}.dot.bad{background:var(--bad)}.dot.warn{background:var(--warn)}
.up{margin-bottom:10px}.up:last-child{margin-bottom:0}.up h3{font-size:14px;margin:0 0 4px}
#stale{display:none}#stale.on{display:inline-block}
.empty{color:var(--muted);font-size:13px}
@media (max-width:640px){body{padding:10px}
table,tbody,tr,td{display:block;width:100%}thead{display:none}
tr{border-bottom:1px solid var(--line);padding:6px 0}td{border:0;padding:2px 4px;display:flex;justify-content:space-between;gap:12px}
td.n{text-align:right}td::before{content:attr(data-label);color:var(--muted);font-size:12px;font-weight:600;text-align:left}
td.name{font-size:15px}td.name::before{content:none}.chips{justify-content:flex-end}}
)CSS";

constexpr std::string_view kScript = R"JS(
"use strict";
const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function cell(row, label, content, cls) {
  const td = el("td", cls);
  td.dataset.label = label;
  if (content instanceof Node) td.append(content); else td.textContent = String(content);
  row.append(td);
  return td;
}
function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
function rate(v) { v = num(v); return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
function ms(v) { v = num(v); if (!v) return "–"; return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v >= 10 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms"; }
function pct(v) { v = num(v) * 100; return (v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1)) + "%"; }
function errClass(v) { v = num(v); return v >= 0.05 ? "bad" : v >= 0.01 ? "warn" : ""; }
function age(s) {
  s = Math.floor(num(s));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + (s % 60) + "s" : s + "s";
}
function when(t) { return t ? new Date(t).toLocaleString() : "never"; }
function dot(cls) { return el("span", "dot " + cls); }
function labelled(cls, text) { const s = el("span", cls); s.append(dot(cls), el("span", null, text)); return s; }
function pill(target, text, cls) { target.textContent = text; target.className = "pill " + cls; }

function drawHeader(s) {
  $("version").textContent = "v" + s.version;
  const st = s.status || "healthy";
  pill($("overall"), st, st === "healthy" ? "ok" : st === "degraded" ? "warn" : "bad");
  $("uptime").textContent = "up " + age(s.uptime_seconds);
  const c = s.config || {};
  $("loaded").textContent = "config loaded " + when(c.loaded_at);
  const r = c.last_reload || {};
  const rel = $("reload");
  rel.textContent = r.at ? "last reload " + r.result + " at " + when(r.at) : "no reload since start";
  rel.className = r.result === "failure" ? "bad" : "";
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function drawTiles(s) {
  let rps = 0, errs = 0, limited = 0, conns = 0, eps = 0, healthy = 0;
  for (const r of s.routes || []) { rps += num(r.requests_per_second); errs += num(r.requests_per_second) * num(r.error_rate); limited += num(r.rate_limited_per_second); }
  for (const l of s.listeners || []) for (const k in l.connections || {}) conns += num(l.connections[k]);
  for (const u of s.upstreams || []) for (const e of u.endpoints || []) { eps++; if (e.status === "healthy") healthy++; }
  const tiles = [
    [rate(rps), "requests/s (last minute)", ""],
    [rps ? pct(errs / rps) : "0%", "errors", errClass(rps ? errs / rps : 0)],
    [rate(limited), "rate limited/s", limited ? "warn" : ""],
    [String(conns), "open connections", ""],
    [healthy + " / " + eps, "endpoints healthy", healthy < eps ? "bad" : "ok"],
  ];
  const box = $("tiles");
  box.replaceChildren(...tiles.map(([v, label, cls]) => {
    const t = el("div", "tile");
    t.append(el("b", cls, v), el("span", null, label));
    return t;
  }));
}

function drawRoutes(s) {
  const rows = (s.routes || []).map((r) => {
    const tr = el("tr");
    cell(tr, "Route", r.name, "name");
    cell(tr, "Upstream", r.upstream === null ? "(admin)" : r.upstream);
    cell(tr, "req/s", rate(r.requests_per_second), "n");
    cell(tr, "errors", pct(r.error_rate), "n " + errClass(r.error_rate));
    cell(tr, "p50", ms(r.p50_ms), "n");
    cell(tr, "p99", ms(r.p99_ms), "n");
    cell(tr, "limited/s", rate(r.rate_limited_per_second), "n" + (num(r.rate_limited_per_second) ? " warn" : ""));
    const chips = el("div", "chips");
    for (const f of r.filters || []) chips.append(el("span", "chip", f));
    cell(tr, "Filters", chips);
    return tr;
  });
  $("routes").replaceChildren(...rows);
}

function drawUpstreams(s) {
  const blocks = (s.upstreams || []).map((u) => {
    const div = el("div", "up");
    div.append(el("h3", null, u.name));
    const table = el("table");
    const head = el("tr");
    for (const [h, n] of [["Endpoint", 0], ["Health", 0], ["Breaker", 0], ["In flight", 1], ["Check latency", 1]]) head.append(el("th", n ? "n" : "", h));
    const thead = el("thead"); thead.append(head);
    const body = el("tbody");
    for (const e of u.endpoints || []) {
      const ok = e.status === "healthy";
      const tr = el("tr", ok ? "" : "down");
      tr.dataset.endpoint = e.address;
      cell(tr, "Endpoint", e.address, "name");
      cell(tr, "Health", labelled(ok ? "ok" : "bad", e.status), "health");
      const b = e.breaker || "closed";
      cell(tr, "Breaker", labelled(b === "closed" ? "ok" : b === "open" ? "bad" : "warn", b.replace("_", "-")));
      cell(tr, "In flight", String(num(e.in_flight)), "n");
      cell(tr, "Check latency", e.latency_ms === null || e.latency_ms === undefined ? "–" : ms(e.latency_ms), "n");
      body.append(tr);
    }
    table.append(thead, body);
    div.append(table);
    return div;
  });
  $("upstreams").replaceChildren(...(blocks.length ? blocks : [el("p", "empty", "No upstreams.")]));
}

function drawListeners(s) {
  $("listeners").replaceChildren(...(s.listeners || []).map((l) => {
    const tr = el("tr");
    cell(tr, "Listener", l.name, "name");
    cell(tr, "Address", l.address + (l.tls ? " (TLS)" : ""));
    const c = l.connections || {};
    cell(tr, "HTTP/1.1", String(num(c["HTTP/1.1"])), "n");
    cell(tr, "HTTP/2", String(num(c["HTTP/2"])), "n");
    return tr;
  }));
}

function drawDeps(s) {
  const items = [];
  for (const j of s.jwks || []) items.push(["JWKS " + j.name, j.status, j.state]);
  if (s.redis) items.push(["Redis " + s.redis.address, s.redis.status, s.redis.state]);
  const rows = items.map(([name, status, state]) => {
    const tr = el("tr");
    cell(tr, "Dependency", name, "name");
    const cls = status === "healthy" ? "ok" : status === "degraded" ? "warn" : "bad";
    cell(tr, "Status", labelled(cls, status + (state ? " (" + state + ")" : "")));
    return tr;
  });
  $("deps-section").hidden = rows.length === 0;
  $("deps").replaceChildren(...rows);
}

async function refresh() {
  try {
    const res = await fetch("/status", {cache: "no-store"});
    if (!res.ok) throw new Error("HTTP " + res.status);
    const s = await res.json();
    drawHeader(s); drawTiles(s); drawRoutes(s); drawUpstreams(s); drawListeners(s); drawDeps(s);
    $("stale").className = "pill bad";
    document.body.dataset.loaded = String((Number(document.body.dataset.loaded) || 0) + 1);
  } catch (e) {
    $("stale").className = "pill bad on";
    $("stale").textContent = "not updating: " + e.message;
  }
  setTimeout(refresh, REFRESH_MS);
}
refresh();
)JS";

constexpr std::string_view kBodyBeforeScript = R"HTML(<body>
<header><h1>Gateway <span id="version" class="meta"></span></h1><span id="overall" class="pill">…</span>
<span id="stale" class="pill bad"></span>
<div class="meta"><span id="uptime"></span><span id="loaded"></span><span id="reload"></span><span id="updated"></span></div></header>
<div id="tiles" class="tiles"></div>
<section><h2>Routes · last minute</h2><table><thead><tr><th>Route</th><th>Upstream</th><th class="n">req/s</th><th class="n">errors</th><th class="n">p50</th><th class="n">p99</th><th class="n">limited/s</th><th>Filters, in run order</th></tr></thead><tbody id="routes"></tbody></table></section>
<section><h2>Upstreams</h2><div id="upstreams"></div></section>
<section><h2>Listeners · open connections</h2><table><thead><tr><th>Listener</th><th>Address</th><th class="n">HTTP/1.1</th><th class="n">HTTP/2</th></tr></thead><tbody id="listeners"></tbody></table></section>
<section id="deps-section" hidden><h2>Dependencies</h2><table><tbody id="deps"></tbody></table></section>
)HTML";

std::string sha256Base64(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  unsigned char out[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, digest, SHA256_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(out), size_t(n));
}

struct Page {
  std::string html;
  std::string csp;
  Page() {
    for (std::string_view part :
         {std::string_view("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                           "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
                           "<title>Gateway status</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>"),
          kStyle, std::string_view("</style></head>\n"), kBodyBeforeScript, std::string_view("<script>"),
          kScript, std::string_view("</script>\n</body></html>\n")}) {
      html += part;
    }
    csp = "default-src 'none'; script-src 'sha256-" + sha256Base64(kScript) + "'; style-src 'sha256-" +
          sha256Base64(kStyle) +
          "'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
  }
};

const Page& page() {
  static const Page p;
  return p;
}

}  // namespace

std::string_view statusPageHtml() { return page().html; }
std::string_view statusPageCsp() { return page().csp; }

}  // namespace gw

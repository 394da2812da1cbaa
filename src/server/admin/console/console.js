// The Portcullis operator console. Every figure comes from the admin JSON endpoints that
// scripts use (/status, /upstreams, /licenses, /clients, /usage); the page keeps no data
// of its own beyond the previous /status, to turn counts into rates. Text from the gateway
// is only ever set as textContent, never parsed as markup.
"use strict";

const POLL_MS = 3000;
const EXPIRING_DAYS = 7;
let previous = null;
let timer = null;

// The gateway's own origin: a page opened with user info in its URL (user:token@host) keeps
// it in its URL, and fetch refuses URLs that carry credentials.
function url(path) {
  return new URL(path, window.location.origin).toString();
}

async function call(method, path) {
  const response = await fetch(url(path), {
    method,
    cache: "no-store",
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  return { status: response.status, body };
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "—" : String(text);
  if (cls) td.className = cls;
  return td;
}

function num(n) {
  return cell(n === undefined || n === null ? null : n, "n");
}

function fill(id, rows) {
  const table = document.getElementById(id);
  if (!rows.length) {
    const td = cell("none", "muted");
    td.colSpan = table.tHead.rows[0].cells.length;
    rows = [row([td])];
  }
  table.tBodies[0].replaceChildren(...rows);
}

function row(cells, data) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  for (const [k, v] of Object.entries(data || {})) tr.dataset[k] = v;
  return tr;
}

function pairs(obj) {
  const parts = Object.entries(obj || {}).map(([k, v]) => k + " " + v);
  return parts.length ? parts.join(", ") : "0";
}

function showAction(text, bad) {
  const p = document.getElementById("action");
  p.textContent = text;
  p.className = bad ? "notice bad" : "notice";
  p.hidden = false;
}

function refusalText(r) {
  const b = r.body || {};
  const reason = b.error || b.result || "";
  const id = b.request_id ? " (request " + b.request_id + ")" : "";
  return r.status + " " + reason + id;
}

function renderStatus(s) {
  document.getElementById("who").textContent =
    "signed in as " + s.caller.name + " (" + s.caller.role + ")";
  fill("listeners", s.listeners.map((l) => row([
    cell(l.name),
    cell(l.address),
    cell(l.certificate_not_after),
    cell(l.certificate_days_left, l.certificate_days_left < 14 ? "n bad" : "n"),
  ], { listener: l.name })));
  const before = new Map();
  if (previous) for (const r of previous.routes) before.set(r.name, r.requests);
  const seconds = previous ? (s.time_ms - previous.time_ms) / 1000 : 0;
  fill("routes", s.routes.map((r) => {
    const rate = seconds > 0 && before.has(r.name)
      ? ((r.requests - before.get(r.name)) / seconds).toFixed(2) : null;
    const c = r.classes || {};
    const l = r.latency_ms || {};
    return row([
      cell(r.name), cell(r.listeners.join(", ")), num(r.requests), num(rate),
      num(c["2xx"] || 0), num(c["4xx"] || 0), num(c["5xx"] || 0),
      num(l.p50), num(l.p95), num(l.p99),
      cell(pairs(r.limited)), cell(pairs(r.upstream_errors)),
    ], { route: r.name });
  }));
  const refusals = [];
  for (const [reason, n] of Object.entries(s.refusals.requests)) {
    refusals.push(row([cell(reason), cell("request"), num(n)], { reason }));
  }
  for (const [reason, n] of Object.entries(s.refusals.connections)) {
    refusals.push(row([cell(reason), cell("connection"), num(n)], { reason }));
  }
  fill("refusals", refusals);
  fill("reloads", s.reloads.map((r) => row([
    cell(r.time), cell(r.result, r.result === "ok" ? "ok" : "bad"),
    num(r.listeners), num(r.routes), num(r.errors),
  ])));
  fill("audit", s.audit.map((a) => row([
    cell(a.time), cell(a.identity), cell(a.role), cell(a.action), cell(a.target),
    cell(a.result, a.result === "ok" ? "ok" : "bad"),
  ])));
}

function renderUpstreams(u) {
  const rows = [];
  for (const up of u.upstreams) {
    for (const t of up.targets) {
      const health = t.ejected ? "ejected" : t.healthy ? "up" : "down";
      rows.push(row([
        cell(up.name), cell(t.address), cell(health, health === "up" ? "ok" : "bad"),
        num(t.in_flight), num(t.connections_open), num(t.ejections),
      ], { upstream: up.name, target: t.address, health }));
    }
  }
  fill("upstreams", rows);
}

function expiring(l) {
  const left = (Date.parse(l.expires_at) - Date.now()) / 86400000;
  return l.state === "active" && left < EXPIRING_DAYS;
}

function revokeButton(id) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = "revoke";
  b.dataset.revoke = id;
  // Two clicks: a stray click changes nothing.
  b.addEventListener("click", async () => {
    if (b.dataset.armed !== "1") {
      b.dataset.armed = "1";
      b.textContent = "confirm revoke";
      setTimeout(() => { b.dataset.armed = ""; b.textContent = "revoke"; }, 5000);
      return;
    }
    b.disabled = true;
    const r = await call("DELETE", "/licenses/" + encodeURIComponent(id));
    showAction("revoke " + id + ": " + (r.status === 200 ? "revoked" : refusalText(r)), r.status !== 200);
    poll();
  });
  return b;
}

function renderLicenses(result, usage) {
  const counts = document.getElementById("license-counts");
  if (result.status !== 200) {
    counts.textContent = result.status === 404 ? "licenses are not configured" : refusalText(result);
    fill("licenses", []);
    return;
  }
  const byKey = new Map();
  if (usage.status === 200 && usage.body && Array.isArray(usage.body.entries)) {
    for (const e of usage.body.entries) byKey.set(e.key, e);
  }
  const list = result.body.licenses;
  const n = (pred) => list.filter(pred).length;
  counts.textContent = "active " + n((l) => l.state === "active") +
    " · expiring within " + EXPIRING_DAYS + " days " + n(expiring) +
    " · in grace " + n((l) => l.state === "in_grace") +
    " · revoked " + n((l) => l.state === "revoked");
  fill("licenses", list.map((l) => {
    const u = byKey.get(l.id);
    const used = u ? [u.minute, u.hour, u.day].map((w) => (w ? w.requests : 0)).join(" / ") : null;
    const state = expiring(l) ? "expiring" : l.state;
    const cls = state === "active" ? "ok" : state === "revoked" ? "bad" : "warn";
    const action = document.createElement("td");
    if (l.state !== "revoked") action.append(revokeButton(l.id));
    return row([
      cell(l.id), cell(l.customer), cell(l.machine_id), cell(state, cls), cell(l.expires_at),
      cell(used), num(u && u.day ? u.day.refusals : null), action,
    ], { license: l.id, state: l.state });
  }));
}

function renderClients(result) {
  if (result.status !== 200) {
    const note = result.status === 404 ? "the issuer is not configured" : refusalText(result);
    fill("clients", [row([cell(note, "muted"), cell(""), cell("")])]);
    return;
  }
  fill("clients", result.body.clients.map((c) => row([
    cell(c.client_id), cell(c.state, c.state === "active" ? "ok" : "bad"), cell((c.scopes || []).join(" ")),
  ], { client: c.client_id })));
}

async function poll() {
  clearTimeout(timer);
  try {
    const [status, upstreams, licenses, clients, usage] = await Promise.all([
      call("GET", "/status"),
      call("GET", "/upstreams"),
      call("GET", "/licenses"),
      call("GET", "/clients"),
      call("GET", "/usage?by=license"),
    ]);
    const problem = document.getElementById("problem");
    if (status.status !== 200) {
      problem.textContent = "GET /status: " + refusalText(status);
    } else {
      problem.textContent = "";
      renderStatus(status.body);
      // For the page-load measurement: when the first figures were on screen.
      if (!previous) performance.mark("portcullis:first-data");
      previous = status.body;
      document.getElementById("updated").textContent = "updated " + status.body.time;
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    }
    if (upstreams.status === 200) renderUpstreams(upstreams.body);
    renderLicenses(licenses, usage);
    renderClients(clients);
  } catch (e) {
    document.getElementById("problem").textContent = "the gateway did not answer: " + e.message;
  }
  // Polling stops while the tab is hidden: a forgotten tab costs the gateway nothing.
  if (!document.hidden) timer = setTimeout(poll, POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) poll();
});

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("reload").addEventListener("click", async () => {
    const r = await call("POST", "/reload");
    showAction("reload: " + (r.status === 200 ? "reloaded" : refusalText(r)), r.status !== 200);
    poll();
  });
  poll();
});

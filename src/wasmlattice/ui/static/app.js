// The wasmlattice dashboard: one Server-Sent Events stream keeps `state` live; every section is
// drawn from it with DOM calls (never innerHTML with lattice data). Actions POST JSON with the
// page's token (docs/ui.md).
"use strict";

const TOKEN = document.querySelector('meta[name="wasmlattice-token"]').content;
let state = { hosts: [], links: [], configs: [], apps: [], metrics: {}, problems: {}, events: [], logs: {} };
const drafts = new Map(); // scale inputs being edited, by host and component
const MAX_EVENTS = 200;
const MAX_LOGS = 200;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(kind, text) {
  return el("span", { class: `badge ${kind}`, "data-testid": "badge", text: text || kind });
}

function short(id) {
  return id && id.length > 16 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id || "";
}

function duration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function toast(message, bad) {
  const node = document.getElementById("toast");
  node.textContent = message;
  node.className = bad ? "bad" : "";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, bad ? 9000 : 4000);
}

async function post(path, body) {
  let response;
  try {
    response = await fetch(`/api/${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Wasmlattice-Token": TOKEN },
      body: JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, error: `the dashboard did not answer: ${e}`, errors: [] };
  }
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: `HTTP ${response.status}` }; }
  return response.ok ? { ok: true, ...data } : { ok: false, errors: [], ...data };
}

async function act(path, body, done) {
  const result = await post(path, body);
  if (result.ok) toast(result.message || "done");
  else toast(result.error || "failed", true);
  if (done) done(result);
  return result;
}

// -- hosts --------------------------------------------------------------------------------------

function metricsCell(componentId) {
  const m = state.metrics && state.metrics.available && state.metrics.components
    ? state.metrics.components[componentId] : null;
  if (!m) return el("td", { class: "metric", text: "—" });
  // Rates and percentiles are over the interval between the dashboard's last two scrapes;
  // null (shown as —) before the second scrape, or when the interval had no requests.
  const f = (v, unit, scale = 1) => (v === null || v === undefined ? "—" : `${(Number(v) * scale).toFixed(1)}${unit}`);
  return el("td", {
    class: "metric", "data-testid": "metrics",
    "data-requests-total": String(m.requests_total), "data-errors-total": String(m.errors_total),
    title: `since the hosts started: ${m.requests_total} requests, ${m.errors_total} errors`,
  }, `${f(m.request_rate, "/s")} · err ${f(m.error_rate, "%", 100)} · p50 ${f(m.p50_ms, "ms")} p95 ${f(m.p95_ms, "ms")} · ${m.requests_total} req`);
}

function componentRow(host, c) {
  const key = `${host.id}/${c.id}`;
  const input = el("input", {
    type: "number", min: 0, max: 10000, value: drafts.has(key) ? drafts.get(key) : c.max_instances,
    "data-key": key, "data-testid": "scale-input", "aria-label": `instances of ${c.id}`,
    oninput: (e) => drafts.set(key, e.target.value),
  });
  const scale = el("button", {
    "data-testid": "scale-button",
    onclick: async () => {
      const count = Number(input.value);
      const r = await act("components/scale", { host_id: host.id, component_id: c.id, count, image_ref: c.image_ref || undefined });
      if (r.ok) drafts.delete(key);
    },
  }, "Scale");
  const logs = el("button", { onclick: () => { showTab("logs"); selectLogs(c.id); } }, "Logs");
  return el("tr", { "data-testid": "component-row", "data-component-id": c.id, "data-host-id": host.id },
    el("td", { class: "mono" }, c.id, c.name && c.name !== c.id ? el("div", { class: "note", text: c.name }) : null),
    el("td", { class: "mono", text: c.image_ref }),
    el("td", { "data-testid": "count", text: String(c.max_instances) }),
    el("td", {}, badge(c.health), c.error ? el("div", { class: "why", text: c.error }) : null),
    metricsCell(c.id),
    el("td", {}, el("div", { class: "row" }, input, scale, logs)),
  );
}

function providerRow(host, p) {
  return el("tr", { "data-testid": "provider-row", "data-provider-id": p.id },
    el("td", { class: "mono", text: p.id }),
    el("td", { class: "mono", text: p.image_ref }),
    el("td", {}, badge(p.health)),
  );
}

function hostCard(host) {
  const instances = host.components.reduce((n, c) => n + c.max_instances, 0);
  const labels = Object.entries(host.labels).sort().map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
  return el("div", { class: "host", "data-testid": "host", "data-host-id": host.id },
    el("h2", {}, host.friendly_name || short(host.id), el("span", { class: "id", text: host.id })),
    el("div", { class: "meta" },
      el("span", {}, "version ", el("b", { text: host.version || "?" })),
      el("span", {}, "up ", el("b", { "data-uptime": host.uptime_seconds, "data-uptime-at": host.uptime_at,
        text: duration(host.uptime_seconds + (Date.now() - host.uptime_at) / 1000) })),
      el("span", { "data-testid": "host-counts" },
        `${host.components.length} components (${instances} instances), ${host.providers.length} providers`),
    ),
    el("div", {}, labels),
    host.components.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ["Component", "Image", "Instances", "Health", "Requests", "Scale"].map((h) => el("th", { text: h })))),
          el("tbody", {}, host.components.map((c) => componentRow(host, c))))
      : el("p", { class: "empty", text: "No components" }),
    host.providers.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ["Provider", "Image", "Health"].map((h) => el("th", { text: h })))),
          el("tbody", {}, host.providers.map((p) => providerRow(host, p))))
      : el("p", { class: "empty", text: "No providers" }),
  );
}

function renderHosts() {
  const root = document.getElementById("hosts");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  root.replaceChildren(...(state.hosts.length ? state.hosts.map(hostCard)
    : [el("p", { class: "empty", "data-testid": "no-hosts", text: "No hosts answer on this lattice. Start one with `wasmlattice host` or `wasmlattice up`." })]));
  if (focused) {
    const again = root.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  const note = document.getElementById("metrics-note");
  const m = state.metrics || {};
  note.hidden = !!m.available;
  note.textContent = m.available ? "" : (m.error ? `request metrics: ${m.error}` : (m.hint || "request metrics are not available"));
  renderSummary();
  renderLogChoices();
}

function renderSummary() {
  const comps = state.hosts.reduce((n, h) => n + h.components.length, 0);
  const provs = state.hosts.reduce((n, h) => n + h.providers.length, 0);
  document.getElementById("summary").textContent =
    `${state.hosts.length} hosts · ${comps} components · ${provs} providers · ${state.apps.length} apps · ${state.links.length} links`;
}

setInterval(() => {
  for (const node of document.querySelectorAll("[data-uptime-at]")) {
    node.textContent = duration(Number(node.dataset.uptime) + (Date.now() - Number(node.dataset.uptimeAt)) / 1000);
  }
}, 1000); // a clock on the page only: nothing is fetched

// -- apps ---------------------------------------------------------------------------------------

function renderApps() {
  const body = document.querySelector("#apps tbody");
  if (!state.apps.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty", text: "No apps. Deploy a manifest above." })));
  } else {
    body.replaceChildren(...state.apps.map((app) => {
      const why = [app.message, ...app.scalers.filter((s) => s.status !== "deployed" && s.message)
        .map((s) => `${s.kind} ${s.name}: ${s.message}`)].filter(Boolean);
      const del = el("button", { class: "danger", "data-testid": "app-delete", onclick: (e) => {
        if (e.target.dataset.armed) act("apps/delete", { name: app.name });
        else { e.target.dataset.armed = "1"; e.target.textContent = "Really delete?"; }
      } }, "Delete");
      return el("tr", { "data-testid": "app", "data-app": app.name },
        el("td", { class: "mono" }, el("b", { text: app.name }), app.description ? el("div", { class: "note", text: app.description }) : null),
        el("td", { class: "mono", text: app.version }),
        el("td", { class: "mono", text: app.deployed_version || "—" }),
        el("td", { "data-testid": "app-status" }, badge(app.status)),
        el("td", { class: "why", "data-testid": "app-why" }, why.map((w) => el("div", { text: w }))),
        el("td", {}, el("div", { class: "row" },
          app.status === "undeployed"
            ? el("button", { "data-testid": "app-deploy", onclick: () => act("apps/deploy-stored", { name: app.name }) }, "Deploy")
            : el("button", { "data-testid": "app-undeploy", onclick: () => act("apps/undeploy", { name: app.name }) }, "Undeploy"),
          del)),
      );
    }));
  }
  renderSummary();
}

function showManifestResult(result, deployed) {
  const list = document.getElementById("manifest-errors");
  const out = document.getElementById("manifest-result");
  list.replaceChildren(...(result.errors || []).map((e) => el("li", { text: e })));
  if (result.ok) {
    const warnings = (result.warnings || []).map((w) => el("div", { class: "note", text: `warning: ${w}` }));
    out.replaceChildren(el("span", { "data-testid": "manifest-ok" },
      deployed ? `Deploying ${result.name} ${result.version}: ${result.message || result.result}` : `Valid: ${result.name} ${result.version || ""}`), ...warnings);
  } else {
    out.replaceChildren(el("span", { class: "why", "data-testid": "manifest-error" }, result.error || "failed"));
  }
}

document.getElementById("validate").addEventListener("click", async () => {
  const r = await post("validate", { manifest: document.getElementById("manifest").value });
  showManifestResult(r, false);
});
document.getElementById("deploy").addEventListener("click", async () => {
  const r = await post("apps/deploy", { manifest: document.getElementById("manifest").value });
  showManifestResult(r, true);
  if (r.ok) toast(`${r.name} ${r.version}: ${r.message || r.result}`);
});
document.getElementById("manifest-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (file) document.getElementById("manifest").value = await file.text();
});

// -- links and config ---------------------------------------------------------------------------

function renderLinks() {
  const body = document.querySelector("#links tbody");
  if (!state.links.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty", text: "No links" })));
  } else {
    body.replaceChildren(...state.links.map((l) => el("tr", { "data-testid": "link", "data-source": l.source_id },
      el("td", { class: "mono", text: l.source_id }),
      el("td", { class: "mono", text: l.target }),
      el("td", { class: "mono", text: `${l.wit_namespace}:${l.wit_package}/{${l.interfaces.join(",")}}` }),
      el("td", { class: "mono", text: l.name }),
      el("td", { class: "mono", text: l.source_config.join(", ") }),
      el("td", { class: "mono", text: l.target_config.join(", ") }),
      el("td", {}, el("button", { class: "danger", onclick: () => act("links/delete",
        { source_id: l.source_id, wit_namespace: l.wit_namespace, wit_package: l.wit_package, name: l.name }) }, "Delete")),
    )));
  }
  renderSummary();
}

function renderConfigs() {
  const list = document.getElementById("configs");
  list.replaceChildren(...(state.configs.length ? state.configs.map((name) => el("li", { "data-testid": "config", "data-name": name },
    el("span", { class: "mono", text: name }),
    el("button", { class: "danger", onclick: () => act("configs/delete", { name }) }, "×"),
  )) : [el("li", { class: "empty", text: "No named config" })]));
}

function formObject(form) {
  return Object.fromEntries(new FormData(form).entries());
}

document.getElementById("link-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("links/put", formObject(e.target), (r) => { if (r.ok) e.target.reset(); });
});
document.getElementById("config-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("configs/put", formObject(e.target), (r) => { if (r.ok) e.target.reset(); });
});

// -- events and logs ----------------------------------------------------------------------------

function eventItem(ev) {
  const failed = /failed/.test(ev.type);
  return el("li", { "data-testid": "event", "data-type": ev.type },
    el("span", { class: "note", text: (ev.time || "").replace("T", " ").slice(0, 19) }),
    el("span", { class: `type${failed ? " failed" : ""}`, text: ev.type }),
    el("span", { title: ev.source, text: short(ev.source) }), " ",
    el("span", { class: "note", text: JSON.stringify(ev.data) }),
  );
}

function renderEvents() {
  const hide = document.getElementById("hide-heartbeats").checked;
  const shown = state.events.filter((ev) => !(hide && ev.type === "host_heartbeat")).slice(-MAX_EVENTS).reverse();
  document.getElementById("events").replaceChildren(...shown.map(eventItem));
}
document.getElementById("hide-heartbeats").addEventListener("change", renderEvents);

let logChoice = "";
function selectLogs(componentId) {
  logChoice = componentId;
  renderLogChoices();
  renderLogs();
}

function renderLogChoices() {
  const select = document.getElementById("log-component");
  const ids = new Set(Object.keys(state.logs));
  for (const h of state.hosts) for (const c of h.components) ids.add(c.id);
  const options = [el("option", { value: "", text: "all components" }),
    ...[...ids].sort().map((id) => el("option", { value: id, text: id }))];
  select.replaceChildren(...options);
  select.value = logChoice;
}
document.getElementById("log-component").addEventListener("change", (e) => selectLogs(e.target.value));

function logRow(r) {
  return el("tr", { class: r.stream || "", "data-testid": "log-line", "data-component-id": r.component_id },
    el("td", { text: (r.time || "").replace("T", " ").slice(0, 23) }),
    el("td", { text: r.component_id }),
    el("td", { title: r.host_id, text: short(r.host_id) }),
    el("td", { text: `${r.stream || ""}${r.level ? ` ${r.level}` : ""}` }),
    el("td", { text: r.message }),
    el("td", { title: r.trace_id || "", text: short(r.trace_id || "") }),
  );
}

function renderLogs() {
  const lines = logChoice ? (state.logs[logChoice] || [])
    : Object.values(state.logs).flat().sort((a, b) => String(a.time).localeCompare(String(b.time)));
  const rows = lines.slice(-MAX_LOGS).reverse().map(logRow);
  document.querySelector("#logs tbody").replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 6, class: "empty", text: "No log lines yet" }))]));
}

// -- problems, tabs, the stream -----------------------------------------------------------------

function renderProblems() {
  const box = document.getElementById("problems");
  const entries = Object.entries(state.problems || {});
  box.hidden = entries.length === 0;
  box.replaceChildren(...entries.map(([section, message]) => el("div", {}, el("b", { text: `${section}: ` }), message)));
}

const RENDER = { hosts: renderHosts, apps: renderApps, links: renderLinks, configs: renderConfigs,
  metrics: renderHosts, problems: renderProblems };

function renderAll() {
  renderHosts(); renderApps(); renderLinks(); renderConfigs(); renderEvents(); renderLogs(); renderProblems();
}

function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const section of document.querySelectorAll("main .tab")) section.hidden = section.id !== `tab-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}
for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
if (location.hash) showTab(location.hash.slice(1));

function connect() {
  const conn = document.getElementById("connection");
  const stream = new EventSource(`/api/stream?token=${encodeURIComponent(TOKEN)}`);
  stream.addEventListener("snapshot", (e) => {
    state = JSON.parse(e.data);
    conn.textContent = "live"; conn.className = "conn live";
    renderAll();
  });
  for (const kind of Object.keys(RENDER)) {
    stream.addEventListener(kind, (e) => { state[kind] = JSON.parse(e.data); RENDER[kind](); });
  }
  stream.addEventListener("event", (e) => {
    state.events.push(JSON.parse(e.data));
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    renderEvents();
  });
  stream.addEventListener("log", (e) => {
    const r = JSON.parse(e.data);
    const lines = state.logs[r.component_id] || (state.logs[r.component_id] = []);
    lines.push(r);
    if (lines.length > MAX_LOGS) lines.splice(0, lines.length - MAX_LOGS);
    if (!logChoice || logChoice === r.component_id) renderLogs();
  });
  stream.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  // EventSource reconnects by itself; each new connection starts with a fresh snapshot.
}
connect();

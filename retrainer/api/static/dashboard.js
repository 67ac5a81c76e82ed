// The retrainer dashboard: reads the API's JSON endpoints every REFRESH_MS and draws one model at a
// time. It holds no state of its own: every figure is what the endpoint of the same name returns, so
// the page, the CLI and a script always agree. The token (RETRAINER_API_TOKEN) lives in this tab's
// sessionStorage only; `retrainer up` may hand it over in the URL fragment (#token=...), which the
// browser never sends to a server and which is removed from the address bar at once.
"use strict";

const REFRESH_MS = 10000;
const TOKEN_KEY = "retrainer.token";
const COLORS = ["#2457c5", "#e8710a", "#137333", "#9334e6", "#b3261e", "#00838f", "#795548", "#c2185b"];
const state = { model: null, models: [], timer: null, busy: false };

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function takeTokenFromFragment() {
  const found = new URLSearchParams(location.hash.slice(1)).get("token");
  if (found) {
    sessionStorage.setItem(TOKEN_KEY, found);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new ApiError(response.status, detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

// --- small DOM helpers: text is always set as text, never parsed as HTML ----------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const $ = (id) => document.getElementById(id);
const num = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits).replace(/\.?0+$/, (m) => (m.startsWith(".") ? "" : m)));
const pct = (v) => (v === null || v === undefined ? "–" : `${v >= 0 ? "+" : ""}${Number(v).toFixed(1)}%`);
function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}
function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  const [n, unit] = Math.abs(s) < 90 ? [s, "s"] : Math.abs(s) < 5400 ? [s / 60, "min"] : Math.abs(s) < 129600 ? [s / 3600, "h"] : [s / 86400, "d"];
  return s >= 0 ? `${Math.round(n)} ${unit} ago` : `in ${Math.round(-n)} ${unit}`;
}

function due(iso) {
  return iso && new Date(iso).getTime() <= Date.now() + 5000 ? "due now" : ago(iso);
}

function banner(message) {
  $("banner").hidden = !message;
  $("banner").textContent = message || "";
}

// --- the page --------------------------------------------------------------------------------------
async function loadModels() {
  const production = await api("/models/production");
  state.models = Object.keys(production);
  const wanted = new URLSearchParams(location.search).get("model");
  state.model = state.models.includes(wanted) ? wanted : state.model || state.models[0] || null;
  $("models").replaceChildren(...state.models.map((name) => {
    const link = el("a", { href: `?model=${encodeURIComponent(name)}`, class: name === state.model ? "current" : "" }, name);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      state.model = name;
      history.replaceState(null, "", `?model=${encodeURIComponent(name)}`);
      loadModels().then(refresh);
    });
    return link;
  }));
  if (!state.model) banner("No model is configured: add one to retrainer.yaml (models:) and restart the API.");
}

async function refresh() {
  if (!state.model) return;
  const m = encodeURIComponent(state.model);
  try {
    const [status, history, versions, ledger, live, schedule, requests, drift] = await Promise.all([
      api(`/retraining/status?model=${m}`), api(`/models/training-history?model=${m}&limit=200`),
      api(`/models/versions?model=${m}&limit=50`), api(`/models/ledger?model=${m}&limit=100`),
      api(`/models/live-metric?model=${m}&days=30`), api(`/models/schedule?model=${m}`),
      api(`/requests?model=${m}&limit=10`), api(`/drift/reports?model=${m}&limit=1`),
    ]);
    const s = status.models[state.model];
    banner("");
    $("model").hidden = false;
    drawCards(s, live, schedule);
    drawActions(s);
    drawLive(live, ledger.ledger);
    drawHoldout(versions.versions, live);
    drawFrequency(history.training_runs);
    drawRequests(requests.requests);
    drawHistory(history.training_runs.slice(0, 25));
    drawDrift(drift.reports[0]);
    $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    banner(error.status === 401 ? `Reads need the API token: ${error.message}. Use "Set token".`
                                : `Could not load ${state.model}: ${error.message}`);
  }
}

function card(title, value, detail, tone) {
  return el("div", { class: "card", "data-card": title },
    el("h3", {}, title), el("div", { class: `value ${tone || ""}` }, value), el("div", { class: "detail" }, detail || ""));
}

function drawCards(s, live, schedule) {
  const prod = s.production;
  const acc = s.live_accuracy;
  const value = acc[acc.metric];
  const breached = value !== null && value !== undefined && acc.threshold !== null &&
    (live.higher_is_better ? value < acc.threshold : value > acc.threshold);
  const run = s.last_run;
  const decision = run ? (run.promoted_to_production ? "promoted" : run.status === "failed" ? "failed" : run.outcome || run.status) : null;
  const reason = run ? (run.decision?.summary || run.promotion_reason || run.error_message || "") : "";
  const next = Object.entries(schedule.schedules).filter(([key]) => key !== "retrain")
    .sort((a, b) => a[1].next_at.localeCompare(b[1].next_at))[0];
  const accuracyCheck = schedule.schedules.check;
  const samples = schedule.new_samples;
  const drift = s.drift;
  $("cards").replaceChildren(
    card("Production", prod ? prod.version_id : "none yet",
      prod ? `since ${when(prod.promoted_at)} (${ago(prod.promoted_at)})${prod.probation === "watching" ? " · on probation" : ""}` : "no version has been promoted"),
    card("Status", s.state.paused ? "paused" : "active",
      s.state.paused ? `by ${s.state.changed_by} ${ago(s.state.changed_at)}${s.state.reason ? `: ${s.state.reason}` : ""}` : `${s.pending_requests} pending request(s)`,
      s.state.paused ? "warn" : "ok"),
    card(`Live ${acc.metric}`, num(value),
      `threshold ${num(acc.threshold)} · ${prod ? prod.version_id : "no version"}: ${acc.count} outcomes in ${acc.lookback_days} d`, breached ? "bad" : value === null ? "" : "ok"),
    card("New samples", `${samples.count}${samples.at_least ? "+" : ""} / ${samples.min_samples}`,
      samples.since ? `since the last run ${ago(samples.since)}` : "no run yet", samples.count >= samples.min_samples ? "warn" : ""),
    card("Next check", accuracyCheck ? due(accuracyCheck.next_at) : next ? due(next[1].next_at) : "none scheduled",
      accuracyCheck ? `accuracy (${accuracyCheck.expression}) at ${when(accuracyCheck.next_at)}` : next ? `${next[0]} at ${when(next[1].next_at)}` : ""),
    card("Last run", decision || "none yet", run ? `${run.trigger} · ${ago(run.started_at)} · ${reason}` : "",
      decision === "promoted" ? "ok" : decision === "failed" ? "bad" : ""),
    card("Drift", drift ? `${Math.round((drift.drifted_share || 0) * 100)}% drifted` : "not checked",
      drift ? `${drift.status} · share threshold ${Math.round(drift.share_threshold * 100)}% · ${ago(drift.checked_at)}` : "",
      drift && drift.status === "drift" ? "bad" : ""),
  );
}

function drawActions(s) {
  const button = $("pause-toggle");
  button.textContent = s.state.paused ? "Resume" : "Pause";
  button.dataset.paused = String(s.state.paused);
  $("rollback").disabled = !s.production || !s.production.previous_production_id;
  $("rollback").title = s.production?.previous_production_id ? `back to ${s.production.previous_production_id}` : "nothing to roll back to";
}

function layout(extra) {
  return { margin: { l: 64, r: 10, t: 10, b: 40 }, legend: { orientation: "h", y: -0.2 }, hovermode: "closest", ...extra };
}
const plotConfig = { displaylogo: false, responsive: true };

function empty(id, text) {  // a chart with nothing to draw says so, without axes that mean nothing
  Plotly.react(id, [], layout({ xaxis: { visible: false }, yaxis: { visible: false },
    annotations: [{ xref: "paper", yref: "paper", x: 0.5, y: 0.5, text, showarrow: false, font: { color: "#667085" } }] }), plotConfig);
}

function drawLive(live, ledger) {
  const traces = live.series.map((line, i) => ({
    type: "scatter", mode: "lines+markers", name: line.version_id || "(no version)",
    x: line.points.map((p) => p.at), y: line.points.map((p) => p.value),
    text: line.points.map((p) => `${p.count} outcomes`), marker: { size: 4 }, line: { color: COLORS[i % COLORS.length] },
  }));
  const shapes = [];
  const annotations = [];
  if (live.threshold !== null) {
    shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: live.threshold, y1: live.threshold, line: { dash: "dash", color: "#b3261e", width: 1 } });
    annotations.push({ xref: "paper", x: 1, y: live.threshold, text: `threshold ${num(live.threshold)}`, showarrow: false, xanchor: "right", yanchor: "bottom", font: { size: 10, color: "#b3261e" } });
  }
  for (const entry of ledger.filter((e) => e.created_at >= live.since)) {
    const color = entry.action === "rollback" ? "#b3261e" : "#137333";
    shapes.push({ type: "line", yref: "paper", x0: entry.created_at, x1: entry.created_at, y0: 0, y1: 1, line: { color, width: 1 } });
    annotations.push({ yref: "paper", x: entry.created_at, y: 1, text: `${entry.action} ${entry.version_id}`, showarrow: false, textangle: -90, xanchor: "right", yanchor: "top", font: { size: 10, color } });
  }
  if (!traces.length) return empty("chart-live", "no outcomes recorded in the last 30 days");
  Plotly.react("chart-live", traces, layout({
    shapes, annotations, yaxis: { title: { text: `${live.metric} (${live.higher_is_better ? "higher" : "lower"} is better)` } },
  }), plotConfig);
}

function drawHoldout(versions, live) {
  const rows = versions.filter((v) => v.metrics && v.metrics[live.holdout_metric] !== undefined).reverse();
  if (!rows.length) return empty("chart-holdout", "no version trained yet");
  Plotly.react("chart-holdout", [{
    type: "bar", x: rows.map((v) => v.version_id), y: rows.map((v) => v.metrics[live.holdout_metric]),
    marker: { color: rows.map((v) => (v.is_production ? "#137333" : v.status === "failed" ? "#b3261e" : "#2457c5")) },
    text: rows.map((v) => `${v.status}${v.is_production ? " (production)" : ""}`), hovertemplate: "%{x}: %{y}<br>%{text}<extra></extra>",
  }], layout({ yaxis: { title: { text: `${live.holdout_metric} (${live.holdout_higher_is_better ? "higher" : "lower"} is better)` } }, xaxis: { type: "category" } }), plotConfig);
}

function drawFrequency(runs) {
  const groups = { promoted: {}, kept: {}, failed: {}, other: {} };
  for (const run of runs) {
    const day = (run.started_at || "").slice(0, 10);
    const group = run.promoted_to_production ? "promoted" : run.status === "failed" ? "failed" : run.status === "completed" ? "kept" : "other";
    groups[group][day] = (groups[group][day] || 0) + 1;
  }
  const colors = { promoted: "#137333", kept: "#2457c5", failed: "#b3261e", other: "#98a2b3" };
  const traces = Object.entries(groups).filter(([, days]) => Object.keys(days).length)
    .map(([name, days]) => ({ type: "bar", name, x: Object.keys(days), y: Object.values(days), marker: { color: colors[name] } }));
  if (!traces.length) return empty("chart-frequency", "no run yet");
  Plotly.react("chart-frequency", traces, layout({ barmode: "stack", yaxis: { title: { text: "runs" }, dtick: 1 },
    xaxis: { type: "date", tickformat: "%b %d", dtick: 86400000 } }), plotConfig);
}

function table(id, head, rows) {
  $(id).replaceChildren(el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: head.length, class: "muted" }, "none yet"))]));
}

function drawRequests(requests) {
  table("requests", ["id", "asked", "by", "trigger", "priority", "status", "run", "reason"], requests.map((r) => el("tr", { "data-request": r.id, "data-status": r.status },
    el("td", {}, r.id), el("td", {}, ago(r.created_at)), el("td", {}, r.requested_by), el("td", {}, r.trigger), el("td", {}, r.priority),
    el("td", { class: r.status === "failed" ? "bad" : r.status === "completed" ? "ok" : "" }, r.status, r.run_outcome ? ` (${r.run_outcome})` : ""),
    el("td", {}, r.run_id || ""), el("td", { class: "reason" }, r.error_message || r.reason || ""))));
}

function drawHistory(runs) {
  table("history", ["started", "trigger", "result", "version", "holdout", "improvement", "why"], runs.map((r) => el("tr", { "data-run": r.run_id },
    el("td", {}, when(r.started_at)), el("td", {}, r.trigger),
    el("td", { class: r.promoted_to_production ? "ok" : r.status === "failed" ? "bad" : "" }, r.promoted_to_production ? "promoted" : r.outcome || r.status),
    el("td", {}, r.model_version_id || ""), el("td", {}, r.holdout_size ?? ""), el("td", {}, pct(r.improvement_percentage)),
    el("td", { class: "reason" }, r.decision?.summary || r.promotion_reason || r.error_message || ""))));
}

function drawDrift(report) {
  const features = report ? Object.entries(report.features || {}) : [];
  table("drift", ["feature", "method", "statistic", "threshold", "verdict", "note"], features.map(([name, f]) => el("tr", {},
    el("td", {}, name), el("td", {}, f.method || ""), el("td", {}, num(f.statistic)), el("td", {}, num(f.threshold)),
    el("td", { class: f.drifted ? "bad" : "ok" }, f.drifted === undefined ? "not compared" : f.drifted ? "drifted" : "stable"),
    el("td", { class: "reason" }, f.note || ""))));
}

// --- actions: each one call of a write endpoint, its answer shown as the API gave it ------------------
async function act(label, call) {
  if (state.busy) return;
  state.busy = true;
  const result = $("action-result");
  result.className = "";
  result.textContent = `${label}…`;
  document.querySelectorAll("#actions button").forEach((b) => { b.disabled = true; });
  try {
    const answer = await call();
    result.className = "ok";
    result.textContent = answer.message || `${label}: done`;
  } catch (error) {
    result.className = "bad";
    result.textContent = error.status === 401 || error.status === 403
      ? `${label} needs the API token: ${error.message}` : `${label} refused: ${error.message}`;
  } finally {
    document.querySelectorAll("#actions button").forEach((b) => { b.disabled = false; });
    state.busy = false;
    await refresh();
  }
}

function wire() {
  $("retrain-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = $("retrain-reason").value.trim() || null;
    act("Retrain", () => api("/models/retrain", { method: "POST", body: JSON.stringify({
      model: state.model, reason, priority: $("retrain-priority").value, requested_by: "dashboard" }) }));
  });
  $("pause-toggle").addEventListener("click", () => {
    const paused = $("pause-toggle").dataset.paused === "true";
    act(paused ? "Resume" : "Pause", () => api(paused ? "/retraining/start" : "/retraining/stop", {
      method: "POST", body: JSON.stringify({ model: state.model, by: "dashboard", reason: paused ? null : "paused from the dashboard" }) }));
  });
  $("rollback").addEventListener("click", () => {
    if (!confirm(`Roll ${state.model} back to the version its production replaced?`)) return;
    act("Rollback", () => api(`/models/rollback/${encodeURIComponent(state.model)}`, {
      method: "POST", body: JSON.stringify({ by: "dashboard", reason: "rolled back from the dashboard" }) }));
  });
  $("token-button").addEventListener("click", () => {
    const value = prompt("API token (RETRAINER_API_TOKEN), kept in this tab only; empty to forget it:", "");
    if (value === null) return;
    if (value.trim()) sessionStorage.setItem(TOKEN_KEY, value.trim()); else sessionStorage.removeItem(TOKEN_KEY);
    showToken();
    loadModels().then(refresh);
  });
}

function showToken() { $("token-button").textContent = token() ? "Token set" : "Set token"; }

async function start() {
  takeTokenFromFragment();
  showToken();
  wire();
  try {
    await loadModels();
    await refresh();
  } catch (error) {
    banner(error.status === 401 ? `Reads need the API token: ${error.message}. Use "Set token".` : `The API did not answer: ${error.message}`);
  }
  state.timer = setInterval(() => { if (!document.hidden && !state.busy) refresh(); }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);

// The mgpu dashboard: reads the master's HTTP API with the user's token (kept for this tab
// only, in sessionStorage) and redraws when /api/events says something changed.
"use strict";

const state = { token: sessionStorage.getItem("mgpu_token") || "", me: null, job: null };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child === null || child === undefined ? "" : child);
  return node;
}

function auth() {
  // No token: a master with [http] loopback_read answers this host's reads without one.
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, options = {}) {
  const headers = { ...auth(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  const type = response.headers.get("content-type") || "";
  const body = type.startsWith("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "";
}

function drawGrid(nodes, jobs) {
  const byId = new Map(jobs.map((j) => [j.job_id, j]));
  const grid = $("#grid");
  grid.replaceChildren(...nodes.map((node) => {
    const gpus = node.gpus.map((g) => {
      const job = g.job_id === null ? null : byId.get(g.job_id);
      const util = g.utilization_pct >= 0 ? ` ${g.utilization_pct}%` : "";
      const mem = g.memory_used_bytes >= 0 ? ` ${(g.memory_used_bytes / 2 ** 30).toFixed(1)}G` : "";
      const who = g.job_id === null ? "free" : `job ${g.job_id}${job ? " " + job.user : ""}`;
      const kind = !g.healthy ? "gpu sick" : g.job_id === null ? "gpu" : "gpu busy";
      // Processes on the GPU that no job of mgpu's started (the agent reports strangers only).
      const strangers = (g.processes || []).map((p) => `${p.user} pid ${p.pid} ${p.command || "?"}`);
      // A MIG slice names the physical GPU it is part of.
      const slice = g.parent_index >= 0
        ? el("span", { class: "slice", title: g.parent_uuid || "" }, ` on GPU ${g.parent_index}`)
        : "";
      const foreign = strangers.length
        ? el("div", { class: "foreign", title: strangers.join("\n") }, `⚠ ${strangers.length} not from mgpu`)
        : "";
      return el("div", { class: kind, "data-gpu": `${node.node_id}/${g.index}`, "data-job": g.job_id ?? "" },
        `gpu${g.index} ${g.model || g.name}`, slice, el("br"), who, util + mem, foreign);
    });
    const down = node.state.startsWith("down") || node.down_reason;
    return el("div", { class: down ? "node down" : "node", "data-node": node.node_id },
      el("h3", {}, `${node.node_id} · ${node.state}`), el("div", { class: "gpus" }, ...gpus));
  }));
}

function actions(job) {
  const mine = state.me && (state.me.admin || state.me.user === job.user);
  if (!mine) return "";
  const act = (verb, label) => el("button", {
    "data-action": verb, "data-job": job.job_id,
    onclick: (e) => { e.stopPropagation(); act_on(verb, job.job_id); },
  }, label);
  if (job.state === "PENDING") return el("span", {}, act("hold", "hold"), act("release", "release"), act("cancel", "cancel"));
  if (job.state === "RUNNING") return act("cancel", "cancel");
  return "";
}

async function act_on(verb, jobId) {
  try {
    if (verb === "cancel") await api(`/api/jobs/${jobId}`, { method: "DELETE" });
    else await api(`/api/jobs/${jobId}/${verb}`, { method: "POST" });
  } catch (error) {
    alert(`${verb} job ${jobId}: ${error.message}`);
  }
  refresh();
}

function drawQueue(jobs) {
  const rows = jobs.map((j) => {
    const where = j.state === "PENDING" ? `(${j.reason})` : `${j.node}${j.reason ? " (" + j.reason + ")" : ""}`;
    return el("tr", { id: `job-${j.job_id}`, class: "clickable", onclick: () => showJob(j.job_id) },
      el("td", {}, j.job_ref || String(j.job_id)), el("td", {}, j.name), el("td", {}, j.user),
      el("td", { class: "state" }, j.state), el("td", {}, duration(j.elapsed_s)),
      el("td", {}, String(j.gpus)), el("td", {}, where), el("td", {}, when(j.expected_start)),
      el("td", {}, actions(j)));
  });
  $("#queue tbody").replaceChildren(...rows);
}

function drawUsage(report) {
  const top = Math.max(1e-9, ...report.rows.map((r) => r.gpu_hours));
  $("#usage").replaceChildren(...report.rows.map((r) => el("div", {},
    el("span", { class: "bar", style: `width:${Math.round(200 * r.gpu_hours / top)}px` }),
    ` ${r.key} ${r.gpu_hours.toFixed(2)} GPU-h`)));
}

function turnText(t) {
  // The turn queue as people read it: the mode, whose turn it is, who is next, the rotation.
  const waiting = Object.entries(t.waiting || {}).map(([u, n]) => `${u} (${n})`).join(", ");
  const lines = [
    `mode: ${t.mode}`,
    `current: ${t.current ?? "-"}`,
    `next: ${t.next_user ?? "-"}`,
    `rotation: ${(t.rotation || []).join(" → ") || "-"}`,
    `waiting: ${waiting || "-"}`,
  ];
  if ((t.revoked || []).length) lines.push(`GPU access revoked: ${t.revoked.join(", ")}`);
  for (const h of (t.history || []).slice(-5)) lines.push(`  ${JSON.stringify(h)}`);
  return lines.join("\n");
}

async function drawPlot() {
  // GPU-seconds used per step / (the cluster's GPUs x step): one bar per hour (day) or 6 h (week).
  const span = Number($("#span").value), step = span > 86400 ? 21600 : 3600;
  const end = Date.now() / 1000, start = end - span;
  const usage = await api(`/api/usage?start=${start}&end=${end}&step=${step}`);
  const svgNS = "http://www.w3.org/2000/svg", svg = $("#plot"), w = 480, h = 120;
  const n = usage.gpu_seconds.length, bar = w / Math.max(1, n);
  const bars = usage.gpu_seconds.map((used, i) => {
    const frac = usage.gpus ? Math.min(1, used / (usage.gpus * step)) : 0;
    const rect = document.createElementNS(svgNS, "rect");
    rect.setAttribute("x", String(i * bar)); rect.setAttribute("width", String(Math.max(1, bar - 1)));
    rect.setAttribute("y", String(h - frac * h)); rect.setAttribute("height", String(frac * h));
    rect.setAttribute("fill", "#5b8def");
    const title = document.createElementNS(svgNS, "title");
    title.textContent = `${new Date((usage.start_s + i * step) * 1000).toLocaleString()}: ${Math.round(100 * frac)}%`;
    rect.append(title);
    return rect;
  });
  const axis = document.createElementNS(svgNS, "text");
  axis.setAttribute("x", "0"); axis.setAttribute("y", String(h + 14)); axis.setAttribute("font-size", "11");
  axis.textContent = `0-100 % of ${usage.gpus} GPUs, per ${step / 3600} h`;
  svg.replaceChildren(...bars, axis);
}

async function showJob(jobId) {
  state.job = jobId;
  $("#job").hidden = false;
  $("#job-id").textContent = String(jobId);
  const job = await api(`/api/jobs/${jobId}`);
  const keys = ["state", "reason", "user", "node", "gpu_indices", "gpu_uuids", "exit_code", "signal",
    "submit_time", "start_time", "end_time", "wait_s", "stdout_path", "command", "dependency"];
  $("#job-detail").textContent = keys.map((k) => `${k}: ${JSON.stringify(job[k])}`).join("\n");
  try {
    $("#job-log").textContent = await api(`/api/jobs/${jobId}/log?from_end=8192&offset=`);
  } catch (error) {
    $("#job-log").textContent = `(${error.message})`;
  }
}

const SLOW_REDRAW_MS = 60000;  // the day's GPU-hours and utilisation move slowly: once a minute
let slowDrawnAt = 0;

async function refresh() {
  const [nodes, queue, turns] = await Promise.all([
    api("/api/nodes"), api("/api/jobs?finished=1"), api("/api/turns"),
  ]);
  drawGrid(nodes.nodes, queue.jobs);
  drawQueue(queue.jobs);
  $("#turns").textContent = turnText(turns);
  if (Date.now() - slowDrawnAt > SLOW_REDRAW_MS) {
    slowDrawnAt = Date.now();
    const end = Date.now() / 1000;
    api(`/api/report?start=${end - 86400}&end=${end}`).then(drawUsage).catch(() => {});
    drawPlot().catch(() => {});
  }
  if (state.job !== null) showJob(state.job);
}

async function follow() {
  // Server-sent events over fetch (EventSource cannot send the token): redraw on "changed".
  while (true) {
    try {
      const response = await fetch("/api/events", { headers: auth() });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      $("#live").className = "on";
      let buffer = "";
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (event.includes("event: changed")) refresh().catch(() => {});
        }
      }
    } catch (error) { /* the master restarted or the network blinked: try again */ }
    $("#live").className = "";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function start() {
  try {
    state.me = await api("/api/whoami");
  } catch (error) {
    $("#login").hidden = false;
    $("#main").hidden = true;
    if (state.token) $("#login-error").textContent = error.message;
    return;
  }
  $("#login").hidden = true;
  $("#main").hidden = false;
  $("#who").textContent = `${state.me.user}${state.me.admin ? " (admin)" : ""}`;
  await refresh();
  follow();
}

$("#span").addEventListener("change", () => drawPlot().catch(() => {}));
$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("mgpu_token", state.token);
  start();
});
start();

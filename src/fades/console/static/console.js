// fades console: renders the live feed (/console/events, server-sent events) into the views.
// No framework and no innerHTML of data: every value goes in through textContent.
"use strict";

const S = { tasks: [], fleet: null, devices: null, selected: null, submitted: null, moveTo: {} };
const SVG = "http://www.w3.org/2000/svg";
const TIMING = ["queue", "retrieval", "transfer", "start", "compute", "result"];
const COLORS = { queue: "#9aa5b1", retrieval: "#4c9be8", transfer: "#8e6fd8", start: "#e8a33c",
  compute: "#3fae6a", result: "#d65f5f", other: "#dde1e6" };

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}
const $ = (id) => document.getElementById(id);
const fmtS = (s) => (typeof s === "number" ? (s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s") : "-");
const fmtT = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "-");
const fmtB = (n) => (typeof n !== "number" ? "-" : n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB");
const short = (v, n) => { const t = typeof v === "string" ? v : JSON.stringify(v); return t && t.length > n ? t.slice(0, n) + "…" : t; };
function fill(tbody, rows) { tbody.replaceChildren(...rows); }

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: { "X-Fades-Console": "1", "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  let data = null;
  try { data = await r.json(); } catch (e) { data = { detail: "the controller answered " + r.status }; }
  return { ok: r.ok, status: r.status, data };
}
function problemsOf(ans) {
  const d = ans.data || {};
  const box = el("div", { class: "error" }, el("span", { class: "message" }, `${d.error_kind || "error"} (${ans.status}): ${d.detail || ""}`));
  if (Array.isArray(d.problems) && d.problems.length) {
    box.append(el("ul", { class: "problems" }, ...d.problems.map((p) => el("li", {}, `${p.field}: ${p.reason}`))));
  }
  return box;
}

// --- fleet -------------------------------------------------------------------------------------
function renderFleet(f) {
  S.fleet = f;
  $("down-after").textContent = f.down_after_s;
  fill($("fleet-table").tBodies[0], f.nodes.map((n) => {
    const load = n.load || {};
    const held = {};
    for (const d of n.data || []) { const k = d.location || d.name || "?"; held[k] = held[k] || [0, 0]; held[k][0] += 1; held[k][1] += d.rows || 0; }
    const data = Object.entries(held).map(([k, [s, r]]) => `${k}: ${s} sensors, ${r.toLocaleString()} rows`).join("; ");
    return el("tr", { "data-node": n.name, class: n.up ? "up" : "down" },
      el("td", {}, n.name),
      el("td", { class: "state", title: n.down_reason || "" }, n.up ? "up" : "down"),
      el("td", {}, fmtS(n.heartbeat_age_s)),
      el("td", {}, `${load.running ?? 0} running, ${load.queued ?? 0} queued`),
      el("td", {}, `${load.capacity ?? "?"} workers, ${n.cores} cores, ${n.memory_mib} MiB`),
      el("td", { class: "data" }, short(data, 120)),
      el("td", {}, Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ")));
  }));
  const sel = $("task-node"), cur = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "any"), ...f.nodes.map((n) => el("option", { value: n.name }, n.name)), el("option", { value: "cloud" }, "cloud"));
  sel.value = cur;
}

// --- tasks -------------------------------------------------------------------------------------
function timingBar(timing) {
  timing = { ...timing };
  const phases = TIMING.filter((k) => typeof timing[k] === "number" && timing[k] > 0);
  const sum = phases.reduce((a, k) => a + timing[k], 0);
  if (typeof timing.total === "number" && timing.total > sum * 1.01) timing.other = timing.total - sum;  // time in no phase
  const parts = timing.other ? [...phases, "other"] : phases;
  const total = parts.reduce((a, k) => a + timing[k], 0) || 1;
  const bar = svg("svg", { class: "timing", viewBox: "0 0 400 22", width: "400", height: "22" });
  let x = 0;
  for (const k of parts) {
    const w = (timing[k] / total) * 400;
    bar.append(svg("rect", { x: x.toFixed(1), y: "0", width: Math.max(w, 0.5).toFixed(1), height: "22", fill: COLORS[k] },
      svg("title", {}, `${k}: ${fmtS(timing[k])}`)));
    x += w;
  }
  const legend = el("div", { class: "legend" }, ...parts.map((k) => el("span", {}, el("i", { class: "sw-" + k }), `${k} ${fmtS(timing[k])}`)));
  return el("div", {}, bar, legend);
}
function taskDetail(t) {
  const box = $("task-detail");
  if (!t) { box.replaceChildren(); return; }
  const kids = [el("h3", {}, `task ${t.task_id}`),
    el("p", {}, `${t.status} on ${t.node} (${t.where}); placed: ${t.placement || "-"}`)];
  if (t.timing && Object.keys(t.timing).length) kids.push(el("p", {}, `total ${fmtS(t.timing.total)}`), timingBar(t.timing));
  if (t.status === "done") kids.push(el("h4", {}, "result"), el("pre", { class: "task-result" }, JSON.stringify(t.result, null, 1)));
  if (t.error) kids.push(el("h4", {}, "error"), el("pre", { class: "task-error" }, `${t.error_kind}: ${t.error}`));
  if (t.traceback) kids.push(el("h4", {}, "traceback"), el("pre", { class: "traceback" }, t.traceback));
  if (t.logs) kids.push(el("h4", {}, "logs"), el("pre", { class: "logs" }, t.logs));
  box.replaceChildren(...kids);
}
function renderTasks(tasks) {
  S.tasks = tasks;
  const st = $("task-status").value, nd = $("task-node").value;
  const rows = tasks.filter((t) => (!st || t.status === st) && (!nd || t.node === nd));
  fill($("tasks-table").tBodies[0], rows.map((t) => el("tr", { "data-task": t.task_id, "data-status": t.status, class: "st-" + t.status + (S.selected === t.task_id ? " selected" : ""),
    onclick: () => { S.selected = t.task_id; renderTasks(S.tasks); } },
    el("td", {}, t.task_id), el("td", { class: "status" }, t.status), el("td", {}, t.node), el("td", {}, t.where),
    el("td", {}, fmtT(t.submitted_at)), el("td", {}, fmtS(t.latency_s)))));
  taskDetail(tasks.find((t) => t.task_id === S.selected));
  renderPlacementChoices();
  renderSubmitted();
}
function renderSummary(s) {
  $("summary").replaceChildren(...Object.entries(s.by_status).sort().map(([k, v]) =>
    el("span", { class: "count st-" + k, "data-status": k }, `${k} `, el("b", {}, v))));
}

// --- pipelines ---------------------------------------------------------------------------------
function pipelineGraph(status) {
  const plan = (status && status.queues) || [];
  const stages = [...new Set(plan.map((q) => q.stage))];
  const g = svg("svg", { class: "graph", width: String(Math.max(1, stages.length) * 170), height: String(30 + 58 * Math.max(1, ...stages.map((s) => plan.filter((q) => q.stage === s).length))) });
  stages.forEach((s, i) => {
    const x = 10 + i * 170;
    if (i > 0) {
      const prev = plan.filter((q) => q.stage === stages[i - 1]).length, here = plan.filter((q) => q.stage === s).length;
      for (let a = 0; a < prev; a++) for (let b = 0; b < here; b++)
        g.append(svg("line", { x1: x - 30, y1: 46 + a * 58, x2: x, y2: 46 + b * 58, stroke: "#8aa" }));
    }
    g.append(svg("text", { x, y: 14, class: "stage" }, s));
    plan.filter((q) => q.stage === s).forEach((q, j) => {
      const y = 22 + j * 58;
      g.append(svg("rect", { x, y, width: 140, height: 48, rx: 6, class: "box" }));
      g.append(svg("text", { x: x + 6, y: y + 18 }, q.instance && q.instance !== "_" && q.instance !== q.node ? `${q.node} (${q.instance})` : q.node));
      g.append(svg("text", { x: x + 6, y: y + 36 }, `queued ${q.queued ?? "?"} · ${q.mode}`));
    });
  });
  return g;
}
function runTimeline(tl) {
  if (!tl || !tl.stages || !tl.stages.length) return el("p", { class: "hint" }, "no stage events yet");
  const end = Math.max(...tl.stages.map((s) => s.since_start_s || 0), 0.001);
  const g = svg("svg", { class: "timeline", width: "520", height: String(20 * tl.stages.length + 10) });
  tl.stages.forEach((s, i) => {
    const w = Math.max(2, ((s.total_s || 0) / end) * 340), x = 180 + Math.max(0, ((s.since_start_s || 0) - (s.total_s || 0)) / end) * 340;
    const inst = s.instance && s.instance !== "_" && s.instance !== s.node ? "/" + s.instance : "";
    g.append(svg("text", { x: 0, y: 20 * i + 15 }, `${s.stage}${inst} @${s.node}`));
    g.append(svg("rect", { x: x.toFixed(1), y: 20 * i + 4, width: w.toFixed(1), height: 14, class: "st-" + s.status }, svg("title", {}, `${s.status} ${fmtS(s.total_s)}`)));
  });
  return el("div", {}, el("p", {}, `run ${tl.run}: ${tl.status}, ${fmtS(tl.duration_s)} (each bar: a stage instance's time, ending when it ended)`), g);
}
function renderPipelines(items) {
  $("pipelines").replaceChildren(...(items.length ? items.map((p) => {
    const st = p.status || {}, runs = st.runs || p.row.runs || {};
    return el("div", { class: "pipeline", "data-pipeline": p.row.pipeline },
      el("h3", {}, `${p.row.pipeline} (${st.state || p.row.state}, ${p.row.mode || "?"})`),
      el("p", {}, "runs: " + Object.entries(runs).map(([k, v]) => `${k} ${v}`).join(", ") + (st.reason ? ` · ${st.reason}` : "")),
      pipelineGraph(st), runTimeline(p.timeline));
  }) : [el("p", { class: "hint" }, "no pipelines")]));
}

// --- stateful ----------------------------------------------------------------------------------
function renderStateful(rows) {
  const nodes = S.fleet ? S.fleet.nodes.filter((n) => n.up).map((n) => n.name) : [];
  fill($("stateful-table").tBodies[0], rows.map((r) => {
    const ck = r.checkpoint || {};
    const sel = el("select", { class: "migrate-to", onchange: (e) => { S.moveTo[r.task_id] = e.target.value; } },
      ...nodes.filter((n) => n !== r.node).map((n) => el("option", { value: n }, n)));
    if (S.moveTo[r.task_id] && nodes.includes(S.moveTo[r.task_id])) sel.value = S.moveTo[r.task_id];
    const go = el("button", { type: "button", class: "migrate", onclick: async () => {
      $("migrate-result").textContent = `moving ${r.task_id} to ${sel.value}…`;
      const ans = await api("POST", `/console/api/v1/tasks/${encodeURIComponent(r.task_id)}/migrate`, { to: sel.value });
      $("migrate-result").replaceChildren(ans.ok ? `moved ${r.task_id} to ${sel.value}` : problemsOf(ans));
    } }, "migrate");
    return el("tr", { "data-task": r.task_id }, el("td", {}, r.task_id), el("td", { class: "node" }, r.node),
      el("td", {}, ck.age_s !== undefined ? ck.age_s + " s" : "none yet"), el("td", {}, ck.seq ?? "-"),
      el("td", { class: "size" }, fmtB(ck.size)), el("td", {}, sel, go));
  }));
}

// --- sensors -----------------------------------------------------------------------------------
function chart(s) {
  const pts = s.points; const w = 220, h = 60;
  const g = svg("svg", { class: "chart", width: String(w), height: String(h + 16) });
  if (pts.length > 1) {
    const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
    const vs = pts.map((p) => p[1]), lo = Math.min(...vs), hi = Math.max(...vs), span = hi - lo || 1;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${(((p[0] - t0) / (t1 - t0 || 1)) * (w - 4) + 2).toFixed(1)},${(h - 2 - ((p[1] - lo) / span) * (h - 4)).toFixed(1)}`).join("");
    g.append(svg("path", { d, class: "line" }));
    g.append(svg("text", { x: 2, y: h + 13 }, `${pts[pts.length - 1][1]} ${s.unit} (${lo.toFixed(1)}–${hi.toFixed(1)})`));
  }
  return el("figure", { class: "sensor", "data-sensor": `${s.node}/${s.location}/${s.type}` }, el("figcaption", {}, s.type), g);
}
function renderSensors(series) {
  const groups = {};
  for (const s of series) (groups[`${s.node} · ${s.location}`] ||= []).push(s);
  $("sensors").replaceChildren(...(series.length ? Object.entries(groups).map(([k, v]) =>
    el("div", { class: "room" }, el("h3", {}, k), el("div", { class: "charts" }, ...v.map(chart))))
    : [el("p", { class: "hint" }, "no readings yet from the sensors your tenant may read (the nodes declare them in devices.yaml)")]));
}

// --- placement ---------------------------------------------------------------------------------
function renderPlacementChoices() {
  const sel = $("placement-task"), cur = sel.value;
  const tasks = S.tasks.slice(0, 100);
  sel.replaceChildren(...tasks.map((t) => el("option", { value: t.task_id }, `${t.task_id} → ${t.node}`)));
  if (cur && tasks.some((t) => t.task_id === cur)) sel.value = cur;
  renderPlacement();
}
function renderPlacement() {
  const t = S.tasks.find((x) => x.task_id === $("placement-task").value);
  const box = $("placement");
  if (!t) { box.replaceChildren(el("p", { class: "hint" }, "no tasks yet")); return; }
  const kids = [el("p", { class: "why" }, `${t.task_id} went to ${t.node} (${t.where}): ${t.placement || "named by the submitter"}`)];
  const d = t.decision;
  if (d && typeof d === "object") {
    const cands = d.candidates || [];
    if (cands.length) {
      const keys = [...new Set(cands.flatMap((c) => Object.keys(c)))].slice(0, 8);
      kids.push(el("table", { class: "decision" }, el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", {}, k)))),
        el("tbody", {}, ...cands.map((c) => el("tr", {}, ...keys.map((k) => el("td", {}, short(typeof c[k] === "number" ? +c[k].toFixed(4) : c[k], 60))))))));
    }
    const rej = d.rejected || {};
    const one = (r) => (r && typeof r === "object" && r.target ? `${r.target}: ${r.reason}` : short(r, 200));
    const rejRows = Array.isArray(rej) ? rej.map(one) : Object.entries(rej).map(([k, v]) => `${k}: ${short(v, 200)}`);
    if (rejRows.length) kids.push(el("h4", {}, "rejected"), el("ul", {}, ...rejRows.map((r) => el("li", {}, r))));
    kids.push(el("details", {}, el("summary", {}, "the stored decision"), el("pre", {}, JSON.stringify(d, null, 1))));
  }
  box.replaceChildren(...kids);
}

// --- devices -----------------------------------------------------------------------------------
async function command(d, cmd) {
  $("command-result").textContent = `${d.node}/${d.device}: ${cmd}…`;
  const ans = await api("POST", `/console/api/v1/devices/${encodeURIComponent(d.node)}/${encodeURIComponent(d.device)}/commands`, { command: cmd, args: {}, source: "console" });
  $("command-result").replaceChildren(ans.ok ? `${d.node}/${d.device} ${cmd}: ${ans.data.outcome}${ans.data.detail ? " (" + ans.data.detail + ")" : ""}` : problemsOf(ans));
}
function renderDevices(dv) {
  S.devices = dv;
  if (dv.available && !dv.devices.length) dv = { ...dv, available: false, detail: "no devices your tenant may see: nodes declare them in devices.yaml" };
  if (!dv.available) { fill($("devices-table").tBodies[0], [el("tr", {}, el("td", { colspan: "7" }, dv.detail || "this controller has no device registry"))]); return; }
  const list = [...dv.devices].sort((a, b) => (a.kind === b.kind ? 0 : a.kind === "actuator" ? -1 : 1));
  fill($("devices-table").tBodies[0], list.map((d) => el("tr", { "data-device": `${d.node}/${d.device}`, class: d.kind },
    el("td", {}, `${d.node}/${d.device}`), el("td", {}, d.kind), el("td", {}, d.location), el("td", {}, `${d.type}${d.unit ? " (" + d.unit + ")" : ""}`),
    el("td", { class: "state" }, d.state ? short(d.state, 80) : "-"), el("td", {}, fmtT(d.state_at)),
    el("td", {}, ...(d.kind === "actuator" ? (d.commands || []).map((c) => el("button", { type: "button", "data-command": c, disabled: d.may_command ? null : "disabled",
      title: d.may_command ? "" : "your tenant may not command this device", onclick: () => command(d, c) }, c)) : [])))));
  fill($("audit-table").tBodies[0], dv.audit.map((a) => el("tr", { class: "o-" + a.outcome },
    el("td", {}, fmtT(a.at)), el("td", {}, a.tenant), el("td", {}, a.source), el("td", {}, `${a.node}/${a.device}`),
    el("td", {}, a.command + (a.args && Object.keys(a.args).length ? " " + short(a.args, 40) : "")), el("td", {}, a.outcome), el("td", {}, short(a.detail || "", 80)))));
}

// --- submit ------------------------------------------------------------------------------------
function renderSubmitted() {
  const s = S.submitted; if (!s || !s.task_id) return;
  const t = S.tasks.find((x) => x.task_id === s.task_id); if (!t) return;
  const out = $("submit-result");
  out.setAttribute("data-status", t.status);
  const kids = [el("p", {}, `task ${t.task_id} on ${t.node}: `, el("b", { class: "status" }, t.status))];
  if (t.status === "done") kids.push(el("pre", { class: "task-result" }, JSON.stringify(t.result, null, 1)));
  if (t.status === "failed") kids.push(el("pre", { class: "task-error" }, `${t.error_kind}: ${t.error}`));
  out.replaceChildren(...kids);
}
async function submit() {
  const out = $("submit-result");
  out.removeAttribute("data-status");
  out.textContent = "submitting…";
  const kind = $("submit-kind").value;
  const ans = await api("POST", "/console/submit", { kind, text: $("submit-text").value, node: $("submit-node").value.trim() || null, where: $("submit-where").value });
  if (!ans.ok) { S.submitted = null; out.replaceChildren(problemsOf(ans)); return; }
  if (kind === "task") { S.submitted = ans.data; out.replaceChildren(el("p", {}, `task ${ans.data.task_id} accepted on ${ans.data.node}: ${ans.data.placement}`)); renderSubmitted(); }
  else { S.submitted = null; out.replaceChildren(el("p", {}, `pipeline ${ans.data.pipeline} version ${ans.data.version} deployed; ${(ans.data.runs || []).length} run(s) started`)); }
}

// --- wiring ------------------------------------------------------------------------------------
function show() {
  const view = (location.hash || "#fleet").slice(1);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.view === view);
}
function connect() {
  const es = new EventSource("/console/events");
  const on = (name, fn) => es.addEventListener(name, (e) => {
    fn(JSON.parse(e.data));
    document.body.setAttribute("data-seen-" + name, String(Date.now()));  // tests wait on it
  });
  on("hello", () => { $("live").textContent = "live"; $("live").className = "live on"; });
  on("fleet", renderFleet); on("tasks", renderTasks); on("summary", renderSummary);
  on("pipelines", renderPipelines); on("stateful", renderStateful); on("sensors", renderSensors);
  on("devices", renderDevices);
  on("notice", (d) => { $("live").title = d.detail; });
  es.onerror = () => {
    const closed = es.readyState === EventSource.CLOSED;  // refused (e.g. the token was revoked)
    $("live").textContent = closed ? "disconnected: reload to sign in again" : "reconnecting";
    $("live").className = "live off";
  };
}
document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", show); show();
  $("task-status").addEventListener("change", () => renderTasks(S.tasks));
  $("task-node").addEventListener("change", () => renderTasks(S.tasks));
  $("placement-task").addEventListener("change", renderPlacement);
  $("submit-go").addEventListener("click", submit);
  connect();
});

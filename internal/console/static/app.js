// The qtasks console: a small single-page app over /api/v1. No framework
// and no build step: every text goes through textContent (never innerHTML),
// so nothing a task, a plugin or a patch carries can become markup.
"use strict";

const main = document.getElementById("main");
const POLL_MS = 2000;
let timer = null;
let renderSeq = 0; // a newer route wins over a slower older fetch

// ---------- helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike a style attribute
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

async function api(path) {
  const r = await fetch("/api/v1" + path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = body && body.error ? body.error : r.status + " " + r.statusText;
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return body;
}

async function post(path, body) {
  const r = await fetch("/api/v1" + path, {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body || {}),
  });
  let out = null;
  try { out = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(out && out.error ? out.error : r.status + " " + r.statusText);
  return out;
}

// actionBar is a reason field and the buttons of the actions allowed now.
function actionBar(buttons) {
  if (!buttons.length) return null;
  const reason = h("input", { id: "action-reason", placeholder: "reason (recorded in the log)", maxlength: "1024" });
  const msg = h("span", { class: "muted", id: "action-msg" });
  const bar = h("div", { class: "actions" }, reason,
    buttons.map(([id, label, path, cls]) => h("button", { id, class: cls || "", onclick: async (ev) => {
      ev.target.disabled = true;
      msg.textContent = "";
      try {
        await post(path, { reason: reason.value });
        route();
      } catch (e) {
        msg.textContent = e.message;
        msg.className = "error-text";
        ev.target.disabled = false;
      }
    } }, label)), msg);
  return bar;
}

function badge(status, prefix) {
  return h("span", { class: "badge " + (prefix || "s-") + status }, status);
}

// short shows a task id's end: ids are UUIDv7, whose first digits are a
// timestamp that tasks created together share.
function short(id) { return id && id.length > 13 ? "…" + id.slice(-12) : id; }

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return d.toLocaleString(undefined, { hour12: false }) ;
}

function ago(t) {
  if (!t) return "";
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  if (s < 60) return Math.max(0, Math.round(s)) + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  if (s < 86400) return Math.round(s / 3600) + "h ago";
  return Math.round(s / 86400) + "d ago";
}

function dur(a, b) {
  if (!a || !b) return "";
  const ms = new Date(b) - new Date(a);
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return ms.toFixed(0) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function us(n) { return n < 1000 ? n + " µs" : (n / 1000).toFixed(n < 10000 ? 2 : 1) + " ms"; }

// json prints a value on one line when it is short, indented otherwise.
function json(v) {
  if (v === undefined || v === null) return "";
  const one = JSON.stringify(v);
  return one.length <= 72 ? one : JSON.stringify(v, null, 2);
}

function errorBox(e) { return h("div", { class: "error-box", role: "alert" }, e.message || String(e)); }

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function setLag(p, connected) {
  const el = document.getElementById("lag");
  if (connected === false) {
    el.className = "pill down";
    el.textContent = "NATS disconnected";
    return;
  }
  if (!p) return;
  el.className = "pill" + (p.lag > 0 ? " behind" : "");
  el.textContent = p.lag > 0 ? "projection " + p.lag + " events behind" : "up to date · seq " + p.applied;
}

function poll(fn) {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (document.hidden) return poll(fn);
    try { await fn(); } catch (_) { /* shown by the next full render */ }
    poll(fn);
  }, POLL_MS);
}

// ---------- tasks page

const STATUSES = ["new", "process", "success", "error", "cancel", "retry"];

async function tasksPage(params, seq) {
  const filters = {};
  for (const k of ["status", "name", "queue", "tag", "since"]) if (params.get(k)) filters[k] = params.get(k);
  const cursor = params.get("cursor") || "";

  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.querySelectorAll("[name]")) if (el.value) q.set(el.name, el.value);
    location.hash = "#/?" + q.toString();
  } },
    h("label", {}, "Status", h("select", { name: "status", id: "f-status" }, h("option", { value: "" }, "any"),
      STATUSES.map((st) => h("option", { value: st, selected: filters.status === st }, st)))),
    h("label", {}, "Task name", h("input", { name: "name", id: "f-name", value: filters.name || "", placeholder: "any" })),
    h("label", {}, "Queue", h("input", { name: "queue", id: "f-queue", value: filters.queue || "", placeholder: "any" })),
    h("label", {}, "Tag", h("input", { name: "tag", id: "f-tag", value: filters.tag || "", placeholder: "any" })),
    h("label", {}, "Created within", h("select", { name: "since", id: "f-since" }, h("option", { value: "" }, "all time"),
      ["15m", "1h", "6h", "24h", "168h"].map((d) => h("option", { value: d, selected: filters.since === d }, d)))),
    h("button", { type: "submit", id: "f-apply" }, "Filter"),
    Object.keys(filters).length ? h("a", { href: "#/", class: "muted" }, "clear") : null,
  );

  const cards = h("div", { class: "grid cards", id: "cards" });
  const chartTitle = h("h2", { id: "chart-title" });
  const chartSummary = h("span", { class: "muted", id: "chart-summary" });
  const chartWindows = h("span", { class: "chart-windows" }, Object.keys(CHART_WINDOWS).map((w) =>
    h("button", { type: "button", class: w === chartWindow ? "" : "ghost", "data-window": w, onclick: () => { chartWindow = w; route(); } }, w)));
  const chart = h("div", { class: "panel" }, h("div", { class: "chart-head" }, chartTitle, chartSummary, chartWindows), h("div", { id: "chart" }));
  const list = h("div", { class: "panel", id: "task-list" });
  main.replaceChildren(h("h1", {}, "Tasks"), cards, h("div", { style: "height:16px" }), chart, list);
  list.append(form);
  const table = h("div");
  list.append(table);

  const q = new URLSearchParams(filters);
  if (cursor) q.set("cursor", cursor);
  q.set("limit", "25");

  let chartAt = 0; // when the chart was last read
  async function refresh() {
    const cw = CHART_WINDOWS[chartWindow];
    // The chart reads every task that finished in its window: on a busy
    // system that is far more than a page of tasks, so it is read again
    // only every cw.refreshMs, not on every poll.
    const chartDue = Date.now() - chartAt >= cw.refreshMs;
    const [page, status, tp] = await Promise.all([
      api("/tasks?" + q.toString()), api("/status"), chartDue ? api(`/throughput?window=${chartWindow}&step=${cw.step}`) : null,
    ]);
    if (seq !== renderSeq) return;
    setLag(page.projection, status.connected);
    renderCards(cards, status.tasks || {});
    if (tp) {
      chartAt = Date.now();
      chartTitle.textContent = `Finished tasks per ${cw.per}, ${cw.label}`;
      chartSummary.textContent = throughputSummary(tp);
      document.getElementById("chart").replaceChildren(throughputChart(tp, cw));
    }
    table.replaceChildren(taskTable(page.tasks), pager(page.next, params));
  }
  try {
    await refresh();
  } catch (e) {
    table.replaceChildren(errorBox(e));
  }
  if (!cursor) poll(() => seq === renderSeq && refresh());
}

function renderCards(el, counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  el.replaceChildren(
    h("div", { class: "card" }, h("div", { class: "l" }, "all tasks"), h("div", { class: "n" }, total.toLocaleString())),
    ...STATUSES.map((st) => h("a", { class: "card", href: "#/?status=" + st, "data-status": st },
      h("div", { class: "l" }, st), h("div", { class: "n" }, (counts[st] || 0).toLocaleString()))),
  );
}

function taskTable(tasks) {
  if (!tasks.length) return h("div", { class: "empty" }, "No task matches. Submit one with qtasksd submit NAME, or POST /tasks/NAME.");
  return h("table", { id: "tasks" },
    h("thead", {}, h("tr", {}, ["Task", "Name", "Queue", "Status", "Attempt", "Created", "Run time", "Worker"].map((c) => h("th", {}, c)))),
    h("tbody", {}, tasks.map((t) => h("tr", { class: "clickable", "data-id": t.id, onclick: () => { location.hash = "#/task/" + encodeURIComponent(t.id); } },
      h("td", {}, h("a", { href: "#/task/" + encodeURIComponent(t.id), class: "mono", title: t.id }, short(t.id))),
      h("td", {}, t.name),
      h("td", {}, t.queue),
      h("td", {}, badge(t.status)),
      h("td", {}, String(t.attempt)),
      h("td", { title: fmtTime(t.created_at) }, ago(t.created_at)),
      h("td", {}, dur(t.started_at, t.finished_at)),
      h("td", { class: "muted" }, t.worker || ""),
    ))));
}

function pager(next, params) {
  const cur = params.get("cursor");
  const base = new URLSearchParams(params);
  base.delete("cursor");
  const newer = h("a", { href: "#/?" + base.toString() }, "← newest");
  const q = new URLSearchParams(base);
  if (next) q.set("cursor", next);
  return h("div", { class: "pager" },
    cur ? newer : h("span", {}, "live: refreshes every 2 s"),
    next ? h("a", { href: "#/?" + q.toString(), id: "next-page" }, "older →") : h("span", {}, "end of list"));
}

const CHART_COLORS = { success: "var(--ok)", error: "var(--err)", cancel: "var(--muted)", retry: "var(--warn)" };

// The throughput chart's windows, each with a step that keeps it to at
// most 96 bars, and how often the chart is read again while the page is
// open.
const CHART_WINDOWS = {
  "1h": { step: "1m", per: "minute", label: "last hour", refreshMs: 10000 },
  "6h": { step: "5m", per: "5 minutes", label: "last 6 hours", refreshMs: 60000 },
  "24h": { step: "15m", per: "15 minutes", label: "last 24 hours", refreshMs: 60000 },
};
let chartWindow = "1h"; // kept across pages and refreshes

// throughputSummary sums the chart up in words: how many tasks ended in
// the window and what share of them failed.
function throughputSummary(tp) {
  const sum = {};
  for (const b of tp.buckets || []) for (const [k, v] of Object.entries(b.finished)) sum[k] = (sum[k] || 0) + v;
  const total = Object.values(sum).reduce((a, c) => a + c, 0);
  if (!total) return "no task finished";
  const err = sum.error || 0;
  return `${total.toLocaleString()} finished · ${err.toLocaleString()} error (${(100 * err / total).toFixed(1)}%)` +
    (sum.cancel ? ` · ${sum.cancel.toLocaleString()} cancelled` : "");
}

function throughputChart(tp, cw) {
  const W = 900, H = 160, pad = 24;
  const buckets = tp.buckets || [];
  const totals = buckets.map((b) => Object.values(b.finished).reduce((a, c) => a + c, 0));
  const maxV = Math.max(1, ...totals);
  const bw = (W - pad) / Math.max(1, buckets.length);
  const svg = s("svg", { class: "chart", id: "throughput", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "finished tasks per " + cw.per });
  svg.append(s("line", { class: "axis", x1: pad, y1: H - 16, x2: W, y2: H - 16 }));
  svg.append(s("text", { x: 0, y: 10 }, String(maxV)));
  svg.append(s("text", { x: 0, y: H - 18 }, "0"));
  buckets.forEach((b, i) => {
    let y = H - 16;
    for (const st of ["success", "retry", "cancel", "error"]) {
      const v = b.finished[st] || 0;
      if (!v) continue;
      const bh = (v / maxV) * (H - 30);
      y -= bh;
      const r = s("rect", { x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh, "data-status": st, "data-n": v });
      r.style.fill = CHART_COLORS[st];
      r.append(s("title", {}, `${new Date(b.start).toLocaleTimeString()}: ${v} ${st}`));
      svg.append(r);
    }
  });
  if (buckets.length) {
    svg.append(s("text", { x: pad, y: H - 2 }, new Date(buckets[0].start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    svg.append(s("text", { x: W - 40, y: H - 2 }, "now"));
  }
  const legend = h("div", { class: "legend" }, Object.entries(CHART_COLORS).map(([k, c]) => h("span", {}, h("i", { style: "background:" + c }), k)));
  return h("div", {}, svg, legend);
}

// ---------- task page

const FINAL = new Set(["success", "error", "cancel"]);
let onlyCalls = false; // the timeline's filter, kept across refreshes

async function taskPage(id, seq) {
  main.replaceChildren(h("div", { class: "muted" }, "Loading task " + id + "…"));
  async function refresh() {
    const [tl, bl] = await Promise.all([
      api("/tasks/" + encodeURIComponent(id) + "/timeline"),
      api("/tasks/" + encodeURIComponent(id) + "/blame"),
    ]);
    if (seq !== renderSeq) return null;
    setLag(tl.projection);
    main.replaceChildren(renderTask(tl, bl.blame || []));
    return tl.task.status;
  }
  let status;
  try {
    status = await refresh();
  } catch (e) {
    main.replaceChildren(h("h1", {}, "Task ", h("span", { class: "mono" }, id)), errorBox(e),
      e.status === 404 ? h("p", { class: "muted" }, "The projection has no such task yet: it may be behind the log, or the id is wrong.") : null);
    poll(async () => { if (seq === renderSeq) await refresh(); });
    return;
  }
  // Polled even when the task is over: an operator may retry it, and the
  // projection shows an action a moment after it is taken.
  poll(async () => { if (seq === renderSeq) status = await refresh(); });
}

function renderTask(tl, blame) {
  const t = tl.task;
  const buttons = [];
  if (!FINAL.has(t.status)) buttons.push(["cancel", "Cancel task", "/tasks/" + encodeURIComponent(t.id) + "/cancel", "danger"]);
  if (t.status === "error" || t.status === "cancel") buttons.push(["retry", "Retry", "/tasks/" + encodeURIComponent(t.id) + "/retry"]);
  const head = h("div", { class: "head page-head" },
    h("h1", {}, t.name, " ", h("span", { class: "mono muted", id: "task-id" }, t.id)), actionBar(buttons));
  const record = h("div", { class: "panel" }, h("h2", {}, "Record"),
    h("dl", { class: "kv" },
      h("dt", {}, "Status"), h("dd", {}, h("span", { id: "task-status" }, badge(t.status)), t.reason ? h("span", { class: "muted" }, " — " + t.reason) : null),
      h("dt", {}, "Queue"), h("dd", {}, t.queue),
      h("dt", {}, "Attempt"), h("dd", {}, String(t.attempt), t.retries_left ? h("span", { class: "muted" }, ` (${t.retries_left} retries left)`) : null),
      h("dt", {}, "Priority"), h("dd", {}, String(t.priority)),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(t.created_at)),
      h("dt", {}, "Run time"), h("dd", {}, dur(t.started_at, t.finished_at) || "—"),
      h("dt", {}, "Worker"), h("dd", {}, t.worker || "—"),
      t.tags && t.tags.length ? [h("dt", {}, "Tags"), h("dd", {}, t.tags.join(", "))] : null,
      h("dt", {}, "Arguments"), h("dd", {}, h("pre", {}, json({ args: t.args_submitted || [], kw: t.kw_submitted || {} }))),
      t.kw_executed || t.args_executed ? [h("dt", {}, "As executed"), h("dd", {}, h("pre", {}, json({ args: t.args_executed || [], kw: t.kw_executed || {} })))] : null,
      t.result !== undefined ? [h("dt", {}, "Result"), h("dd", {}, h("pre", { id: "task-result" }, json(t.result)))] : null,
      t.error ? [h("dt", {}, "Error"), h("dd", {}, h("pre", {}, t.error))] : null,
      t.retry_parent ? [h("dt", {}, "Retry of"), h("dd", {}, h("a", { href: "#/task/" + encodeURIComponent(t.retry_parent) }, t.retry_parent))] : null,
      t.retry_child ? [h("dt", {}, "Retried as"), h("dd", {}, h("a", { href: "#/task/" + encodeURIComponent(t.retry_child) }, t.retry_child))] : null,
    ));
  const attempts = h("div", { class: "panel" }, h("h2", {}, "Attempts"),
    h("table", {}, h("thead", {}, h("tr", {}, ["#", "Status", "Runs", "Worker", "Queued", "Run time", "Reason"].map((c) => h("th", {}, c)))),
      h("tbody", {}, (t.attempts || []).map((a) => h("tr", {},
        h("td", {}, String(a.attempt)), h("td", {}, badge(a.status)), h("td", {}, String(a.runs)),
        h("td", { class: "muted" }, a.worker || ""), h("td", {}, fmtTime(a.queued_at)),
        h("td", {}, dur(a.started_at, a.finished_at)), h("td", { class: "muted" }, a.reason || a.error || ""))))));
  const blameBox = h("div", { class: "panel" }, h("h2", {}, "Blame: who changed which field"),
    blame.length ? h("table", { id: "blame" }, h("thead", {}, h("tr", {}, ["Field", "Plugin", "Trigger", "Change"].map((c) => h("th", {}, c)))),
      h("tbody", {}, blame.map((b) => h("tr", {},
        h("td", { class: "mono" }, b.path), h("td", {}, b.plugin, b.version ? h("span", { class: "muted" }, " " + b.version) : null),
        h("td", { class: "mono muted" }, b.trigger), h("td", { class: "mono" }, b.op + (b.value !== undefined ? " " + JSON.stringify(b.value) : "")))))) :
      h("div", { class: "empty" }, "No plugin changed this task."));
  const start = tl.entries.length ? new Date(tl.entries[0].time) : null;
  const withCalls = tl.entries.filter((e) => (e.calls || []).length || e.failed).length;
  const items = tl.entries.map((e) => [e.seq, timelineEntry(e, start)])
    .concat((tl.actions || []).map((a) => [a.seq, actionEntry(a)]))
    .sort((x, y) => x[0] - y[0]).map((x) => x[1]);
  const list = h("ol", { class: "timeline", id: "timeline" }, items);
  const only = h("input", { type: "checkbox", id: "only-calls", checked: onlyCalls, onchange: () => {
    onlyCalls = only.checked;
    list.classList.toggle("only-calls", onlyCalls);
  } });
  list.classList.toggle("only-calls", onlyCalls);
  const timeline = h("div", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, `Timeline: ${tl.entries.length} trigger firings, ${withCalls} with plugin calls`),
      h("label", { class: "check" }, only, "only firings with plugin calls")),
    list);
  return h("div", {}, head, h("div", { class: "grid two" }, record, h("div", {}, blameBox, attempts)), timeline);
}

function timelineEntry(e, start) {
  const calls = e.calls || [];
  const off = start && e.time ? "+" + dur(start, e.time).replace("<1 ms", "0 ms") : "";
  return h("li", { class: (calls.length ? "has-calls " : "") + (e.failed ? "failed" : ""), "data-trigger": e.trigger },
    h("div", { class: "head" }, h("span", { class: "trig" }, e.trigger), h("span", { class: "muted" }, e.component),
      h("span", { class: "muted" }, `attempt ${e.attempt}` + (e.run ? `, run ${e.run}` : "")), h("span", { class: "muted" }, off),
      h("span", { class: "muted mono", title: e.index ? "stream sequence, index in its phase message" : "stream sequence" }, "#" + e.seq + (e.index ? "." + e.index : ""))),
    e.failed ? h("div", { class: "error-box" }, e.failed) : null,
    calls.map(callBox));
}

function actionEntry(a) {
  return h("li", { class: "operator", "data-action": a.action },
    h("div", { class: "head" }, h("span", { class: "trig" }, (a.action === "duplicate" || a.action === "conflict" ? "submission: " : "operator: ") + a.action), h("span", {}, "by " + a.by),
      h("span", { class: "muted" }, `attempt ${a.attempt}`), h("span", { class: "muted" }, fmtTime(a.time)),
      h("span", { class: "muted mono", title: "stream sequence" }, "#" + a.seq)),
    a.reason ? h("div", { class: "muted" }, "“" + a.reason + "”") : null);
}

function callBox(c) {
  const changes = c.changes || [];
  return h("div", { class: "call", "data-plugin": c.plugin },
    h("div", { class: "head" }, h("strong", {}, c.plugin), c.version ? h("span", { class: "muted" }, c.version) : null,
      badge(c.outcome, "o-"), h("span", { class: "muted" }, us(c.latency_us)), c.policy ? h("span", { class: "muted" }, "policy " + c.policy) : null),
    c.reason ? h("div", { class: "muted" }, c.reason) : null,
    changes.length ? h("div", { class: "diff" }, changes.map((d) => h("div", { class: d.op },
      (d.op === "add" ? "+ " : d.op === "remove" ? "− " : "~ ") + d.path + ": " +
      (d.op === "replace" ? JSON.stringify(d.old) + " → " + JSON.stringify(d.new) : JSON.stringify(d.op === "remove" ? d.old : d.new))))) : null);
}

// ---------- plugins page

async function pluginsPage(seq) {
  main.replaceChildren(h("h1", {}, "Plugins"), h("div", { class: "muted" }, "Loading…"));
  async function refresh() {
    const [pl, sh] = await Promise.all([api("/plugins"), api("/shadows")]);
    if (seq !== renderSeq) return;
    const shadowsOf = {};
    for (const x of sh.shadows) (shadowsOf[x.shadow_of] = shadowsOf[x.shadow_of] || []).push(x);
    const rows = pl.plugins.map((p) => {
      const st = p.stats[0];
      const shadows = shadowsOf[p.name] || [];
      return h("tr", { "data-plugin": p.name },
        h("td", {}, h("strong", {}, p.name), h("div", { class: "muted" }, p.version),
          shadows.map((x) => h("div", { class: "muted" }, "shadowed by " + x.name + ": " + divergenceText(x.divergence)))),
        h("td", {}, p.mode, p.shadow_of ? h("div", { class: "muted" }, "shadow of " + p.shadow_of) : null),
        h("td", { class: "mono" }, p.triggers && p.triggers.length ? p.triggers.join("\n") : "all (global)"),
        h("td", {}, String(p.order)), h("td", {}, (p.timeout_ms || 5000) + " ms"), h("td", {}, p.policy || "fail"),
        h("td", {}, st ? outcomeBar(st) : h("span", { class: "muted" }, "no recent call")),
        h("td", {}, st ? `${us(st.p50_us)} / ${us(st.p95_us)} / ${us(st.p99_us)}` : ""));
    });
    const table = pl.plugins.length ? h("table", { id: "plugins" },
      h("thead", {}, h("tr", {}, ["Plugin", "Mode", "Triggers", "Order", "Timeout", "Policy", "Recent outcomes", "p50 / p95 / p99"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)) : h("div", { class: "empty" }, "No plugin is registered. Run one (see README: plugins) and it appears here.");
    const versions = h("table", {}, h("thead", {}, h("tr", {}, ["Plugin", "Version", "Calls", "Outcomes", "p50 / p99"].map((c) => h("th", {}, c)))),
      h("tbody", {}, pl.plugins.flatMap((p) => p.stats).concat(pl.unregistered).map((st) => h("tr", {},
        h("td", {}, st.plugin + (st.shadow ? " (shadow)" : "")), h("td", {}, st.version), h("td", {}, String(st.calls)),
        h("td", {}, Object.entries(st.outcomes).map(([k, v]) => h("span", { style: "margin-right:6px" }, badge(k, "o-"), " " + v))),
        h("td", {}, `${us(st.p50_us)} / ${us(st.p99_us)}`)))));
    main.replaceChildren(h("h1", {}, "Plugins"), h("div", { class: "panel" }, h("h2", {}, "Registry"), table),
      h("div", { class: "panel" }, h("h2", {}, "Shadows: how often a candidate's patch differs from the live plugin's"), shadowTable(sh)),
      h("div", { class: "panel" }, h("h2", {}, `Calls by version (newest ${pl.window.toLocaleString()} calls)`), versions));
  }
  try { await refresh(); } catch (e) { main.append(errorBox(e)); }
  poll(() => seq === renderSeq && refresh());
}

// divergenceText says how often a shadow's answers differed from the live
// plugin's: a different patch, an error or a timeout where the live plugin
// answered.
function divergenceText(d) {
  if (!d.compared) return d.calls ? `${d.calls} calls, none beside a live call` : "no recent call";
  const n = d.different + d.errors + d.timeouts;
  return `${n} of ${d.compared} differ (${(100 * d.rate).toFixed(1)}%)`;
}

function shadowTable(sh) {
  if (!sh.shadows.length) return h("div", { class: "empty" }, "No shadow plugin is registered. A shadow (mode shadow, shadow_of a live plugin) is called beside the live plugin; its patches are recorded, never applied.");
  return h("table", { id: "shadows" },
    h("thead", {}, h("tr", {}, ["Live plugin", "Shadow", "Calls", "Outcomes", "p50 / p95 / p99", "Identical", "Different", "Errors", "Timeouts", "Divergence"].map((c) => h("th", {}, c)))),
    h("tbody", {}, sh.shadows.slice().sort((a, b) => a.shadow_of.localeCompare(b.shadow_of) || a.name.localeCompare(b.name)).map((x) => {
      const st = x.stats[0], d = x.divergence;
      const diverged = d.different + d.errors + d.timeouts;
      return h("tr", { "data-shadow": x.name, "data-of": x.shadow_of },
        h("td", {}, h("strong", {}, x.shadow_of)),
        h("td", {}, x.name, h("div", { class: "muted" }, x.version)),
        h("td", {}, String(d.calls)),
        h("td", {}, st ? Object.entries(st.outcomes).map(([k, v]) => h("span", { style: "margin-right:6px" }, badge(k, "o-"), " " + v)) : h("span", { class: "muted" }, "no recent call")),
        h("td", {}, st ? `${us(st.p50_us)} / ${us(st.p95_us)} / ${us(st.p99_us)}` : ""),
        h("td", {}, String(d.identical)), h("td", {}, String(d.different)), h("td", {}, String(d.errors)), h("td", {}, String(d.timeouts)),
        h("td", { class: "divergence" }, d.compared ? h("div", { class: "bar" },
          h("span", { class: "applied", style: `width:${(100 * d.identical / d.compared).toFixed(1)}%`, title: `identical: ${d.identical}` }),
          h("span", { class: "failed", style: `width:${(100 * diverged / d.compared).toFixed(1)}%`, title: `differ: ${diverged}` })) : null,
          h("div", { class: diverged ? "error-text" : "muted" }, divergenceText(d))));
    })));
}

function outcomeBar(st) {
  const o = st.outcomes, n = st.calls || 1;
  const failed = (o.rejected || 0) + (o.timeout || 0) + (o.error || 0);
  const part = (cls, v) => v ? h("span", { class: cls, style: `width:${(100 * v / n).toFixed(1)}%`, title: `${cls}: ${v}` }) : null;
  const bar = h("div", { class: "bar" }, part("applied", o.applied || 0), part("nochange", o.nochange || 0), part("shadow", o.shadow || 0), part("failed", failed));
  return h("div", {}, bar, h("div", { class: "muted" }, `${st.calls} calls, ${failed} failed`));
}

// ---------- queues page

async function queuesPage(seq) {
  main.replaceChildren(h("h1", {}, "Queues"), h("div", { class: "muted" }, "Loading…"));
  async function refresh() {
    const q = await api("/queues");
    if (seq !== renderSeq) return;
    main.replaceChildren(h("h1", {}, "Queues"), h("div", { class: "panel" },
      q.queues.length ? h("table", { id: "queues" }, h("thead", {}, h("tr", {}, ["Queue", "State", "Queued", "Running", "Redelivered", "Idle worker pulls", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, q.queues.map((x) => h("tr", { "data-queue": x.name }, h("td", {}, h("a", { href: "#/?queue=" + encodeURIComponent(x.name) }, x.name)),
          h("td", {}, x.paused ? h("span", { title: `by ${x.paused.by}${x.paused.reason ? ": " + x.paused.reason : ""}` }, badge("paused", "q-")) : badge("running", "q-")),
          h("td", {}, String(x.queued)), h("td", {}, String(x.running)), h("td", {}, String(x.redelivered)), h("td", {}, String(x.waiting)),
          h("td", {}, queueButton(x)))))) :
        h("div", { class: "empty" }, "No worker has started on any queue yet.")));
  }
  try { await refresh(); } catch (e) { main.append(errorBox(e)); }
  poll(() => seq === renderSeq && refresh());
}

function queueButton(x) {
  const action = x.paused ? "resume" : "pause";
  return h("button", { class: x.paused ? "" : "ghost", "data-action": action, onclick: async (ev) => {
    ev.target.disabled = true;
    try {
      await post("/queues/" + encodeURIComponent(x.name) + "/" + action, { reason: "from the console" });
      route();
    } catch (e) {
      ev.target.disabled = false;
      ev.target.title = e.message;
      ev.target.textContent = "failed: " + e.message;
    }
  } }, x.paused ? "Resume" : "Pause");
}

// ---------- problems page

async function problemsPage(params, seq) {
  const tab = params.get("tab") === "dead" ? "dead" : "rejected";
  main.replaceChildren(h("h1", {}, "Problems"),
    h("div", { class: "tabs" }, h("a", { href: "#/problems", class: tab === "rejected" ? "active" : "" }, "Rejected events"),
      h("a", { href: "#/problems?tab=dead", class: tab === "dead" ? "active" : "" }, "Dead letters")));
  const box = h("div", { class: "panel" });
  main.append(box);
  try {
    if (tab === "rejected") {
      const r = await api("/rejected?limit=200");
      if (seq !== renderSeq) return;
      box.replaceChildren(r.rejected.length ? h("table", { id: "rejected" }, h("thead", {}, h("tr", {}, ["Seq", "Subject", "Type", "Reason"].map((c) => h("th", {}, c)))),
        h("tbody", {}, r.rejected.map((x) => h("tr", { "data-seq": x.seq }, h("td", { class: "mono" }, String(x.seq)), h("td", { class: "mono" }, x.subject),
          h("td", { class: "mono" }, x.type || ""), h("td", {}, x.reason))))) : h("div", { class: "empty" }, "Every message in the log is a valid event."));
    } else {
      const d = await api("/deadletters?limit=200");
      if (seq !== renderSeq) return;
      box.replaceChildren(d.dead_letters.length ? h("table", { id: "dead" }, h("thead", {}, h("tr", {}, ["Seq", "Plugin", "Points at", "Deliveries", "Reason", "When"].map((c) => h("th", {}, c)))),
        h("tbody", {}, d.dead_letters.map((x) => h("tr", {}, h("td", { class: "mono" }, String(x.seq)), h("td", {}, x.plugin),
          h("td", { class: "mono" }, `${x.stream} #${x.sequence}`), h("td", {}, String(x.deliveries)), h("td", {}, x.reason), h("td", {}, ago(x.time)))))) :
        h("div", { class: "empty" }, "No dead letters."));
    }
  } catch (e) { box.replaceChildren(errorBox(e)); }
}

// ---------- routing and theme

function route() {
  clearTimeout(timer);
  const seq = ++renderSeq;
  const { parts, params } = parseHash();
  const page = parts[0] || "tasks";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === (page === "task" ? "tasks" : page)));
  switch (page) {
    case "task": document.title = "Task " + parts[1] + " · qtasks"; return taskPage(parts[1] || "", seq);
    case "plugins": document.title = "Plugins · qtasks"; return pluginsPage(seq);
    case "queues": document.title = "Queues · qtasks"; return queuesPage(seq);
    case "problems": document.title = "Problems · qtasks"; return problemsPage(params, seq);
    default: document.title = "Tasks · qtasks"; return tasksPage(params, seq);
  }
}

function applyTheme(t) {
  document.documentElement.dataset.theme = t;
  try { localStorage.setItem("qtasks-theme", t); } catch (_) { /* private mode */ }
}
let saved = null;
try { saved = localStorage.getItem("qtasks-theme"); } catch (_) { /* private mode */ }
applyTheme(saved || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
document.getElementById("theme").addEventListener("click", () =>
  applyTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));

window.addEventListener("hashchange", route);
route();

// The inspector page: the nodes this node sees through the database,
// updated every second over the node's own stream (/inspect/v1/events,
// read with livepg.js), and a tail of any selector over /v1/events.
// Everything it shows comes from the network and is written as text, never
// as HTML.

import { subscribe } from "../livepg.js";

// Bounds of the tail.
const TAIL_RATE = 20; // events shown per second at most; the rest are counted
const TAIL_KEEP = 200; // rows kept
const TAIL_CUT = 1000; // characters of an event's data shown
const TOPICS_SHOWN = 20;

// The token: the page's ?token= (a form on the 401 page sets it), else the
// livepg_token cookie, which the browser sends by itself.
const token = new URLSearchParams(location.search).get("token") || undefined;
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v; else if (k === "title") e.title = v; else e.dataset[k] = v;
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}
function badge(text, kind, title) { return el("span", { class: "badge " + kind, title: title || "" }, text); }
function fmtNum(n) { return n == null ? "–" : Number(n).toLocaleString("en"); }
function fmtSecs(s) {
  if (s == null) return "–";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 120) return (Math.round(s * 10) / 10) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function ago(iso) { return iso ? fmtSecs((Date.now() - Date.parse(iso)) / 1000) + " ago" : "–"; }

function lagCell(lag) {
  if (!lag || !lag.events) return el("td", { class: "num" }, "no events");
  const q = (v) => (v == null ? "> 60 s" : "≤ " + fmtSecs(v));
  return el("td", { class: "num" }, "p50 " + q(lag.p50_seconds), el("br"), "p99 " + q(lag.p99_seconds),
    el("br"), el("span", { class: "small" }, fmtNum(lag.events) + " events"));
}

function stateCell(n, s) {
  const td = el("td");
  if (n.stale) td.append(badge("stale", "bad", "no beat for " + fmtSecs(n.age_seconds)), " ", el("span", { class: "small" }, "seen " + fmtSecs(n.age_seconds) + " ago"));
  else if (s.ready) td.append(badge("not ready", "warn", s.ready), el("br"), el("span", { class: "small" }, s.ready.slice(0, 200)));
  else td.append(badge("ready", "ok"));
  td.append(el("br"), el("span", { class: "small" }, "up " + ago(n.started_at).replace(" ago", "")));
  return td;
}

function topicsCell(s) {
  const td = el("td");
  const topics = (s.topics || []).slice(0, TOPICS_SHOWN);
  const ul = el("ul", { class: "topics" });
  for (const t of topics) ul.append(el("li", { selector: t.selector }, t.selector + " ", el("span", { class: "small" }, "(" + fmtNum(t.streams) + ")")));
  td.append(ul);
  if (s.topics_distinct > topics.length) td.append(el("span", { class: "small" }, "… " + fmtNum(s.topics_distinct) + " distinct in all"));
  if (!topics.length) td.append(el("span", { class: "small" }, "none"));
  return td;
}

function listenerCell(l) {
  const td = el("td");
  if (!l) return td;
  td.append(l.connected ? badge("connected", "ok") : badge("down", "bad"), " ",
    l.wiring_ok ? badge("wiring ok", "ok", "the listener heard this node's latest probe") : badge("wiring?", "bad", "the listener has not heard this node's latest probe"),
    el("br"), el("span", { class: "small" }, fmtNum(l.reconnects) + " reconnects, " + fmtNum(l.notifications) + " notifications"));
  return td;
}

// logFacts is the event log as the database has it (the same for every
// node), from the serving node's figures.
function logFacts(g) {
  const p = $("log");
  if (!g) return;
  if (g.error) { p.replaceChildren(badge("unreadable", "bad"), " ", g.error); return; }
  p.replaceChildren(
    "head ", el("strong", null, fmtNum(g.head)), " · pruned through ", fmtNum(g.pruned_through),
    " · oldest kept ", g.oldest_seq ? fmtNum(g.oldest_seq) + ", committed " + ago(g.oldest_at) : "none",
    " · ", g.rows_estimate < 0 ? "≤ " + fmtNum(g.head - g.pruned_through) + " rows (not analyzed yet: the seq range)" : "≈ " + fmtNum(g.rows_estimate) + " rows",
    " · retention ", fmtSecs(g.retention_seconds), " · epoch ", el("code", null, g.epoch || "–"));
}

// nodeAtCell is how far the node has routed the log, against its head.
function nodeAtCell(g) {
  const td = el("td", { class: "num" });
  if (!g) return td;
  td.append(fmtNum(g.node_head));
  const behind = g.head - g.node_head;
  if (behind > 0) td.append(el("br"), el("span", { class: "small" }, fmtNum(behind) + " behind the head read with its beat"));
  return td;
}

function presenceCell(s) {
  const td = el("td");
  const ul = el("ul", { class: "topics" });
  for (const p of (s.presence || []).slice(0, TOPICS_SHOWN)) ul.append(el("li", null, p.topic + " ", el("span", { class: "small" }, "(" + fmtNum(p.members) + ")")));
  td.append(ul);
  return td;
}

function render(ins) {
  $("self").textContent = ins.node;
  $("updated").textContent = "updated " + new Date(ins.at).toLocaleTimeString();
  const regErr = $("registry-error");
  regErr.hidden = !ins.registry_error;
  regErr.textContent = ins.registry_error ? "node registry: " + ins.registry_error : "";
  const withPresence = ins.nodes.some((n) => n.stats && Array.isArray(n.stats.presence));
  for (const th of document.querySelectorAll("th.presence")) th.hidden = !withPresence;
  const self = ins.nodes.find((n) => n.self);
  if (self && self.stats) logFacts(self.stats.log);
  const rows = [];
  for (const n of ins.nodes) {
    try { rows.push(nodeRow(n, withPresence)); } catch (err) {
      // A row whose figures are not what this page knows (a node of
      // another version): shown as such, the others still are.
      rows.push(el("tr", { node: String(n.id) }, el("td", { class: "node" }, String(n.id)), el("td", null, badge("unreadable figures", "warn", String(err)))));
    }
  }
  $("nodes").tBodies[0].replaceChildren(...rows);
}

function nodeRow(n, withPresence) {
  const s = n.stats || {};
  const tr = el("tr", { class: (n.self ? "self " : "") + (n.stale ? "stale" : ""), node: n.id });
  tr.append(
    el("td", { class: "node" }, el("strong", null, n.id), n.self ? el("br") : null, n.self ? badge("this node", "ok") : null, el("br"),
      el("span", { class: "small" }, [n.address, n.region].filter(Boolean).join(" · ") || "–")),
    stateCell(n, s),
    el("td", { class: "num", streams: String(s.streams ?? "") }, fmtNum(s.streams), el("br"),
      el("span", { class: "small" }, fmtNum(s.streams_live) + " live, " + fmtNum(s.catchups_waiting) + " waiting")),
    topicsCell(s),
    el("td", { class: "num" }, fmtNum(s.events_per_second) + " read", el("br"), el("span", { class: "small" }, fmtNum(s.delivered_per_second) + " written"),
      el("br"), el("span", { class: "small" }, "over " + fmtSecs(s.window_seconds))),
    lagCell(s.lag),
    listenerCell(s.listener),
    el("td", { class: "num" }, s.notification_queue_usage == null ? "–" : (s.notification_queue_usage * 100).toFixed(2) + " %"),
    nodeAtCell(s.log),
  );
  if (withPresence) tr.append(presenceCell(s));
  return tr;
}

function setStatus(id, s) {
  const e = $(id);
  e.textContent = s;
  e.className = "status " + s;
}

async function api(path) {
  const res = await fetch(path, { headers: token ? { Authorization: "Bearer " + token } : {}, cache: "no-store" });
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.error) || res.status + " " + res.statusText);
  return body;
}

// The nodes: a first read, then the node's stream.
api("inspect/api/nodes").then(render, (err) => { $("registry-error").hidden = false; $("registry-error").textContent = String(err.message || err); });
const nodes = subscribe({ url: "inspect", topics: ["nodes"], token, onStatus: (s) => setStatus("status", s) });
nodes.on("nodes", (e) => render(e.data));

// The tail.
$("tail-rate").textContent = TAIL_RATE;
$("tail-keep").textContent = TAIL_KEEP;
$("tail-cut").textContent = TAIL_CUT;
let tail = null;
let shownThisSecond = 0;
let skipped = 0;
setInterval(() => {
  shownThisSecond = 0;
  $("tail-skipped").textContent = skipped ? fmtNum(skipped) + " events not shown (over the rate)." : "";
}, 1000);

function stopTail() {
  if (tail) tail.close();
  if (tail) setStatus("tail-status", "stopped");
  tail = null;
  $("tail-start").disabled = false;
  $("tail-stop").disabled = true;
}

function showEvent(e) {
  if (shownThisSecond >= TAIL_RATE) { skipped++; return; }
  shownThisSecond++;
  let data = JSON.stringify(e.data);
  if (data && data.length > TAIL_CUT) data = data.slice(0, TAIL_CUT) + "…";
  const body = $("tail").tBodies[0];
  body.prepend(el("tr", null, el("td", { class: "num" }, e.id || ""), el("td", null, e.type), el("td", null, e.topic || ""), el("td", { class: "data" }, data)));
  while (body.rows.length > TAIL_KEEP) body.deleteRow(-1);
}

$("tail-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  stopTail();
  const topic = $("tail-topic").value.trim();
  const err = $("tail-error");
  err.hidden = true;
  try {
    await api("inspect/api/tail?topic=" + encodeURIComponent(topic));
  } catch (e) {
    err.hidden = false;
    err.textContent = String(e.message || e);
    return;
  }
  skipped = 0;
  tail = subscribe({ url: ".", topics: [topic], token, onStatus: (s) => setStatus("tail-status", s) });
  const types = ["insert", "update", "delete", "message", "livepg.omitted"];
  for (const t of $("tail-types").value.split(",")) if (t.trim() && types.length < 32) types.push(t.trim());
  for (const t of new Set(types)) tail.on(t, showEvent);
  tail.on("reset", () => showEvent({ type: "reset", topic: "", data: "the resume point is gone: the tail goes on from now" }));
  $("tail-start").disabled = true;
  $("tail-stop").disabled = false;
});
$("tail-stop").addEventListener("click", stopTail);

// livepg.js: the page side of livepg. An ES module with no dependencies and
// no build step, served by every node at /livepg.js.
//
//   import { subscribe } from "/livepg.js";
//   const { state, head } = await (await fetch("/api/thing")).json();
//   const sub = subscribe({
//     topics: ["things/42"],
//     from: head,                       // livepg.head() read with the state
//     reset: async () => (await load()).head, // refetch; return the new position
//     onStatus: (s) => (statusEl.textContent = s),
//   });
//   sub.on("update", (e) => apply(e.data));
//
// It opens the stream from the snapshot's position, so nothing committed
// between the read and the stream is missed or applied twice; it follows
// "reset" by asking the page for fresh state and continuing from its
// position; it lets the browser's EventSource retry dropped connections
// (which resume from the last id by themselves) and reconnects by itself,
// with backoff and jitter, from the last id, where a node answered with an
// error (EventSource gives up then); it fetches a fresh token through a
// callback before the current one expires and on "token-expired".
//
// Presence: with a presence option the page is a member of those topics
// while its stream is open (and a few seconds after, so that a reconnect,
// to any node, is no leave and join), and is told who else is there:
//
//   subscribe({ topics: ["boards/42"], presence: { topics: ["boards/42"],
//     meta: { color: "teal" }, onMembers: (topic, members, change) => show(members) } });

/** The statuses a page can show. */
export const STATUS = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
});

const BUILTIN = new Set(["reset", "token-expired"]);

/**
 * subscribe opens a stream of the events on the given topic selectors.
 * See livepg.d.ts for the options.
 */
export function subscribe(options) {
  const o = Object.assign({ url: "", from: null, minDelay: 500, maxDelay: 30000, refreshMargin: 30 }, options);
  const topics = [].concat(o.topics || []);
  if (topics.length === 0) throw new Error("livepg: subscribe needs at least one topic selector");
  const base = String(o.url).replace(/\/+$/, "");
  const handlers = new Map(); // type -> Set of functions; "*" gets every event
  let source = null;
  let lastId = o.from == null ? null : String(o.from);
  let status = null;
  let attempts = 0; // failed connections in a row
  let timer = null; // a pending reconnect
  let refreshTimer = null; // a pending token refresh
  let closed = false;
  let generation = 0; // bumps with each connection: late events of an old one are dropped
  const presence = o.presence ? Object.assign({ topics: [], meta: null, key: null }, o.presence) : null;
  const rosters = new Map(); // presence topic -> { at, members: Map id -> member }
  if (presence) {
    presence.topics = [].concat(presence.topics || []);
    presence.key = presence.key || presenceKey();
    for (const t of presence.topics) rosters.set(t, { at: -1, members: new Map() });
  }

  // applyPresence keeps each joined topic's members: a snapshot ("sync",
  // the first frames of every connection), then each join and leave after
  // the snapshot's position (those at or before it are in it already).
  function applyPresence(ev) {
    const roster = rosters.get(ev.topic);
    const d = ev.data || {};
    if (!roster) return;
    if (d.op === "sync") {
      roster.at = seqOf(d.at);
      roster.members = new Map((d.members || []).map((m) => [m.id, m]));
    } else if ((d.op === "join" || d.op === "leave") && seqOf(ev.id) > roster.at) {
      if (d.op === "join") roster.members.set(d.id, { id: d.id, sub: d.sub, meta: d.meta });
      else roster.members.delete(d.id);
    } else {
      return;
    }
    if (presence.onMembers) try { presence.onMembers(ev.topic, [...roster.members.values()], d); } catch (err) { report(err); }
  }

  function setStatus(s) {
    if (s === status) return;
    status = s;
    if (o.onStatus) try { o.onStatus(s); } catch (err) { report(err); }
  }
  function report(err) {
    if (o.onError) o.onError(err); else console.error("livepg:", err);
  }
  function offline() {
    return typeof navigator !== "undefined" && navigator.onLine === false;
  }

  function dispatch(type, ev) {
    for (const key of [type, "*"]) {
      const set = handlers.get(key);
      if (set) for (const fn of [...set]) try { fn(ev); } catch (err) { report(err); }
    }
  }

  function listen(es, gen, type) {
    es.addEventListener(type, (e) => {
      if (gen !== generation || closed) return;
      let body;
      try { body = JSON.parse(e.data); } catch (err) { return report(new Error("livepg: event " + e.lastEventId + " is not JSON")); }
      if (e.lastEventId) lastId = e.lastEventId;
      const ev = { type, id: e.lastEventId, topic: body.topic, data: body.data };
      if (type === "presence") applyPresence(ev);
      dispatch(type, ev);
    });
  }

  async function tokenNow() {
    if (!o.token) return undefined;
    const t = typeof o.token === "function" ? await o.token() : o.token;
    scheduleRefresh(t);
    return t;
  }

  // scheduleRefresh reconnects with a fresh token shortly before this one's
  // exp claim, if the token is a JWT the page can read and a callback gives
  // fresh ones.
  function scheduleRefresh(t) {
    clearTimeout(refreshTimer);
    if (typeof o.token !== "function") return;
    const exp = expiry(t);
    if (!exp) return;
    const lifetime = exp - Date.now();
    const wait = Math.max(1000, lifetime - Math.min(o.refreshMargin * 1000, lifetime / 5));
    refreshTimer = setTimeout(() => { if (!closed) connect(); }, Math.min(wait, 2 ** 31 - 1));
  }

  async function connect() {
    clearTimeout(timer);
    const gen = ++generation;
    let token;
    try {
      token = await tokenNow();
    } catch (err) {
      report(err);
      return retry(gen);
    }
    if (gen !== generation || closed) return;
    const q = new URLSearchParams();
    for (const t of topics) q.append("topic", t);
    if (lastId != null) q.set("lastEventId", lastId);
    if (token) q.set("token", token);
    if (presence) {
      for (const t of presence.topics) q.append("presence", t);
      q.set("presenceKey", presence.key);
      if (presence.meta != null) q.set("presenceMeta", JSON.stringify(presence.meta));
    }
    const es = new EventSource(base + "/v1/events?" + q, { withCredentials: !!o.withCredentials });
    if (source) source.close();
    source = es;
    es.onopen = () => {
      if (gen !== generation) return;
      attempts = 0;
      setStatus(STATUS.LIVE);
    };
    es.onerror = () => {
      if (gen !== generation || closed) return;
      if (es.readyState === EventSource.CLOSED) return retry(gen); // an error answer: EventSource gave up
      setStatus(offline() ? STATUS.OFFLINE : STATUS.RECONNECTING); // the browser retries from the last id
    };
    for (const type of handlers.keys()) if (type !== "*" && !BUILTIN.has(type)) listen(es, gen, type);
    for (const type of ["insert", "update", "delete", "message"]) if (!handlers.has(type)) listen(es, gen, type);
    if (presence && !handlers.has("presence")) listen(es, gen, "presence");
    es.addEventListener("reset", () => {
      if (gen !== generation || closed) return;
      es.close();
      generation++;
      dispatch("reset", { type: "reset" });
      resetState();
    });
    es.addEventListener("token-expired", () => {
      if (gen !== generation || closed) return;
      es.close();
      connect(); // a fresh token, from the last id
    });
  }

  async function resetState() {
    const gen = generation;
    setStatus(STATUS.CONNECTING);
    if (!o.reset) {
      lastId = null; // nothing to refetch: go on from the head
      return connect();
    }
    let position;
    try {
      position = await o.reset();
    } catch (err) {
      report(err);
      if (gen !== generation || closed) return;
      attempts++;
      timer = setTimeout(resetState, delay());
      return;
    }
    if (gen !== generation || closed) return;
    lastId = position == null ? null : String(position);
    connect();
  }

  function delay() {
    const d = Math.min(o.maxDelay, o.minDelay * 2 ** Math.min(attempts, 16));
    return d / 2 + Math.random() * (d / 2); // jitter: nodes back from a restart are not stampeded
  }

  function retry(gen) {
    if (gen !== generation || closed) return;
    if (source) source.close();
    setStatus(offline() ? STATUS.OFFLINE : STATUS.RECONNECTING);
    attempts++;
    clearTimeout(timer);
    timer = setTimeout(connect, delay());
  }

  function onOnline() {
    // Back online: try now rather than at the end of a backoff (not while a
    // reset is refetching: its stream opens when the state is in).
    if (!closed && (status === STATUS.OFFLINE || status === STATUS.RECONNECTING)) { attempts = 0; connect(); }
  }
  function onOffline() {
    if (!closed && status !== STATUS.LIVE) setStatus(STATUS.OFFLINE);
  }
  if (typeof window !== "undefined") {
    window.addEventListener("online", onOnline);
    window.addEventListener("offline", onOffline);
  }

  const sub = {
    /** The status: connecting, live, reconnecting or offline. */
    get status() { return status; },
    /** The id of the last event delivered: where the stream resumes. */
    get lastId() { return lastId; },
    /** members is a joined presence topic's members now: [{ id, sub, meta }]. */
    members(topic) {
      const r = rosters.get(topic);
      return r ? [...r.members.values()] : [];
    },
    /** on calls fn with each event of the type ("*" for all); it returns a function that stops it. */
    on(type, fn) {
      const fresh = !handlers.has(type);
      if (fresh) handlers.set(type, new Set());
      handlers.get(type).add(fn);
      if (fresh && source && type !== "*" && !BUILTIN.has(type) && !["insert", "update", "delete", "message"].includes(type) && !(presence && type === "presence")) listen(source, generation, type);
      return () => sub.off(type, fn);
    },
    off(type, fn) {
      const set = handlers.get(type);
      if (set) set.delete(fn);
    },
    /** close ends the stream and every timer; the subscription is done. */
    close() {
      if (closed) return;
      closed = true;
      generation++;
      clearTimeout(timer);
      clearTimeout(refreshTimer);
      if (source) source.close();
      source = null;
      if (typeof window !== "undefined") {
        window.removeEventListener("online", onOnline);
        window.removeEventListener("offline", onOffline);
      }
      setStatus(STATUS.OFFLINE);
    },
  };
  setStatus(STATUS.CONNECTING);
  connect();
  return sub;
}

// seqOf is the seq of an event id ('<seq>-<epoch>'), -1 for none.
function seqOf(id) {
  const n = parseInt(String(id || ""), 10);
  return Number.isFinite(n) ? n : -1;
}

// presenceKey is the page's presence key: kept in sessionStorage, so that a
// reload of the tab is the same member (no leave and join), else new.
function presenceKey() {
  const fresh = () => {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  };
  try {
    let k = sessionStorage.getItem("livepg.presenceKey");
    if (!k) sessionStorage.setItem("livepg.presenceKey", (k = fresh()));
    return k;
  } catch {
    return fresh();
  }
}

// expiry reads a JWT's exp claim (in ms), or 0 when it has none or is not a JWT.
function expiry(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4))).exp;
    return typeof exp === "number" ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

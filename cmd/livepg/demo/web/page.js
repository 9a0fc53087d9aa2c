// page.js: the demo pages' state, kept live with livepg.js. loadAndFollow
// fetches the state and the log position it reflects (read in one snapshot
// on the server) and hands both to livepg.js, which streams changes from
// exactly that position and asks for the state again on "reset". A state
// that cannot load because the server is away is retried; one the server
// refuses (not found, not allowed) is not: onState gets the error, with its
// HTTP status, to say so.
import { subscribe } from "/livepg.js";

const LABELS = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", offline: "offline" };

export function loadAndFollow({ stateURL, topic, onState, onEvent, statusEl, presence }) {
  let viewers = false; // the server lets this page join the topic's presence
  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = "status " + cls;
  }

  // load fetches the state and gives its position, retrying while the
  // server is away; it gives null when the server refuses for good.
  async function load() {
    for (;;) {
      let res, body;
      try {
        res = await fetch(stateURL, { headers: { Accept: "application/json" } });
        body = await res.json().catch(() => ({}));
      } catch (err) {
        setStatus("offline", "reconnecting"); // the server did not answer: it may be restarting
        onState(null, err);
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      if (!res.ok) {
        const err = new Error(body.error || res.statusText);
        err.status = res.status;
        onState(null, err);
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          // Not found, not allowed: asking again will not change the answer.
          setStatus(res.status === 404 ? "not found" : "unavailable", "gone");
          return null;
        }
        setStatus("offline", "reconnecting");
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      viewers = !!body.viewers;
      onState(body.state);
      return body.head;
    }
  }

  setStatus(LABELS.connecting, "");
  return load().then((head) => {
    if (head == null) return null;
    let gone = false; // the server refused the state for good: stop, and keep saying why
    const sub = subscribe({
      topics: [topic],
      from: head,
      reset: async () => {
        const h = await load();
        if (h == null) {
          gone = true;
          sub.close();
        }
        return h;
      },
      onStatus: (s) => gone || setStatus(LABELS[s], s === "offline" ? "reconnecting" : s),
      presence: presence && viewers ? Object.assign({ topics: [topic] }, presence) : undefined,
    });
    sub.on("*", (e) => onEvent(e.type, e));
    window.livepgSubscription = sub; // for the browser tests
    return sub;
  });
}

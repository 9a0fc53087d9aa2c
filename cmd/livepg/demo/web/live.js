// live.js: a page's state, kept live. loadAndFollow fetches the state and the
// log position it reflects (read in one snapshot on the server), then streams
// changes from exactly that position: nothing committed in between is missed
// or applied twice. On "reset" (the position fell out of the log's retention)
// it fetches the state again. A state that cannot load because the server is
// away is retried; one the server refuses (not found, not allowed) is not:
// onState gets the error, with its HTTP status, to say so.
"use strict";

function loadAndFollow({ stateURL, topic, onState, onEvent, statusEl }) {
  let source = null;
  let lastId = null;
  let retry = null;

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = "status " + cls;
  }

  async function load() {
    clearTimeout(retry);
    if (source) source.close();
    setStatus("connecting…", "");
    let res, body;
    try {
      res = await fetch(stateURL, { headers: { Accept: "application/json" } });
      body = await res.json().catch(() => ({}));
    } catch (err) {
      // The server did not answer: it may be restarting. Try again.
      setStatus("offline", "reconnecting");
      retry = setTimeout(load, 2000);
      onState(null, err);
      return;
    }
    if (!res.ok) {
      const err = new Error(body.error || res.statusText);
      err.status = res.status;
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
        // Not found, not allowed: asking again will not change the answer.
        setStatus(res.status === 404 ? "not found" : "unavailable", "gone");
      } else {
        setStatus("offline", "reconnecting");
        retry = setTimeout(load, 2000);
      }
      onState(null, err);
      return;
    }
    const snap = body;
    onState(snap.state);
    follow(snap.head);
  }

  function follow(from) {
    lastId = String(from);
    const url = "/v1/events?topic=" + encodeURIComponent(topic) + "&lastEventId=" + encodeURIComponent(lastId);
    source = new EventSource(url);
    source.onopen = () => setStatus("live", "live");
    source.onerror = () => {
      setStatus("reconnecting…", "reconnecting");
      // The browser retries by itself after a dropped connection, sending
      // Last-Event-ID. After an error answer it gives up: start again from
      // the last event seen.
      if (source.readyState === EventSource.CLOSED) {
        clearTimeout(retry);
        retry = setTimeout(() => follow(lastId), 2000);
      }
    };
    for (const type of ["insert", "update", "delete", "message"]) {
      source.addEventListener(type, (e) => {
        lastId = e.lastEventId;
        onEvent(type, JSON.parse(e.data));
      });
    }
    source.addEventListener("reset", load);
  }

  load();
  return { reload: load };
}

import { loadAndFollow } from "/static/page.js";

const list = document.getElementById("boards");
const errorEl = document.getElementById("error");
const boards = new Map();

function showError(msg) {
  errorEl.textContent = msg || "";
  errorEl.hidden = !msg;
}

function render() {
  const sorted = [...boards.values()].sort((a, b) => b.id - a.id);
  list.replaceChildren(...sorted.map((b) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "/boards/" + b.id;
    a.textContent = b.name;
    li.append(a);
    return li;
  }));
}

loadAndFollow({
  stateURL: "/api/boards",
  topic: "boards",
  statusEl: document.getElementById("status"),
  onState(state, err) {
    if (err) return showError("Could not load boards: " + err.message);
    showError("");
    boards.clear();
    for (const b of state) boards.set(b.id, b);
    render();
  },
  onEvent(type, { data }) {
    if (data.op === "delete") boards.delete(data.old.id);
    else if (data.new) boards.set(data.new.id, data.new);
    render();
  },
});

document.getElementById("new-board").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("board-name");
  let res;
  try {
    res = await fetch("/api/boards", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: input.value }),
    });
  } catch {
    return showError("Could not create the board: the server did not answer. Try again when it is back.");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) return showError("Could not create the board: " + (body.error || res.statusText));
  location.href = "/boards/" + body.id;
});

"use strict";

const boardId = Number(location.pathname.split("/")[2]);
const COLUMNS = ["todo", "doing", "done"];
const cards = new Map();    // card id -> card row
const elements = new Map(); // card id -> its <li>
const errorEl = document.getElementById("error");

function showError(msg) {
  errorEl.textContent = msg || "";
  errorEl.hidden = !msg;
}

async function api(method, path, body) {
  const res = await fetch("/api/boards/" + boardId + path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    showError(err.error || res.statusText);
    return false;
  }
  showError("");
  return true;
}

// The page never applies its own requests' answers: every change, its own
// or anyone's, arrives once through the stream and is applied there.
const changeCard = (id, change) => api("PATCH", "/cards/" + id, change);

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.title = title;
  b.setAttribute("aria-label", title);
  b.addEventListener("click", onClick);
  return b;
}

function fillCard(li, card) {
  li.dataset.id = card.id;
  li.dataset.text = card.text;
  li.dataset.col = card.col;
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = card.text;
  const actions = document.createElement("div");
  actions.className = "actions";
  const col = COLUMNS.indexOf(card.col);
  if (col > 0) actions.append(button("←", "Move to " + COLUMNS[col - 1], () => changeCard(card.id, { col: COLUMNS[col - 1] })));
  if (col < COLUMNS.length - 1) actions.append(button("→", "Move to " + COLUMNS[col + 1], () => changeCard(card.id, { col: COLUMNS[col + 1] })));
  actions.append(button("Edit", "Edit card", () => startEdit(li, card)));
  actions.append(button("Delete", "Delete card", () => api("DELETE", "/cards/" + card.id)));
  li.replaceChildren(text, actions);
}

function startEdit(li, card) {
  li.dataset.editing = "1";
  const input = document.createElement("input");
  input.value = card.text;
  input.maxLength = 500;
  input.setAttribute("aria-label", "Card text");
  const done = () => {
    delete li.dataset.editing;
    fillCard(li, cards.get(card.id) || card);
  };
  const save = async () => {
    if (input.value !== card.text && !(await changeCard(card.id, { text: input.value }))) return;
    done();
    li.querySelector("button")?.focus();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") save();
    if (e.key === "Escape") done();
  });
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(button("Save", "Save card", save), button("Cancel", "Cancel edit", done));
  li.replaceChildren(input, actions);
  input.focus();
}

// render brings the DOM in line with the cards, touching only what changed,
// so a card being edited or a focused button survives other people's edits.
function render() {
  for (const [id, li] of elements) {
    if (!cards.has(id)) {
      li.remove();
      elements.delete(id);
    }
  }
  for (const col of COLUMNS) {
    const ul = document.querySelector(`ul[data-col="${col}"]`);
    const wanted = [...cards.values()]
      .filter((c) => c.col === col)
      .sort((a, b) => a.position - b.position || a.id - b.id);
    wanted.forEach((card, i) => {
      let li = elements.get(card.id);
      if (!li) {
        li = document.createElement("li");
        li.className = "card";
        elements.set(card.id, li);
      }
      if (!li.dataset.editing && (li.dataset.text !== card.text || li.dataset.col !== card.col)) fillCard(li, card);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
  }
}

loadAndFollow({
  stateURL: "/api/boards/" + boardId,
  topic: "boards/" + boardId,
  statusEl: document.getElementById("status"),
  onState(state, err) {
    if (err) return showError("Could not load the board: " + err.message);
    showError("");
    document.getElementById("board-name").textContent = state.board.name;
    document.title = state.board.name + " · livepg";
    cards.clear();
    for (const c of state.cards) cards.set(c.id, c);
    render();
  },
  onEvent(type, { data }) {
    if (data.table !== "cards") return;
    if (data.op === "delete") cards.delete(data.old.id);
    else if (data.new.board_id === boardId) cards.set(data.new.id, data.new);
    else cards.delete(data.new.id); // moved to another board
    render();
  },
});

document.getElementById("new-card").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("card-text");
  // Clear at once, so typing the next card while this one is saved loses
  // nothing; on failure, put the text back if the field is still empty.
  const text = input.value;
  input.value = "";
  if (!(await api("POST", "/cards", { text, col: document.getElementById("card-col").value })) && !input.value) {
    input.value = text;
  }
});

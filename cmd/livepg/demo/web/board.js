import { loadAndFollow } from "/static/page.js";

const boardId = Number(location.pathname.split("/")[2]);
const COLUMNS = ["todo", "doing", "done"];
const MAX_TEXT = 500;       // characters, as the server counts them (trimmed)
const cards = new Map();    // card id -> card row
const elements = new Map(); // card id -> its <li>
const errorEl = document.getElementById("error");

function showError(msg) {
  errorEl.textContent = msg || "";
  errorEl.hidden = !msg;
}

// api sends a change and says whether it was made. On failure it shows what
// failed and why (the server's answer, or that it could not be reached); the
// caller keeps what the user typed.
async function api(what, method, path, body) {
  let res;
  try {
    res = await fetch("/api/boards/" + boardId + path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    showError(`Could not ${what}: the server did not answer. Nothing was changed; try again when it is back.`);
    return false;
  }
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    showError(`Could not ${what}: ${err.error || res.statusText}`);
    return false;
  }
  showError("");
  return true;
}

// The page never applies its own requests' answers: every change, its own
// or anyone's, arrives once through the stream and is applied there.
const changeCard = (what, id, change) => api(what, "PATCH", "/cards/" + id, change);

// textLength counts as the server does: characters, not UTF-16 units, of
// the trimmed text.
const textLength = (s) => [...s.trim()].length;

// sameText compares texts as a textarea holds them (line breaks as \n).
const sameText = (a, b) => a.replace(/\r\n?/g, "\n") === b.replace(/\r\n?/g, "\n");

// limit ties a text field to a counter and a submit button: past the limit
// the counter says by how much and the button is disabled; nothing is cut.
function limit(field, counter, submit) {
  const update = () => {
    const n = textLength(field.value);
    const over = n > MAX_TEXT;
    counter.textContent = over ? `${n} / ${MAX_TEXT}: ${n - MAX_TEXT} too many characters` : n ? `${n} / ${MAX_TEXT}` : "";
    counter.classList.toggle("over", over);
    field.setAttribute("aria-invalid", over ? "true" : "false");
    submit.disabled = over;
  };
  field.addEventListener("input", update);
  update();
  return () => textLength(field.value) <= MAX_TEXT;
}

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
  const move = (to) => changeCard("move the card", card.id, { col: to });
  if (col > 0) actions.append(button("←", "Move to " + COLUMNS[col - 1], () => move(COLUMNS[col - 1])));
  if (col < COLUMNS.length - 1) actions.append(button("→", "Move to " + COLUMNS[col + 1], () => move(COLUMNS[col + 1])));
  // The card as the page knows it when Edit is pressed, not when drawn.
  actions.append(button("Edit", "Edit card", () => startEdit(li, cards.get(card.id) || card)));
  actions.append(button("Delete", "Delete card", () => api("delete the card", "DELETE", "/cards/" + card.id)));
  li.replaceChildren(text, actions);
}

let editCount = 0;

// startEdit edits a card's text in a textarea, which keeps line breaks:
// Enter saves, Shift+Enter starts a new line, Escape cancels. A change to
// the card that arrives while it is edited (its own last save, which the
// stream brings after the save answered, or someone else's) replaces the
// text while it is still the text the editor opened with; once typed in,
// the typed text stays.
function startEdit(li, card) {
  li.dataset.editing = "1";
  const field = document.createElement("textarea");
  field.value = card.text;
  field.rows = Math.min(8, Math.max(2, card.text.split("\n").length));
  field.setAttribute("aria-label", "Card text");
  const counter = document.createElement("span");
  counter.className = "counter";
  counter.id = "edit-counter-" + ++editCount;
  field.setAttribute("aria-describedby", counter.id);
  // done ends editing, shows the card as it now is and gives the focus back
  // to its Edit button.
  li.updateEdit = (next) => {
    if (next.text === card.text) return;
    if (sameText(field.value, card.text)) {
      field.value = next.text;
      field.setSelectionRange(field.value.length, field.value.length);
      field.dispatchEvent(new Event("input"));
    }
    card = next;
  };
  const done = () => {
    delete li.dataset.editing;
    delete li.updateEdit;
    fillCard(li, cards.get(card.id) || card);
    li.querySelector('button[aria-label="Edit card"]')?.focus();
  };
  const saveButton = button("Save", "Save card", () => save());
  const fits = limit(field, counter, saveButton);
  const save = async () => {
    if (!fits()) return;
    // A text left as it was sends nothing (and so cannot undo someone
    // else's edit made meanwhile).
    if (!sameText(field.value, card.text) && !(await changeCard("save the card", card.id, { text: field.value }))) return;
    done();
  };
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      save();
    }
    if (e.key === "Escape") done();
  });
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(saveButton, button("Cancel", "Cancel edit", done), counter);
  li.replaceChildren(field, actions);
  field.focus();
  field.setSelectionRange(field.value.length, field.value.length);
}

// refocus returns what to give the focus back to after li is redrawn: the
// button with the same label, else after a move the move button in the
// same direction (so that Enter moves the card on), else its Edit button.
// label and fromCol are the focused button's label and the card's column
// before the redraw.
function refocus(li, label, fromCol) {
  const buttons = [...li.querySelectorAll("button")];
  const same = buttons.find((b) => b.getAttribute("aria-label") === label);
  if (same) return same;
  if (label && label.startsWith("Move to ")) {
    const forward = COLUMNS.indexOf(label.slice("Move to ".length)) > COLUMNS.indexOf(fromCol);
    const again = buttons.find((b) => b.textContent === (forward ? "→" : "←"));
    if (again) return again;
  }
  return buttons.find((b) => b.getAttribute("aria-label") === "Edit card") || li;
}

// render brings the DOM in line with the cards, touching only what changed,
// so a card being edited or a focused button survives other people's edits.
// A card redrawn or moved while one of its buttons has focus (a keyboard
// move) gets the focus back on its own buttons.
function render() {
  const active = document.activeElement;
  const activeCard = active && active.closest ? active.closest("li.card") : null;
  const activeLabel = active && active.getAttribute ? active.getAttribute("aria-label") : null;
  const activeCol = activeCard ? activeCard.dataset.col : null;
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
        li.tabIndex = -1;
        elements.set(card.id, li);
      }
      if (li.dataset.editing) li.updateEdit?.(card);
      else if (li.dataset.text !== card.text || li.dataset.col !== card.col) fillCard(li, card);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
  }
  if (activeCard && activeCard.isConnected && !activeCard.contains(document.activeElement)) {
    refocus(activeCard, activeLabel, activeCol).focus();
  }
}

const statusEl = document.getElementById("status");
const viewersEl = document.getElementById("viewers");

// Who is viewing the board: its presence members, named by their token's
// sub, or "anonymous N" in the order this page first saw them.
const anonymous = new Map(); // member id -> N
function renderViewers(members) {
  const names = members.map((m) => {
    if (m.sub) return m.sub;
    if (!anonymous.has(m.id)) anonymous.set(m.id, anonymous.size + 1);
    return "anonymous " + anonymous.get(m.id);
  }).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  viewersEl.hidden = false;
  const label = document.createElement("span");
  label.className = "viewers-label";
  label.textContent = names.length === 1 ? "1 viewer:" : names.length + " viewers:";
  const list = document.createElement("ul");
  for (const n of names) {
    const li = document.createElement("li");
    li.className = "viewer";
    li.textContent = n;
    list.append(li);
  }
  viewersEl.replaceChildren(label, list);
}

loadAndFollow({
  stateURL: "/api/boards/" + boardId,
  topic: "boards/" + boardId,
  statusEl,
  onState(state, err) {
    if (err && err.status === 404) {
      document.getElementById("board-name").textContent = "No such board";
      document.title = "No such board · livepg";
      document.getElementById("new-card").hidden = true;
      document.querySelector(".columns").hidden = true;
      errorEl.replaceChildren(`Board ${location.pathname.split("/")[2]} does not exist: it may have been deleted, or the address is wrong. `);
      const back = document.createElement("a");
      back.href = "/";
      back.textContent = "See all boards";
      errorEl.append(back);
      errorEl.hidden = false;
      return;
    }
    if (err) return showError("Could not load the board: " + err.message);
    showError("");
    document.getElementById("board-name").textContent = state.board.name;
    document.title = state.board.name + " · livepg";
    cards.clear();
    for (const c of state.cards) cards.set(c.id, c);
    render();
  },
  presence: { onMembers: (topic, members) => renderViewers(members) },
  onEvent(type, { data }) {
    if (type === "presence" || !data || data.table !== "cards") return;
    if (data.op === "delete") cards.delete(data.old.id);
    else if (data.new.board_id === boardId) cards.set(data.new.id, data.new);
    else cards.delete(data.new.id); // moved to another board
    render();
  },
});

const newCard = document.getElementById("new-card");
const newText = document.getElementById("card-text");
const newFits = limit(newText, document.getElementById("card-counter"), newCard.querySelector('button[type="submit"]'));

newCard.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!newFits()) return;
  // Clear at once, so typing the next card while this one is saved loses
  // nothing; on failure, put the text back if the field is still empty.
  const text = newText.value;
  newText.value = "";
  newText.dispatchEvent(new Event("input"));
  if (!(await api("add the card", "POST", "/cards", { text, col: document.getElementById("card-col").value })) && !newText.value) {
    newText.value = text;
    newText.dispatchEvent(new Event("input"));
  }
});

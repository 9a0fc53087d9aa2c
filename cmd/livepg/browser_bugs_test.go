package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store/storetest"
)

// The board page's own failures, as a person at the keyboard meets them.

// errorText is the page's visible error message ("" when hidden).
func (p *page) errorText(t *testing.T) string {
	t.Helper()
	return eval[string](t, p, `(e => e.hidden ? "" : e.textContent)(document.getElementById("error"))`)
}

// waitError waits until the page shows an error message containing want.
func (p *page) waitError(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := p.errorText(t)
		if strings.Contains(msg, want) {
			return msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows error %q, want one saying %q", p.name, msg, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shoot saves a screenshot of p for a person to look at, and logs where.
func (p *page) shoot(t *testing.T) {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "livepg-browser-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p.screenshot(t, dir))
}

func (p *page) noScriptErrors(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errors) > 0 {
		t.Errorf("%s had script errors: %q", p.name, p.errors)
	}
}

func (p *page) cardSelector(t *testing.T, text string) string {
	t.Helper()
	return fmt.Sprintf(`li.card[data-id="%s"]`, p.cardID(t, text))
}

// Adding, moving, saving and deleting while the page's node is down throw
// no script error, say what failed, and keep what was typed; once the node
// is back, the kept text goes through.
func TestBoardPageKeepsWorkWhileItsNodeIsDown(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, stop := startServer(t, boardEnv(db, "0"))
	waitReady(t, base)
	id := createBoard(t, base, "Offline")
	b := browser(t)
	p := openPage(t, b, "offline page", fmt.Sprintf("%s/boards/%d", base, id))
	p.add(t, "Existing card", "todo")
	p.waitColumns(t, [][]string{{"Existing card"}, {}, {}})

	// Start editing before the node goes away.
	card := p.cardSelector(t, "Existing card")
	p.click(t, "Existing card", "Edit card")
	p.run(t, typeKeys(card+" textarea", kb.End+", edited offline"))

	port := mustPort(t, base)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	p.run(t, chromedp.WaitVisible(chromedp.CSS(`#status.reconnecting`)))

	p.run(t, chromedp.Click(chromedp.CSS(card+` button[aria-label="Save card"]`)))
	p.waitError(t, "Could not save the card: the server did not answer")
	if got := eval[string](t, p, `document.querySelector('`+card+` textarea')?.value ?? "(no editor)"`); got != "Existing card, edited offline" {
		t.Fatalf("after a failed save the editor holds %q", got)
	}
	p.run(t, chromedp.Click(chromedp.CSS(card+` button[aria-label="Cancel edit"]`)))

	p.click(t, "Existing card", "Move to doing")
	p.waitError(t, "Could not move the card")
	p.click(t, "Existing card", "Delete card")
	p.waitError(t, "Could not delete the card")

	p.add(t, "Typed while offline", "doing")
	p.waitError(t, "Could not add the card")
	if got := eval[string](t, p, `document.getElementById("card-text").value`); got != "Typed while offline" {
		t.Fatalf("after a failed add the field holds %q", got)
	}
	p.waitColumns(t, [][]string{{"Existing card"}, {}, {}})
	p.shoot(t)
	p.noScriptErrors(t)

	// The node comes back: the kept text is added with one Enter.
	startServer(t, boardEnv(db, port))
	p.waitLive(t)
	p.run(t, typeKeys(`#card-text`, kb.Enter))
	p.waitColumns(t, [][]string{{"Existing card"}, {"Typed while offline"}, {}})
	if msg := p.errorText(t); msg != "" {
		t.Fatalf("error still shown after success: %q", msg)
	}
	p.noScriptErrors(t)
}

// The page's editing, with the keyboard: multi-line text, moving cards,
// texts over the limit, and a board that does not exist.
func TestBoardPageEditing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, boardEnv(db, "0"))
	waitReady(t, base)
	conn := mustConn(t, db)
	b := browser(t)

	cardText := func(id string) string {
		t.Helper()
		var text string
		if err := conn.QueryRow(ctx, `SELECT text FROM livepg_demo.cards WHERE id = $1`, id).Scan(&text); err != nil {
			t.Fatal(err)
		}
		return text
	}
	events := func() int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM livepg.events) + (SELECT count(*) FROM livepg.pending)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Saving an unchanged multi-line card changes nothing; an edit keeps
	// its lines.
	t.Run("multi-line card", func(t *testing.T) {
		id := createBoard(t, base, "Lines")
		if _, err := conn.Exec(ctx, `INSERT INTO livepg_demo.cards (board_id, col, text) VALUES ($1, 'todo', E'line one\nline two')`, id); err != nil {
			t.Fatal(err)
		}
		p := openPage(t, b, "multi-line page", fmt.Sprintf("%s/boards/%d", base, id))
		p.waitColumns(t, [][]string{{"line one\nline two"}, {}, {}})
		card := p.cardSelector(t, "line one\nline two")
		cardID := p.cardID(t, "line one\nline two")
		before := events()

		p.click(t, "line one\nline two", "Edit card")
		p.run(t, chromedp.Click(chromedp.CSS(card+` button[aria-label="Save card"]`)),
			chromedp.WaitVisible(chromedp.CSS(card+` button[aria-label="Edit card"]`)))
		if got := cardText(cardID); got != "line one\nline two" {
			t.Fatalf("an unchanged save stored %q", got)
		}
		if after := events(); after != before {
			t.Fatalf("an unchanged save made %d events", after-before)
		}

		p.click(t, "line one\nline two", "Edit card")
		p.run(t,
			typeKeys(card+" textarea", kb.End),
			pressKeys(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierShift)), // a new line
			pressKeys("line three"+kb.Enter))                                   // save
		p.waitColumns(t, [][]string{{"line one\nline two\nline three"}, {}, {}})
		if got := cardText(cardID); got != "line one\nline two\nline three" {
			t.Fatalf("an edit stored %q", got)
		}
		p.noScriptErrors(t)
	})

	// An editor opened on a card follows the card's changes while its text
	// is the one it opened with (so Edit pressed just after a save, before
	// the stream brought the save back, does not edit the old text), and
	// keeps what the user typed once they type.
	t.Run("editor follows the card until typed in", func(t *testing.T) {
		id := createBoard(t, base, "Follow")
		if _, err := conn.Exec(ctx, `INSERT INTO livepg_demo.cards (board_id, col, text) VALUES ($1, 'todo', 'first')`, id); err != nil {
			t.Fatal(err)
		}
		p := openPage(t, b, "follow page", fmt.Sprintf("%s/boards/%d", base, id))
		p.waitColumns(t, [][]string{{"first"}, {}, {}})
		card := p.cardSelector(t, "first")
		cardID := p.cardID(t, "first")
		field := func() string {
			return eval[string](t, p, `(f => f ? f.value : "(no editor)")(document.querySelector(`+"`"+card+` textarea`+"`"+`))`)
		}
		waitField := func(want string) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for field() != want {
				if time.Now().After(deadline) {
					t.Fatalf("the editor holds %q, want %q", field(), want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}

		p.click(t, "first", "Edit card")
		waitField("first")
		if _, err := conn.Exec(ctx, `UPDATE livepg_demo.cards SET text = 'second' WHERE id = $1`, cardID); err != nil {
			t.Fatal(err)
		}
		waitField("second")

		p.run(t, typeKeys(card+" textarea", kb.End+" typed"))
		waitField("second typed")
		// The change, then a card of its own in the same transaction: once
		// the page shows that card, it has applied the change before it.
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE livepg_demo.cards SET text = 'third' WHERE id = $1`, cardID); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO livepg_demo.cards (board_id, col, text) VALUES ($1, 'done', 'marker')`, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		p.waitColumns(t, [][]string{{}, {}, {"marker"}}) // the edited card shows its editor, no text
		if got := field(); got != "second typed" {
			t.Fatalf("after a change arrived the editor holds %q, want the typed %q", got, "second typed")
		}
		p.run(t, pressKeys(kb.Enter))
		p.waitColumns(t, [][]string{{"second typed"}, {}, {"marker"}})
		if got := cardText(cardID); got != "second typed" {
			t.Fatalf("the save stored %q", got)
		}
		p.noScriptErrors(t)
	})

	// A card moved with the keyboard keeps the focus: Enter on "Move to
	// doing", then Enter again moves it on to done.
	t.Run("keyboard move", func(t *testing.T) {
		id := createBoard(t, base, "Keys")
		p := openPage(t, b, "keyboard page", fmt.Sprintf("%s/boards/%d", base, id))
		p.add(t, "Moved by keyboard", "todo")
		p.waitColumns(t, [][]string{{"Moved by keyboard"}, {}, {}})
		card := p.cardSelector(t, "Moved by keyboard")
		p.run(t, chromedp.Focus(chromedp.CSS(card+` button[aria-label="Move to doing"]`)), pressKeys(kb.Enter))
		p.waitColumns(t, [][]string{{}, {"Moved by keyboard"}, {}})
		focused := func() string {
			return eval[string](t, p, `(e => e.closest("li.card") ? e.closest("li.card").dataset.text + " / " + (e.getAttribute("aria-label") || e.tagName) : e.tagName)(document.activeElement)`)
		}
		if got := focused(); got != "Moved by keyboard / Move to done" {
			t.Fatalf("after a keyboard move the focus is on %q, want the card's Move to done", got)
		}
		p.run(t, pressKeys(kb.Enter))
		p.waitColumns(t, [][]string{{}, {}, {"Moved by keyboard"}})
		if got := focused(); !strings.HasPrefix(got, "Moved by keyboard / ") {
			t.Fatalf("after the second move the focus is on %q, want the card", got)
		}
		p.noScriptErrors(t)
	})

	// Text over 500 characters is not cut: the page says how much is too
	// much, and the card cannot be added until it fits.
	t.Run("too long", func(t *testing.T) {
		id := createBoard(t, base, "Long")
		p := openPage(t, b, "long text page", fmt.Sprintf("%s/boards/%d", base, id))
		long := strings.Repeat("é", 495) + "0123456789" // 505 characters
		p.run(t, typeKeys(`#card-text`, long))
		if got := eval[string](t, p, `document.getElementById("card-text").value`); got != long {
			t.Fatalf("the field holds %d characters of the %d typed", len([]rune(got)), len([]rune(long)))
		}
		counter := eval[string](t, p, `document.getElementById("card-counter").textContent`)
		if !strings.Contains(counter, "505 / 500") || !strings.Contains(counter, "5 too many") {
			t.Fatalf("counter says %q", counter)
		}
		if !eval[bool](t, p, `document.querySelector('#new-card button[type="submit"]').disabled`) {
			t.Fatal("Add is enabled for a text over the limit")
		}
		p.run(t, typeKeys(`#card-text`, kb.Enter))
		p.run(t, typeKeys(`#card-text`, strings.Repeat(kb.Backspace, 5)))
		if eval[bool](t, p, `document.querySelector('#new-card button[type="submit"]').disabled`) {
			t.Fatal("Add is still disabled for a text at the limit")
		}
		p.run(t, typeKeys(`#card-text`, kb.Enter))
		fits := strings.Repeat("é", 495) + "01234"
		p.waitColumns(t, [][]string{{fits}, {}, {}})
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM livepg_demo.cards WHERE board_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d cards, want only the one that fits", n)
		}

		// The editor says so too.
		card := p.cardSelector(t, fits)
		p.click(t, fits, "Edit card")
		p.run(t, typeKeys(card+" textarea", kb.End+"567"))
		if !eval[bool](t, p, `document.querySelector('`+card+` button[aria-label="Save card"]').disabled`) {
			t.Fatal("Save is enabled for a text over the limit")
		}
		if got := eval[string](t, p, `document.querySelector('`+card+` .counter').textContent`); !strings.Contains(got, "3 too many") {
			t.Fatalf("editor counter says %q", got)
		}
		p.shoot(t)
		p.noScriptErrors(t)
	})

	// An unknown board says it does not exist, and the page stops asking.
	t.Run("unknown board", func(t *testing.T) {
		p := openTab(t, b, "unknown board page", base+"/boards/999999")
		msg := p.waitError(t, "does not exist")
		if !strings.Contains(msg, "999999") {
			t.Fatalf("message %q does not name the board", msg)
		}
		p.run(t, chromedp.WaitVisible(chromedp.CSS(`#status.gone`)))
		if got := eval[string](t, p, `document.getElementById("status").textContent`); got != "not found" {
			t.Fatalf("status badge says %q", got)
		}
		// live.js retries a failed load after 2 s: give it the chance, then
		// count the page's requests for the board.
		p.run(t, chromedp.Sleep(3*time.Second))
		if n := eval[int](t, p, `performance.getEntriesByType("resource").filter(e => e.name.endsWith("/api/boards/999999")).length`); n != 1 {
			t.Fatalf("the page asked for the unknown board %d times", n)
		}
		if eval[bool](t, p, `document.querySelector(".columns").checkVisibility() || document.getElementById("new-card").checkVisibility()`) {
			t.Fatal("an unknown board still shows empty columns or the new card form")
		}
		p.shoot(t)
		p.noScriptErrors(t)
	})
}

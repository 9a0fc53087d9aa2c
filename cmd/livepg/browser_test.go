package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store/storetest"
)

// browser starts headless Chromium (Debian's chromium package) for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found; install it with: apt-get install -y chromium")
	}
	dir, err := os.MkdirTemp("", "livepg-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1000, 700),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// page is one browser tab; it records the page's script errors.
type page struct {
	ctx    context.Context
	name   string
	mu     sync.Mutex
	errors []string
}

// openPage opens url in a new tab and waits until its stream is live.
func openPage(t *testing.T, browserCtx context.Context, name, url string) *page {
	t.Helper()
	p := openTab(t, browserCtx, name, url)
	p.waitLive(t)
	return p
}

// openTab opens url in a new tab, with a token for every board.
func openTab(t *testing.T, browserCtx context.Context, name, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	p := &page{ctx: ctx, name: name}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			p.mu.Lock()
			p.errors = append(p.errors, ev.ExceptionDetails.Text)
			p.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				p.mu.Lock()
				p.errors = append(p.errors, fmt.Sprint("console.error ", ev.Args))
				p.mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	p.run(t, setTokenCookie(t, url), chromedp.Navigate(url))
	return p
}

// setTokenCookie gives the browser a token for every board, as an app that
// signs its users in would: the pages' requests and streams carry it.
func setTokenCookie(t *testing.T, pageURL string) chromedp.Action[chromedp.Void] {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"*"}, "publish": []string{"boards", "boards/*"},
	}).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{Name: "livepg_token", Value: tok, URL: pageURL})
		return err
	})
}

func (p *page) run(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, p *page, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	return v
}

// typeKeys types keys into the element that sel finds, once it is visible,
// as a person at a keyboard does: see pressKeys.
func typeKeys(sel string, keys string, opts ...chromedp.KeyOption) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := chromedp.Focus(chromedp.CSS(sel), chromedp.NodeVisible)(ctx, tg); err != nil {
			return err
		}
		_, err := pressKeys(keys, opts...)(ctx, tg)
		return err
	})
}

// pressKeys presses keys, one after the other, in the focused element, as
// a keyboard does. Chromium on Linux gets a key as a raw keydown
// followed by the character it types, and drops that character when the
// page cancels the keydown (preventDefault): no keypress, nothing typed, no
// button pressed. chromedp's SendKeys and KeyEvent send a "keyDown"
// instead, whose character Chromium delivers even after the page cancelled
// the keydown, to whatever has the focus when it arrives. After an Enter
// that saves an edited card, that is the card's Edit button if the save
// was quicker than the test's next message to the browser (a loaded
// machine): the stray Enter pressed it and opened the editor again. So
// each keydown here is a raw one.
func pressKeys(keys string, opts ...chromedp.KeyOption) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, r := range keys {
			for _, k := range kb.Encode(r) {
				for _, o := range opts {
					o(k)
				}
				if k.Type == input.DispatchKeyEventTypeChar && k.Modifiers&^int64(chromedp.ModifierShift) != 0 {
					continue // a shortcut types nothing (as chromedp.KeyEvent)
				}
				if k.Type == input.DispatchKeyEventTypeKeyDown {
					k.Type = input.DispatchKeyEventTypeRawKeyDown
				}
				if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, *k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (p *page) waitLive(t *testing.T) {
	t.Helper()
	p.run(t, chromedp.WaitVisible(chromedp.CSS(`#status.live`)))
}

// columns reads the board as a person sees it: each column's card texts.
func (p *page) columns(t *testing.T) [][]string {
	t.Helper()
	return eval[[][]string](t, p, `["todo","doing","done"].map(c =>
		[...document.querySelectorAll('ul[data-col="' + c + '"] li .text')].map(e => e.textContent))`)
}

// waitColumns waits until the page shows want.
func (p *page) waitColumns(t *testing.T, want [][]string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := p.columns(t)
		if slices.EqualFunc(got, want, slices.Equal) {
			return
		}
		if time.Now().After(deadline) {
			// What the page says, and which cards it is editing: why it
			// did not get there.
			state := eval[string](t, p, `(document.getElementById("error")?.textContent ?? "") + " | editing: " +
				[...document.querySelectorAll("li.card[data-editing]")].map(li => li.dataset.id + " " + (li.querySelector("textarea")?.value ?? "")).join(", ")`)
			t.Fatalf("%s shows %q, want %q (page: %s)", p.name, got, want, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cardID finds the id of the card whose text is text.
func (p *page) cardID(t *testing.T, text string) string {
	t.Helper()
	id := eval[string](t, p, fmt.Sprintf(`[...document.querySelectorAll("li.card")].find(li => li.dataset.text === %q)?.dataset.id ?? ""`, text))
	if id == "" {
		t.Fatalf("%s: no card %q", p.name, text)
	}
	return id
}

func (p *page) click(t *testing.T, cardText, label string) {
	t.Helper()
	id := p.cardID(t, cardText)
	p.run(t, chromedp.Click(chromedp.CSS(fmt.Sprintf(`li.card[data-id="%s"] button[aria-label="%s"]`, id, label))))
}

func (p *page) screenshot(t *testing.T, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, strings.ReplaceAll(p.name, " ", "-")+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// boardEnv runs a node with the demo on, its token key set (the browser
// carries a token in a cookie: see setTokenCookie).
func boardEnv(db, port string) map[string]string {
	return map[string]string{"DATABASE_URL": db, "PORT": port, "LIVEPG_DEMO": "on", "LIVEPG_SHUTDOWN_TIMEOUT": "5s"}
}

// createBoard creates a board through the API and returns its id.
func createBoard(t *testing.T, base, name string) int64 {
	t.Helper()
	resp, body := post(t, base+"/api/boards", fmt.Sprintf(`{"name":%q}`, name), nil)
	var board struct{ ID int64 }
	_ = json.Unmarshal([]byte(body), &board)
	if resp.StatusCode != http.StatusCreated || board.ID == 0 {
		t.Fatalf("create board: %s %s", resp.Status, body)
	}
	return board.ID
}

// add types a new card into the page's form and presses Enter.
func (p *page) add(t *testing.T, text, col string) {
	t.Helper()
	eval[chromedp.Void](t, p, fmt.Sprintf(`document.getElementById("card-col").value = %q`, col))
	p.run(t, typeKeys(`#card-text`, text+kb.Enter))
}

// The demo board in two browser windows on two nodes: every change made in
// one window, or in SQL, shows in both; a window whose node goes away
// reconnects when it is back and has missed nothing.
func TestBoardStaysInStepAcrossBrowsersAndNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	env := func(port string) map[string]string { return boardEnv(db, port) }
	nodeA, _ := startServer(t, env("0"))
	nodeB, stopB := startServer(t, env("0"))
	waitReady(t, nodeA)
	waitReady(t, nodeB)
	board := struct{ ID int64 }{createBoard(t, nodeA, "Launch plan")}

	b := browser(t)
	path := fmt.Sprintf("/boards/%d", board.ID)
	one := openPage(t, b, "page one on node A", nodeA+path)
	two := openPage(t, b, "page two on node B", nodeB+path)
	both := func(want [][]string) {
		t.Helper()
		one.waitColumns(t, want)
		two.waitColumns(t, want)
	}

	// Add, edit, move and delete in page one; page two follows.
	one.add(t, "Write the README", "todo")
	one.add(t, "Fix the flaky test", "doing")
	both([][]string{{"Write the README"}, {"Fix the flaky test"}, {}})

	one.click(t, "Write the README", "Edit card")
	id := one.cardID(t, "Write the README")
	one.run(t,
		typeKeys(fmt.Sprintf(`li.card[data-id="%s"] textarea`, id), kb.End+" first"+kb.Enter),
	)
	both([][]string{{"Write the README first"}, {"Fix the flaky test"}, {}})

	one.click(t, "Write the README first", "Move to doing")
	both([][]string{{}, {"Fix the flaky test", "Write the README first"}, {}})
	one.click(t, "Fix the flaky test", "Move to done")
	both([][]string{{}, {"Write the README first"}, {"Fix the flaky test"}})

	two.click(t, "Fix the flaky test", "Delete card")
	both([][]string{{}, {"Write the README first"}, {}})

	// A writer in plain SQL, as psql would be.
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE livepg_demo.cards SET text = 'Edited in psql' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	both([][]string{{}, {"Edited in psql"}, {}})

	// Node B goes away: page two loses its stream. Changes go on through
	// node A and SQL meanwhile; node B comes back on the same address and
	// page two catches up.
	portB := mustPort(t, nodeB)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	two.run(t, chromedp.WaitVisible(chromedp.CSS(`#status.reconnecting`)))
	one.add(t, "Added while B was down", "todo")
	if _, err := conn.Exec(ctx, `INSERT INTO livepg_demo.cards (board_id, col, text, position) VALUES ($1, 'done', 'Inserted in psql while B was down', 9)`, board.ID); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"Added while B was down"}, {"Edited in psql"}, {"Inserted in psql while B was down"}}
	one.waitColumns(t, want)
	startServer(t, env(portB))
	two.waitLive(t)
	two.waitColumns(t, want)

	dir := filepath.Join(os.TempDir(), "livepg-browser-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s %s", one.screenshot(t, dir), two.screenshot(t, dir))

	for _, p := range []*page{one, two} {
		p.mu.Lock()
		if len(p.errors) > 0 {
			t.Errorf("%s had script errors: %q", p.name, p.errors)
		}
		p.mu.Unlock()
	}
}

func mustPort(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/livepg/livepg/store/storetest"
)

// viewers reads the board's list of viewers as the page shows it.
func (p *page) viewers(t *testing.T) []string {
	t.Helper()
	return eval[[]string](t, p, `[...document.querySelectorAll("#viewers .viewer")].map((li) => li.textContent)`)
}

func (p *page) waitViewers(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := p.viewers(t)
		if strings.Join(got, "|") == strings.Join(want, "|") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows viewers %q, want %q", p.name, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The demo board in two browser tabs on two nodes: each shows both viewers
// (anonymous ones, numbered); when one tab closes, the other shows one
// viewer once the grace period has passed.
func TestBoardShowsItsViewers(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	env := func() map[string]string {
		e := boardEnv(db, "0")
		e["LIVEPG_PRESENCE_ANONYMOUS"] = "on"
		e["LIVEPG_PRESENCE_GRACE"] = "1s"
		return e
	}
	nodeA, _ := startServer(t, env())
	nodeB, _ := startServer(t, env())
	waitReady(t, nodeA)
	waitReady(t, nodeB)
	board := createBoard(t, nodeA, "Who is here")

	b := browser(t)
	path := fmt.Sprintf("/boards/%d", board)
	one := openPage(t, b, "viewer one on node A", nodeA+path)
	one.waitViewers(t, "anonymous 1")
	two := openPage(t, b, "viewer two on node B", nodeB+path)
	one.waitViewers(t, "anonymous 1", "anonymous 2")
	two.waitViewers(t, "anonymous 1", "anonymous 2")
	one.run(t, chromedp.WaitVisible(chromedp.CSS(`#viewers`)))
	if label := eval[string](t, one, `document.querySelector("#viewers .viewers-label").textContent`); label != "2 viewers:" {
		t.Fatalf("page one's label %q, want 2 viewers:", label)
	}

	dir := filepath.Join(os.TempDir(), "livepg-browser-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", one.screenshot(t, dir))

	// Tab two closes: page one sees it leave.
	if err := chromedp.Cancel(two.ctx); err != nil {
		t.Fatal(err)
	}
	one.waitViewers(t, "anonymous 1")

	one.mu.Lock()
	defer one.mu.Unlock()
	if len(one.errors) > 0 {
		t.Errorf("%s had script errors: %q", one.name, one.errors)
	}
}

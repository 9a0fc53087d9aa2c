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
	"github.com/golang-jwt/jwt/v5"

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

// livepg.js's presence in a page across two nodes: the page (as "ann", on
// node B) sees itself and "bob" (a stream on node A) with the meta each
// sent; when its node restarts, the page reconnects and stays a member:
// bob sees no leave and no join of ann, also once the stopped node's lease
// has run out.
func TestLivepgJSPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	env := func(port string) map[string]string {
		e := libEnv(db, port)
		e["LIVEPG_PRESENCE_GRACE"] = "12s" // node B must be back, and the page on it, within this
		e["LIVEPG_PRESENCE_RENEW"] = "1s"
		return e
	}
	nodeA, _ := startServer(t, env("0"))
	nodeB, stopB := startServer(t, env("0"))
	waitReady(t, nodeA)
	waitReady(t, nodeB)
	const room = "room/1"
	bob := watchMembers(t, presenceStream(t, nodeA, room, "bob", "bob-page-key"))

	p := libPage(t, browser(t), "ann's page on node B", nodeB)
	annToken, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sub": "ann"}).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	p.subscribe(t, room, fmt.Sprintf(`token: %q, presence: { topics: [%q], meta: { color: "teal" },
		onMembers: (topic, ms) => { window.members = ms.map((m) => m.sub + ":" + ((m.meta && m.meta.color) || "")).sort(); } }`, annToken, room))
	waitJS(t, p, `JSON.stringify(window.members) === JSON.stringify(["ann:teal", "bob:"])`)
	waitFor(t, "bob sees ann", func() bool { return bob.has("ann") && bob.has("bob") })
	if got := eval[int](t, p, fmt.Sprintf(`window.sub.members(%q).length`, room)); got != 2 {
		t.Fatalf("sub.members: %d, want 2", got)
	}
	mark := bob.mark()

	// Node B restarts on its address; the page's stream reconnects there.
	conn := mustConn(t, db)
	var oldNode string
	if err := conn.QueryRow(context.Background(), `SELECT node FROM livepg.presence WHERE sub = 'ann'`).Scan(&oldNode); err != nil {
		t.Fatal(err)
	}
	port := mustPort(t, nodeB)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, p, `window.sub.status === "reconnecting"`)
	startServer(t, env(port))
	waitJS(t, p, `window.sub.status === "live"`)
	waitFor(t, "ann's member moved to the restarted node, and the stopped node's lease is gone", func() bool {
		var node string
		var leases int
		_ = conn.QueryRow(context.Background(), `SELECT node, (SELECT count(*) FROM livepg.presence_nodes WHERE node = $1) FROM livepg.presence WHERE sub = 'ann'`, oldNode).Scan(&node, &leases)
		return node != "" && node != oldNode && leases == 0
	})
	if ops := bob.opsSince(mark); len(ops) != 0 {
		t.Fatalf("bob saw %v while ann's node restarted; want nothing", ops)
	}
	waitJS(t, p, `JSON.stringify(window.members) === JSON.stringify(["ann:teal", "bob:"])`)
	p.noScriptErrors(t)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store/storetest"
)

// These tests drive livepg.js, the page-side client library every node
// serves at /livepg.js, in Chromium: a blank page of a node's origin imports
// it and subscribes; the test writes through another node and SQL and reads
// what the page's handlers saw (window.got) and the statuses it showed.

// libEnv runs a node for the client library's tests: topics under private/
// need a token.
func libEnv(db, port string) map[string]string {
	return map[string]string{"DATABASE_URL": db, "PORT": port, "LIVEPG_PRIVATE_TOPICS": "private/*", "LIVEPG_SHUTDOWN_TIMEOUT": "5s"}
}

// libPage opens a tab on base with no cookie and imports livepg.js into it.
// twoNodesAndAPage starts two nodes on a fresh database and opens a page on
// the second: the tests write through the first.
func twoNodesAndAPage(t *testing.T) (db, nodeA, nodeB string, p *page) {
	t.Helper()
	db = storetest.NewDatabase(t)
	nodeA, _ = startServer(t, libEnv(db, "0"))
	nodeB, _ = startServer(t, libEnv(db, "0"))
	waitReady(t, nodeA)
	waitReady(t, nodeB)
	return db, nodeA, nodeB, libPage(t, browser(t), "page on node B", nodeB)
}

func libPage(t *testing.T, browserCtx context.Context, name, base string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	p := &page{ctx: ctx, name: name}
	if err := chromedp.Listen(ctx, func(ev any) {
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
	}); err != nil {
		t.Fatal(err)
	}
	p.run(t, chromedp.Navigate(base+"/healthz"))
	eval[chromedp.Void](t, p, `window.got = []; window.statuses = []; window.resets = 0; window.tokenCalls = 0;
		import("/livepg.js").then((m) => { window.livepg = m; }, (err) => { window.importError = String(err); })`)
	waitJS(t, p, `window.livepg !== undefined || window.importError !== undefined`)
	if msg := eval[string](t, p, `window.importError || ""`); msg != "" {
		t.Fatalf("import livepg.js: %s", msg)
	}
	return p
}

// subscribe starts a subscription in the page; opts is a JavaScript object
// literal's body, added to the test's own options (status and event log).
func (p *page) subscribe(t *testing.T, topic, opts string) {
	t.Helper()
	eval[chromedp.Void](t, p, fmt.Sprintf(`window.sub = livepg.subscribe({ topics: [%q], minDelay: 200, maxDelay: 2000,
		onStatus: (s) => window.statuses.push(s), %s });
		window.sub.on("message", (e) => window.got.push(e.data.n)); undefined`, topic, opts))
}

// waitJS waits until a JavaScript expression is true in the page.
func waitJS(t *testing.T, p *page, expr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !eval[bool](t, p, expr) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not %s; got %v, statuses %v", p.name, expr, eval[[]int](t, p, `window.got || []`), eval[[]string](t, p, `window.statuses || []`))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGot waits until the page has seen exactly want, in order: it first
// waits for the last of want, so that a duplicate or a stray event before it
// shows as a mismatch.
func (p *page) waitGot(t *testing.T, want ...int) {
	t.Helper()
	waitJS(t, p, fmt.Sprintf(`window.got.length >= %d`, len(want)))
	if got := eval[[]int](t, p, `window.got`); !slices.Equal(got, want) {
		t.Fatalf("%s: the page's handlers saw %v, want %v", p.name, got, want)
	}
}

// publishN publishes events n = from..to on topic through the node at base.
func publishN(t *testing.T, base, topic string, from, to int) {
	t.Helper()
	for n := from; n <= to; n++ {
		resp, body := post(t, base+"/v1/publish", fmt.Sprintf(`{"topic":%q,"type":"message","data":{"n":%d}}`, topic, n), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %d: %s %s", n, resp.Status, body)
		}
	}
}

// snapshotHead reads livepg.head(), as a page's state read would with its state.
func snapshotHead(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var head string
	if err := conn.QueryRow(ctx, `SELECT livepg.head()`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}

// The handoff from a snapshot to the stream across two nodes, then the
// stream's node going away and coming back: the page's handlers see every
// event committed after its snapshot exactly once, in order, and the status
// goes live, reconnecting, live.
func TestLivepgJSHandoffAndNodeLossAcrossNodes(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	nodeA, _ := startServer(t, libEnv(db, "0"))
	nodeB, stopB := startServer(t, libEnv(db, "0"))
	waitReady(t, nodeA)
	waitReady(t, nodeB)
	b := browser(t)
	p := libPage(t, b, "page on node B", nodeB)

	// Events 1-3 are in the page's snapshot; 4-6 commit between the
	// snapshot and the stream; 7-9 after the stream opened. All through
	// node A.
	publishN(t, nodeA, "lib/1", 1, 3)
	head := snapshotHead(t, db)
	publishN(t, nodeA, "lib/1", 4, 6)
	p.subscribe(t, "lib/1", fmt.Sprintf(`from: %q`, head))
	waitJS(t, p, `window.sub.status === "live"`)
	publishN(t, nodeA, "lib/1", 7, 9)
	p.waitGot(t, 4, 5, 6, 7, 8, 9)

	// Node B goes away; writes go on through node A; node B comes back on
	// its address.
	port := mustPort(t, nodeB)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, p, `window.sub.status === "reconnecting"`)
	publishN(t, nodeA, "lib/1", 10, 12)
	startServer(t, libEnv(db, port))
	waitJS(t, p, `window.sub.status === "live"`)
	publishN(t, nodeA, "lib/1", 13, 13)
	p.waitGot(t, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)

	statuses := eval[[]string](t, p, `window.statuses`)
	if i := slices.Index(statuses, "reconnecting"); i < 0 || !slices.Contains(statuses[i:], "live") || statuses[0] != "connecting" {
		t.Fatalf("statuses %v: want connecting, live, reconnecting, ..., live", statuses)
	}
	eval[chromedp.Void](t, p, `window.sub.close()`)
	if s := eval[string](t, p, `window.sub.status`); s != "offline" {
		t.Fatalf("after close the status is %q", s)
	}
	p.noScriptErrors(t)
}

// A resume point the log no longer holds (the log was truncated): the
// stream says reset, the page's reset callback runs once and gives the
// fresh state's position, and the stream goes on from it with nothing
// before it and nothing twice.
func TestLivepgJSReset(t *testing.T) {
	t.Parallel()
	db, nodeA, nodeB, p := twoNodesAndAPage(t)

	stale := snapshotHead(t, db)
	publishN(t, nodeA, "lib/2", 1, 3)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `TRUNCATE livepg.events`); err != nil {
		t.Fatal(err)
	}
	publishN(t, nodeA, "lib/2", 4, 4) // in the fresh state
	fresh := snapshotHead(t, db)
	// Node B's window of the log knows of the TRUNCATE once B has read the
	// log since (README, "The window of the log"): until then it would
	// serve events 1-3, which it still holds, instead of the reset.
	waitFor(t, "node B past the TRUNCATE", func() bool {
		seq, _, _ := strings.Cut(fresh, "-")
		_, body := get(t, nodeB+"/metrics")
		return strings.Contains(body, "\nlivepg_log_head "+seq+"\n")
	})
	p.subscribe(t, "lib/2", fmt.Sprintf(`from: %q, reset: async () => { window.resets++; return %q; }`, stale, fresh))
	waitJS(t, p, `window.resets === 1 && window.sub.status === "live"`)
	publishN(t, nodeA, "lib/2", 5, 6)
	p.waitGot(t, 5, 6)
	if n := eval[int](t, p, `window.resets`); n != 1 {
		t.Fatalf("reset callback ran %d times", n)
	}
	p.noScriptErrors(t)
}

// A private topic's stream with a token that expires in a few seconds: the
// page's token callback is asked for a fresh one before it expires, the
// stream goes on with it from the last id, and events published after the
// first token expired arrive, each once.
func TestLivepgJSRefreshesItsToken(t *testing.T) {
	t.Parallel()
	db, nodeA, nodeB, p := twoNodesAndAPage(t)

	sign := func(exp time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix(), "subscribe": []string{"private/*"}}).SignedString([]byte(testTokenKey))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	firstExpiry := time.Now().Add(5 * time.Second)
	tokens, _ := json.Marshal([]string{sign(firstExpiry), sign(time.Now().Add(time.Hour))})
	eval[chromedp.Void](t, p, fmt.Sprintf(`window.tokens = %s`, tokens))

	// Without a token the stream is refused: the topic is private.
	if code, _ := get(t, nodeB+"/v1/events?topic=private/t"); code != http.StatusUnauthorized {
		t.Fatalf("private topic without a token: %d", code)
	}
	head := snapshotHead(t, db)
	p.subscribe(t, "private/t", fmt.Sprintf(`from: %q, token: async () => window.tokens[Math.min(window.tokenCalls++, 1)]`, head))
	waitJS(t, p, `window.sub.status === "live"`)
	publishN(t, nodeA, "private/t", 1, 2)
	p.waitGot(t, 1, 2)

	// Past the first token's expiry, events still arrive.
	waitJS(t, p, `window.tokenCalls >= 2`)
	time.Sleep(time.Until(firstExpiry.Add(time.Second)))
	publishN(t, nodeA, "private/t", 3, 4)
	p.waitGot(t, 1, 2, 3, 4)
	p.noScriptErrors(t)
}

// Every node serves the library and its declarations, with a JavaScript
// Content-Type (a browser refuses a module served otherwise), a cache
// header, and an ETag that answers 304.
func TestNodeServesLivepgJS(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, libEnv(db, "0"))
	waitReady(t, base)
	for path, want := range map[string]string{"/livepg.js": "text/javascript", "/livepg.d.ts": "application/typescript"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age") || !strings.Contains(string(body), "subscribe") {
			t.Fatalf("%s: %s %q %q", path, resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
		}
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		again, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		again.Body.Close()
		if again.StatusCode != http.StatusNotModified {
			t.Fatalf("%s with its ETag: %s, want 304", path, again.Status)
		}
	}
}

// A node that answers the stream with an error status (here 403: the first
// token the page's callback gives does not grant the topic), where the browser's
// EventSource gives up: livepg.js shows reconnecting, asks again after its
// backoff with a fresh token, and still starts from the page's snapshot.
func TestLivepgJSRetriesAnErrorAnswer(t *testing.T) {
	t.Parallel()
	db, nodeA, _, p := twoNodesAndAPage(t)

	sign := func(exp time.Time, sel string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix(), "subscribe": []string{sel}}).SignedString([]byte(testTokenKey))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokens, _ := json.Marshal([]string{sign(time.Now().Add(time.Hour), "private/other"), sign(time.Now().Add(time.Hour), "private/*")})
	eval[chromedp.Void](t, p, fmt.Sprintf(`window.tokens = %s`, tokens))

	publishN(t, nodeA, "private/e", 1, 2)
	head := snapshotHead(t, db)
	publishN(t, nodeA, "private/e", 3, 4)
	p.subscribe(t, "private/e", fmt.Sprintf(`from: %q, token: async () => window.tokens[Math.min(window.tokenCalls++, 1)]`, head))
	waitJS(t, p, `window.sub.status === "live"`)
	publishN(t, nodeA, "private/e", 5, 5)
	p.waitGot(t, 3, 4, 5)
	if statuses := eval[[]string](t, p, `window.statuses`); !slices.Equal(statuses, []string{"connecting", "reconnecting", "live"}) {
		t.Fatalf("statuses %v, want connecting, reconnecting, live", statuses)
	}
	p.noScriptErrors(t)
}

// A page whose token is the livepg_token cookie, which the app renews by
// itself: the stream ends at the token's expiry with event: token-expired,
// livepg.js shows reconnecting and retries, and once the cookie is fresh the
// stream goes on from the last id, with what was published meanwhile, once.
func TestLivepgJSResumesAfterTokenExpiredWithACookie(t *testing.T) {
	t.Parallel()
	db, nodeA, nodeB, p := twoNodesAndAPage(t)

	setCookie := func(exp time.Time) {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix(), "subscribe": []string{"private/*"}}).SignedString([]byte(testTokenKey))
		if err != nil {
			t.Fatal(err)
		}
		p.run(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{Name: "livepg_token", Value: tok, URL: nodeB})
			return err
		}))
	}
	setCookie(time.Now().Add(4 * time.Second))
	head := snapshotHead(t, db)
	p.subscribe(t, "private/c", fmt.Sprintf(`from: %q`, head))
	waitJS(t, p, `window.sub.status === "live"`)
	publishN(t, nodeA, "private/c", 1, 2)
	p.waitGot(t, 1, 2)

	// The token expires: the node ends the stream, and the expired cookie
	// is refused until the app renews it.
	waitJS(t, p, `window.sub.status === "reconnecting"`)
	publishN(t, nodeA, "private/c", 3, 3)
	setCookie(time.Now().Add(time.Hour))
	waitJS(t, p, `window.sub.status === "live"`)
	publishN(t, nodeA, "private/c", 4, 4)
	p.waitGot(t, 1, 2, 3, 4)
	p.noScriptErrors(t)
}

// A page's node is SIGKILLed, not stopped: its stream's connection just
// dies, with no goodbye. The page shows it is reconnecting, writes go on
// through psql meanwhile, and once a node answers on that address again
// the page resumes from its last id: its handlers see every committed
// event exactly once, in order.
func TestLivepgJSThroughANodeSIGKILL(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	node := startProcess(t, db)
	p := libPage(t, browser(t), "page on a node that is killed", node.URL)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	publish := func(from, to int) {
		t.Helper()
		for n := from; n <= to; n++ {
			if _, err := conn.Exec(ctx, `SELECT livepg.publish('lib/kill', jsonb_build_object('n', $1::int))`, n); err != nil {
				t.Fatal(err)
			}
		}
	}

	publish(1, 2)
	p.subscribe(t, "lib/kill", fmt.Sprintf(`from: %q`, snapshotHead(t, db)))
	waitJS(t, p, `window.sub.status === "live"`)
	publish(3, 5)
	p.waitGot(t, 3, 4, 5)

	port := mustPort(t, node.URL)
	node.signal(t, syscall.SIGKILL, 30*time.Second)
	publish(6, 8) // committed while no node serves the page
	waitJS(t, p, `window.sub.status === "reconnecting"`)
	startProcess(t, db, "PORT="+port)
	waitJS(t, p, `window.sub.status === "live"`)
	publish(9, 10)
	p.waitGot(t, 3, 4, 5, 6, 7, 8, 9, 10)
	p.noScriptErrors(t)
}

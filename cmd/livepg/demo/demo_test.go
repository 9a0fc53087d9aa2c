package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/cmd/livepg/demo"
	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// testApp is the demo served over HTTP on its own test database.
type testApp struct {
	URL  string // the server's base URL
	DB   string // the database's URL
	Pool *pgxpool.Pool
}

// openPool opens a pool on db, closed at cleanup.
func openPool(t *testing.T, db string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// startApp migrates the demo on a fresh livepg database and serves it.
func startApp(t *testing.T, opts demo.Options) *testApp {
	t.Helper()
	db := storetest.NewDatabase(t)
	pool := openPool(t, db)
	if err := demo.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return serveApp(t, db, pool, opts)
}

// serveApp serves the demo on an already migrated database.
func serveApp(t *testing.T, db string, pool *pgxpool.Pool, opts demo.Options) *testApp {
	t.Helper()
	app, err := demo.New(context.Background(), pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	app.Routes(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &testApp{URL: srv.URL, DB: db, Pool: pool}
}

// count runs a query that returns one number.
func (a *testApp) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := a.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// request is one HTTP request of a test; header holds extra headers.
type request struct {
	method, url, body string
	header            map[string]string
}

// send sends req as JSON (unless its header says otherwise) and returns the
// status and the decoded JSON object of the answer.
func send(t *testing.T, req request) (int, map[string]any) {
	t.Helper()
	r, err := http.NewRequest(req.method, req.url, strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	if req.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d %q is not a JSON object", req.method, req.url, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	return send(t, request{method: method, url: url, body: body})
}

// Every bad mutation gets a clear 4xx with a JSON error and changes nothing.
func TestMutationsRefuseBadInput(t *testing.T) {
	t.Parallel()
	app := startApp(t, demo.Options{})
	base := app.URL

	code, board := do(t, "POST", base+"/api/boards", `{"name":"  Board  "}`)
	if code != http.StatusCreated || board["name"] != "Board" {
		t.Fatalf("create board: %d %v", code, board)
	}
	b := fmt.Sprintf("%s/api/boards/%v", base, board["id"])
	code, card := do(t, "POST", b+"/cards", `{"text":"first","col":"todo"}`)
	if code != http.StatusCreated || card["text"] != "first" || card["col"] != "todo" {
		t.Fatalf("add card: %d %v", code, card)
	}
	c := fmt.Sprintf("%s/cards/%v", b, card["id"])

	long := strings.Repeat("é", 501)
	for _, tc := range []struct {
		name, method, url, body string
		status                  int
	}{
		{"board: empty name", "POST", base + "/api/boards", `{"name":"   "}`, 400},
		{"board: long name", "POST", base + "/api/boards", `{"name":"` + strings.Repeat("x", 101) + `"}`, 400},
		{"board: malformed", "POST", base + "/api/boards", `{"name":`, 400},
		{"board: unknown field", "POST", base + "/api/boards", `{"name":"x","owner":1}`, 400},
		{"board: wrong type", "POST", base + "/api/boards", `{"name":5}`, 400},
		{"board: too large", "POST", base + "/api/boards", `{"name":"` + strings.Repeat("x", 70_000) + `"}`, 413},
		{"card: empty text", "POST", b + "/cards", `{"text":" ","col":"todo"}`, 400},
		{"card: long text", "POST", b + "/cards", `{"text":"` + long + `","col":"todo"}`, 400},
		{"card: unknown column", "POST", b + "/cards", `{"text":"x","col":"later"}`, 400},
		{"card: no column", "POST", b + "/cards", `{"text":"x"}`, 400},
		{"card: unknown board", "POST", base + "/api/boards/999999/cards", `{"text":"x","col":"todo"}`, 404},
		{"card: board not a number", "POST", base + "/api/boards/abc/cards", `{"text":"x","col":"todo"}`, 404},
		{"card: two values", "POST", b + "/cards", `{"text":"x","col":"todo"} {}`, 400},
		{"edit: empty text", "PATCH", c, `{"text":""}`, 400},
		{"edit: unknown column", "PATCH", c, `{"col":"nope"}`, 400},
		{"edit: nothing", "PATCH", c, `{}`, 400},
		{"edit: null text", "PATCH", c, `{"text":null}`, 400},
		{"edit: unknown card", "PATCH", b + "/cards/999999", `{"text":"x"}`, 404},
		{"edit: card of another board", "PATCH", base + "/api/boards/999999/cards/" + fmt.Sprint(card["id"]), `{"text":"x"}`, 404},
		{"delete: unknown card", "DELETE", b + "/cards/999999", ``, 404},
		{"read: unknown board", "GET", base + "/api/boards/999999", ``, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, tc.url, tc.body)
			if code != tc.status {
				t.Fatalf("%d %v, want %d", code, body, tc.status)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("no error message: %v", body)
			}
		})
	}

	// Nothing changed: one board, one card, as created.
	code, snap := do(t, "GET", b, "")
	state := snap["state"].(map[string]any)
	cards := state["cards"].([]any)
	if code != 200 || len(cards) != 1 || cards[0].(map[string]any)["text"] != "first" {
		t.Fatalf("after refused requests: %d %v", code, snap)
	}
	if boards, events := app.count(t, `SELECT count(*) FROM livepg_demo.boards`), app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e`); boards != 1 || events != 2 {
		t.Fatalf("%d boards and %d events, want 1 and 2", boards, events)
	}

	// And the good edits work; a multi-line text keeps its lines.
	for _, tc := range []struct{ method, body, wantText, wantCol string }{
		{"PATCH", `{"text":"renamed"}`, "renamed", "todo"},
		{"PATCH", `{"col":"done"}`, "renamed", "done"},
		{"PATCH", `{"text":"both","col":"doing"}`, "both", "doing"},
		{"PATCH", `{"text":"line one\nline two"}`, "line one\nline two", "doing"},
	} {
		code, got := do(t, tc.method, c, tc.body)
		if code != 200 || got["text"] != tc.wantText || got["col"] != tc.wantCol {
			t.Fatalf("%s %s: %d %v", tc.method, tc.body, code, got)
		}
	}
	if code, _ := do(t, "DELETE", c, ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
}

// A page's state and the head it reflects come from one snapshot: the head
// is the seq of the last change the state includes.
func TestBoardSnapshotHeadMatchesState(t *testing.T) {
	t.Parallel()
	app := startApp(t, demo.Options{})
	_, board := do(t, "POST", app.URL+"/api/boards", `{"name":"B"}`)
	b := fmt.Sprintf("%s/api/boards/%v", app.URL, board["id"])
	do(t, "POST", b+"/cards", `{"text":"one","col":"todo"}`)
	_, snap := do(t, "GET", b, "")
	// In commit_timestamp mode the head may be '<S>.<k>-<epoch>': after S,
	// k events committed but not yet numbered; the test's own events are
	// the only ones, so they are S+1..S+k once numbered.
	storetest.NumberPending(t, app.Pool)
	head, _, err := realtime.ParseEventID(fmt.Sprint(snap["head"]))
	if last := app.count(t, `SELECT max(seq) FROM livepg.events`); err != nil || head.Seq+head.Skip != int64(last) {
		t.Fatalf("head %v, last event %d", snap["head"], last)
	}
	for _, page := range []string{"/", "/boards/1", "/static/board.js", "/static/page.js", "/static/app.css"} {
		resp, err := http.Get(app.URL + page)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", page, resp.StatusCode)
		}
	}
}

const testKey = "a-test-token-key-of-at-least-32-bytes"

// token signs a token for the test key with the given grants.
func token(t *testing.T, subscribe, publish []string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "subscribe": subscribe, "publish": publish,
	}).SignedString([]byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// With a token key, a write needs a token that grants publishing on the
// board's topic, and a read of a private topic's board needs one that grants
// subscribing to it; refusals change nothing.
func TestWritesAndPrivateReadsNeedAToken(t *testing.T) {
	t.Parallel()
	private := []realtime.Selector{{Topic: "boards/", Prefix: true}, {Topic: "boards"}}
	auth, err := realtime.NewAuth("HS256", testKey, private)
	if err != nil {
		t.Fatal(err)
	}
	app := startApp(t, demo.Options{Auth: auth})
	base := app.URL
	admin := bearer(token(t, []string{"*"}, []string{"*"}))

	code, board := send(t, request{method: "POST", url: base + "/api/boards", body: `{"name":"Mine"}`, header: admin})
	if code != http.StatusCreated {
		t.Fatalf("create board with a token for every topic: %d %v", code, board)
	}
	id := fmt.Sprint(board["id"])
	b := base + "/api/boards/" + id
	code, card := send(t, request{method: "POST", url: b + "/cards", body: `{"text":"kept","col":"todo"}`, header: admin})
	if code != http.StatusCreated {
		t.Fatalf("add card: %d %v", code, card)
	}
	c := b + "/cards/" + fmt.Sprint(card["id"])
	before := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e`)

	thisBoard := bearer(token(t, []string{"boards/" + id}, []string{"boards/" + id}))
	otherBoard := bearer(token(t, []string{"boards/999"}, []string{"boards/999"}))
	for _, tc := range []struct {
		name   string
		req    request
		status int
	}{
		{"create board, no token", request{method: "POST", url: base + "/api/boards", body: `{"name":"x"}`}, 401},
		{"create board, a board's token", request{method: "POST", url: base + "/api/boards", body: `{"name":"x"}`, header: thisBoard}, 403},
		{"create board, bad token", request{method: "POST", url: base + "/api/boards", body: `{"name":"x"}`, header: bearer("nope")}, 401},
		{"add card, no token", request{method: "POST", url: b + "/cards", body: `{"text":"x","col":"todo"}`}, 401},
		{"add card, another board's token", request{method: "POST", url: b + "/cards", body: `{"text":"x","col":"todo"}`, header: otherBoard}, 403},
		{"edit card, no token", request{method: "PATCH", url: c, body: `{"text":"x"}`}, 401},
		{"edit card, another board's token", request{method: "PATCH", url: c, body: `{"text":"x"}`, header: otherBoard}, 403},
		{"delete card, no token", request{method: "DELETE", url: c}, 401},
		{"delete card, another board's token", request{method: "DELETE", url: c, header: otherBoard}, 403},
		{"read board, no token", request{method: "GET", url: b}, 401},
		{"read board, another board's token", request{method: "GET", url: b, header: otherBoard}, 403},
		{"read unknown board, no token", request{method: "GET", url: base + "/api/boards/999999"}, 401},
		{"list boards, no token", request{method: "GET", url: base + "/api/boards"}, 401},
		{"list boards, a board's token", request{method: "GET", url: base + "/api/boards", header: thisBoard}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := send(t, tc.req)
			if code != tc.status {
				t.Fatalf("%d %v, want %d", code, body, tc.status)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("no error message: %v", body)
			}
		})
	}
	if after := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e`); after != before {
		t.Fatalf("refused requests made %d events", after-before)
	}

	// The board's own token reads it and changes it, in a cookie as a page
	// carries it.
	cookie := map[string]string{"Cookie": realtime.TokenCookie + "=" + token(t, []string{"boards/" + id}, []string{"boards/" + id})}
	if code, snap := send(t, request{method: "GET", url: b, header: cookie}); code != 200 || snap["state"] == nil {
		t.Fatalf("read with the board's token: %d %v", code, snap)
	}
	if code, got := send(t, request{method: "PATCH", url: c, body: `{"text":"changed"}`, header: cookie}); code != 200 || got["text"] != "changed" {
		t.Fatalf("edit with the board's token: %d %v", code, got)
	}
	if code, _ := send(t, request{method: "DELETE", url: c, header: thisBoard}); code != http.StatusNoContent {
		t.Fatalf("delete with the board's token: %d", code)
	}
	if code, list := send(t, request{method: "GET", url: base + "/api/boards", header: admin}); code != 200 || len(list["state"].([]any)) != 1 {
		t.Fatalf("list with a token for every topic: %d %v", code, list)
	}
}

// A page on another site cannot make a visitor's browser change the board:
// a foreign Origin, a cross-site fetch and a body that is not JSON are all
// refused, and nothing is created.
func TestCrossSiteMutationsAreRefused(t *testing.T) {
	t.Parallel()
	app := startApp(t, demo.Options{AllowedOrigins: []string{"https://app.example"}})
	base := app.URL
	code, board := do(t, "POST", base+"/api/boards", `{"name":"B"}`)
	if code != http.StatusCreated {
		t.Fatalf("create board: %d %v", code, board)
	}
	cards := fmt.Sprintf("%s/api/boards/%v/cards", base, board["id"])
	card := `{"text":"forged","col":"todo"}`
	before := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e`)

	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
	}{
		{"text/plain from another site", map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"}, 403},
		{"JSON from another site", map[string]string{"Origin": "https://evil.example"}, 403},
		{"same host, other scheme", map[string]string{"Origin": strings.Replace(base, "http://", "https://", 1)}, 403},
		{"opaque origin", map[string]string{"Origin": "null"}, 403},
		{"cross-site fetch without Origin", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"text/plain without Origin", map[string]string{"Content-Type": "text/plain"}, 415},
		{"form from the page's own origin", map[string]string{"Origin": base, "Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"no content type", map[string]string{"Content-Type": ""}, 415},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := send(t, request{method: "POST", url: cards, body: card, header: tc.header})
			if code != tc.status {
				t.Fatalf("%d %v, want %d", code, body, tc.status)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("no error message: %v", body)
			}
		})
	}
	if n := app.count(t, `SELECT count(*) FROM livepg_demo.cards`); n != 0 {
		t.Fatalf("%d cards created by refused requests", n)
	}
	if after := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e`); after != before {
		t.Fatalf("refused requests made %d events", after-before)
	}

	// The page's own origin, an allowed origin and a script with no Origin
	// may write.
	for _, header := range []map[string]string{
		{"Origin": base, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json; charset=utf-8"},
		{"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"},
		{},
	} {
		if code, body := send(t, request{method: "POST", url: cards, body: card, header: header}); code != http.StatusCreated {
			t.Errorf("%v: %d %v", header, code, body)
		}
	}
	// An allowed origin's page asks first (a preflight) and is let in; another
	// origin's is not.
	for origin, want := range map[string]string{"https://app.example": "https://app.example", "https://evil.example": ""} {
		req, _ := http.NewRequest(http.MethodOptions, cards, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("preflight from %s: Access-Control-Allow-Origin %q, want %q", origin, got, want)
		}
	}
	// A DELETE has no body and needs no content type.
	if code, _ := send(t, request{method: "DELETE", url: cards + "/1", header: map[string]string{"Origin": base}}); code != http.StatusNoContent {
		t.Errorf("delete from the page's own origin: %d", code)
	}
}

// Bad input is refused with a message in the client's terms: the
// database's error text goes to the log, never into the answer.
func TestRefusalsShowNoDatabaseInternals(t *testing.T) {
	t.Parallel()
	app := startApp(t, demo.Options{})
	base := app.URL
	code, board := do(t, "POST", base+"/api/boards", `{"name":"B"}`)
	if code != http.StatusCreated {
		t.Fatalf("create board: %d %v", code, board)
	}
	cards := fmt.Sprintf("%s/api/boards/%v/cards", base, board["id"])
	for _, body := range []string{`{"text":"a\u0000b","col":"todo"}`, `{"name":"x\u0000"}`} {
		url := cards
		if strings.Contains(body, "name") {
			url = base + "/api/boards"
		}
		code, resp := do(t, "POST", url, body)
		msg, _ := resp["error"].(string)
		if code != http.StatusBadRequest || msg == "" {
			t.Errorf("%s: %d %v, want 400 with a message", body, code, resp)
		}
		for _, internal := range []string{"SQLSTATE", "byte sequence", "UTF8\"", "0x00"} {
			if strings.Contains(msg, internal) {
				t.Errorf("%s: the answer %q shows the database's error text", body, msg)
			}
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/livepg/livepg/store/storetest"
)

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d %q is not a JSON object", method, url, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// Every bad mutation gets a clear 4xx with a JSON error and changes nothing.
func TestDemoMutationsRefuseBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0"})

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
	var boards, events int
	conn := mustConn(t, db)
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM boards), (SELECT count(*) FROM livepg.events)`).Scan(&boards, &events); err != nil {
		t.Fatal(err)
	}
	if boards != 1 || events != 2 {
		t.Fatalf("%d boards and %d events, want 1 and 2", boards, events)
	}

	// And the good edits work.
	for _, tc := range []struct{ method, body, wantText, wantCol string }{
		{"PATCH", `{"text":"renamed"}`, "renamed", "todo"},
		{"PATCH", `{"col":"done"}`, "renamed", "done"},
		{"PATCH", `{"text":"both","col":"doing"}`, "both", "doing"},
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
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0"})
	_, board := do(t, "POST", base+"/api/boards", `{"name":"B"}`)
	b := fmt.Sprintf("%s/api/boards/%v", base, board["id"])
	do(t, "POST", b+"/cards", `{"text":"one","col":"todo"}`)
	_, snap := do(t, "GET", b, "")
	var last int64
	conn := mustConn(t, db)
	if err := conn.QueryRow(context.Background(), `SELECT max(seq) FROM livepg.events`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if snap["head"] != float64(last) {
		t.Fatalf("head %v, last event %d", snap["head"], last)
	}
	for _, page := range []string{"/", "/boards/1", "/static/board.js", "/static/live.js", "/static/app.css"} {
		if code, _ := get(t, base+page); code != http.StatusOK {
			t.Errorf("GET %s: %d", page, code)
		}
	}
}

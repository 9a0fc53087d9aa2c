package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// inspectToken grants the inspector, and subscribing to every topic (for
// the tail of private ones).
func inspectToken(t *testing.T) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "inspect": true, "subscribe": []string{"*"},
	}).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// nodeID asks a node its id in the registry.
func nodeID(t *testing.T, base, tok string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/inspect/api/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ins struct{ Node string }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ins) != nil || ins.Node == "" {
		t.Fatalf("GET %s/inspect/api/nodes: %s", base, resp.Status)
	}
	return ins.Node
}

// The inspector in Chromium, on node B of two: it shows both nodes (A
// through the database), B's stream count and topics change as a stream
// opens there, and a tail of a selector shows an event published through
// node A. With LIVEPG_INSPECT_SCREENSHOT set to a file name, the page is
// saved there as a PNG.
func TestInspectorPageShowsBothNodesAStreamAndATail(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	nodeA, _ := startServer(t, libEnv(db, "0"))
	nodeB, _ := startServer(t, libEnv(db, "0"))
	waitReady(t, nodeA)
	waitReady(t, nodeB)
	tok := inspectToken(t)
	idA, idB := nodeID(t, nodeA, tok), nodeID(t, nodeB, tok)

	ctx, cancel := chromedp.NewContext(browser(t))
	t.Cleanup(cancel)
	p := &page{ctx: ctx, name: "inspector on node B"}
	listenErrors(t, p)
	p.run(t, chromedp.Navigate(nodeB+"/inspect?token="+tok))

	row := func(id string) string { return fmt.Sprintf(`document.querySelector('#nodes tr[data-node=%q]')`, id) }
	waitJS(t, p, fmt.Sprintf(`%s !== null && %s !== null`, row(idA), row(idB)))
	waitJS(t, p, `document.getElementById("status").textContent === "live"`)
	if !eval[bool](t, p, row(idB)+`.classList.contains("self")`) || eval[bool](t, p, row(idA)+`.classList.contains("self")`) {
		t.Errorf("the page does not mark node B, and only B, as itself")
	}
	streams := func(id string) string { return row(id) + `.querySelector("td[data-streams]").dataset.streams` }
	waitJS(t, p, streams(idB)+` === "0"`)

	// A stream opens on node B: its count and topic show on B's row.
	s := ssetest.Open(t, nodeB+"/v1/events?topic=inspect-demo/1", "")
	waitJS(t, p, streams(idB)+` === "1"`)
	waitJS(t, p, row(idB)+`.querySelector('li[data-selector="inspect-demo/1"]') !== null`)

	// A tail of inspect-demo/*; an event published through node A shows.
	p.run(t, typeKeys("#tail-topic", "inspect-demo/*"), chromedp.Click(chromedp.CSS("#tail-start")))
	waitJS(t, p, `document.getElementById("tail-status").textContent === "live"`)
	publishN(t, nodeA, "inspect-demo/2", 41, 41)
	waitJS(t, p, `[...document.querySelectorAll("#tail tbody tr")].some((tr) => tr.cells[2].textContent === "inspect-demo/2" && tr.cells[3].textContent === '{"n":41}')`)
	waitJS(t, p, streams(idB)+` === "2"`) // the tail is a stream of node B's too
	s.Close()
	waitJS(t, p, streams(idB)+` === "1"`)

	// A selector the grammar refuses gets the node's own words, not a
	// silent retry.
	p.run(t, chromedp.Click(chromedp.CSS("#tail-stop")))
	eval[chromedp.Void](t, p, `document.getElementById("tail-topic").value = "bad//topic"`)
	p.run(t, chromedp.Click(chromedp.CSS("#tail-start")))
	waitJS(t, p, `!document.getElementById("tail-error").hidden && document.getElementById("tail-error").textContent.includes("topic")`)

	if file := os.Getenv("LIVEPG_INSPECT_SCREENSHOT"); file != "" {
		eval[chromedp.Void](t, p, `document.getElementById("tail-topic").value = "inspect-demo/*"; document.getElementById("tail-error").hidden = true`)
		sctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", file)
	}
	p.noScriptErrors(t)
}

// listenErrors records p's script errors and console.error calls.
func listenErrors(t *testing.T, p *page) {
	t.Helper()
	if err := chromedp.Listen(p.ctx, func(ev any) {
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
}

package realtime_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// inspection reads GET /inspect/api/nodes from a node, as the inspector
// page does.
func inspection(t *testing.T, base string, header map[string]string) realtime.Inspection {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/inspect/api/nodes", nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /inspect/api/nodes: %s %s", resp.Status, body)
	}
	var ins realtime.Inspection
	if err := json.Unmarshal(body, &ins); err != nil {
		t.Fatalf("GET /inspect/api/nodes: %v in %s", err, body)
	}
	return ins
}

// nodeIn returns the node id's view and its stats in ins, or ok false.
func nodeIn(t *testing.T, ins realtime.Inspection, id string) (realtime.NodeView, realtime.NodeStats, bool) {
	t.Helper()
	for _, n := range ins.Nodes {
		if n.ID == id {
			var st realtime.NodeStats
			if err := json.Unmarshal(n.Stats, &st); err != nil {
				t.Fatalf("stats of %s: %v in %s", id, err, n.Stats)
			}
			return n, st, true
		}
	}
	return realtime.NodeView{}, realtime.NodeStats{}, false
}

// Two nodes on one database see each other through the node registry, each
// with the other's figures: a stream opened on B shows on A's page, with
// its topic, within a few of B's beats.
func TestInspectorSeesTheOtherNodeThroughTheDatabase(t *testing.T) {
	db := storetest.NewDatabase(t)
	cfg := realtime.Config{NodeInterval: 200 * time.Millisecond}
	cfgA, cfgB := cfg, cfg
	cfgA.NodeID, cfgA.NodeRegion = "node-a", "ams"
	cfgB.NodeID, cfgB.NodeAddress = "node-b", "10.0.0.2:8080"
	a := startNode(t, db, cfgA)
	b := startNode(t, db, cfgB)

	var ins realtime.Inspection
	waitFor(t, "node A to see node B", func() bool {
		ins = inspection(t, a.URL, nil)
		_, _, ok := nodeIn(t, ins, "node-b")
		return ok
	})
	if ins.Node != "node-a" || len(ins.Nodes) == 0 || ins.Nodes[0].ID != "node-a" || !ins.Nodes[0].Self {
		t.Fatalf("A's inspection does not start with A itself: %+v", ins)
	}
	if self, _, _ := nodeIn(t, ins, "node-a"); self.Region != "ams" {
		t.Errorf("A's region: %q, want ams", self.Region)
	}
	if nb, _, _ := nodeIn(t, ins, "node-b"); nb.Self || nb.Stale || nb.Address != "10.0.0.2:8080" {
		t.Errorf("B as A sees it: %+v, want not self, not stale, address 10.0.0.2:8080", nb)
	}

	// A stream on B, on two selectors; A sees it in B's figures.
	s := ssetest.Open(t, b.URL+"/v1/events?topic=boards/7&topic=users/*", "")
	waitFor(t, "A to see B's stream and its topics", func() bool {
		_, st, ok := nodeIn(t, inspection(t, a.URL, nil), "node-b")
		return ok && st.Streams == 1 && st.TopicsDistinct == 2 && len(st.Topics) == 2
	})
	// B's own page counts it at once; A's own figures have no stream.
	_, stB, _ := nodeIn(t, inspection(t, b.URL, nil), "node-b")
	if stB.Streams != 1 || stB.Topics[0].Selector != "boards/7" || stB.Topics[0].Streams != 1 {
		t.Errorf("B's own figures: streams %d, topics %+v", stB.Streams, stB.Topics)
	}
	if !stB.Listener.Connected || stB.Log.RetentionSeconds != (24*time.Hour).Seconds() {
		t.Errorf("B's listener or log: %+v %+v", stB.Listener, stB.Log)
	}
	_, stA, _ := nodeIn(t, inspection(t, a.URL, nil), "node-a")
	if stA.Streams != 0 || len(stA.Topics) != 0 {
		t.Errorf("A's own figures: streams %d, topics %+v, want none", stA.Streams, stA.Topics)
	}

	// An event read by both: the log's head moves in the figures, and the
	// lag has an observation.
	if _, err := a.Store.Publish(context.Background(), "boards/7", "message", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	s.Next(t, 30*time.Second)
	waitFor(t, "B's figures to show the event", func() bool {
		_, st, _ := nodeIn(t, inspection(t, b.URL, nil), "node-b")
		return st.Log.NodeHead >= 1 && st.Log.Head >= 1 && st.Log.OldestSeq == 1 && st.Log.OldestAt != nil && st.Lag.Events >= 1 && st.Lag.P99 != nil
	})

	// The stream ends: its topics leave B's figures, on both pages.
	s.Close()
	waitFor(t, "A to see B's stream end", func() bool {
		_, st, ok := nodeIn(t, inspection(t, a.URL, nil), "node-b")
		return ok && st.Streams == 0 && st.TopicsDistinct == 0
	})
}

// A node that stops in order leaves the registry; one that stops beating
// without a word (it died, or lost its database) is shown stale after three
// of its intervals, and forgotten after store.ForgetAfter.
func TestInspectorShowsADeadNodeStaleThenForgetsIt(t *testing.T) {
	db := storetest.NewDatabase(t)
	a := startNode(t, db, realtime.Config{NodeID: "node-a", NodeInterval: 200 * time.Millisecond})
	b := startNode(t, db, realtime.Config{NodeID: "node-b", NodeInterval: 200 * time.Millisecond})
	c := startNode(t, db, realtime.Config{NodeID: "node-c", NodeInterval: 200 * time.Millisecond})
	waitFor(t, "A to see B and C", func() bool {
		ins := inspection(t, a.URL, nil)
		_, _, okB := nodeIn(t, ins, "node-b")
		_, _, okC := nodeIn(t, ins, "node-c")
		return okB && okC
	})

	// C stops in order: it leaves.
	c.CloseStreams()
	c.Stop()
	waitFor(t, "C to leave A's page", func() bool {
		_, _, ok := nodeIn(t, inspection(t, a.URL, nil), "node-c")
		return !ok
	})

	// B loses its database: its beats stop, and so does its leaving.
	b.Store.Close()
	waitFor(t, "A to show B stale", func() bool {
		nb, _, ok := nodeIn(t, inspection(t, a.URL, nil), "node-b")
		return ok && nb.Stale && nb.AgeSeconds >= 0.6
	})

	// Ten minutes later (moved back in time here), A's next beat forgets B.
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE livepg.nodes SET seen_at = now() - interval '11 minutes' WHERE id = 'node-b'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A to forget B", func() bool {
		_, _, ok := nodeIn(t, inspection(t, a.URL, nil), "node-b")
		return !ok
	})
}

// The inspector needs a token granting inspect on a node with a key: none
// gets 401, one without the grant 403, both with a JSON error body (and, for
// the page in a browser, a form to paste a token into). A node without Auth
// (the local mode) is open.
func TestInspectorNeedsATokenGrantingInspect(t *testing.T) {
	db := storetest.NewDatabase(t)
	auth, err := realtime.NewAuth("HS256", secret, mustSelectors(t, "private/*"))
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, db, realtime.Config{Auth: auth, NodeInterval: 200 * time.Millisecond})
	exp := time.Now().Add(time.Hour).Unix()
	inspector := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp, "inspect": true})
	reader := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp, "subscribe": []string{"*"}})
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	for _, path := range []string{"/inspect", "/inspect/api/nodes", "/inspect/v1/events?topic=nodes", "/inspect/api/tail?topic=boards/1"} {
		if got := status(t, "GET", n.URL+path, "", nil); got != http.StatusUnauthorized {
			t.Errorf("GET %s with no token: %d, want 401", path, got)
		}
		if got := status(t, "GET", n.URL+path, "", bearer(reader)); got != http.StatusForbidden {
			t.Errorf("GET %s with a token without inspect: %d, want 403", path, got)
		}
		if got := status(t, "GET", n.URL+path, "", map[string]string{"Authorization": "Bearer not-a-jwt"}); got != http.StatusUnauthorized {
			t.Errorf("GET %s with a bad token: %d, want 401", path, got)
		}
	}
	// The refusals say what is missing, as JSON; the page's, in a browser,
	// offer a form.
	resp, body := get(t, n.URL+"/inspect/api/nodes", bearer(reader))
	if resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `\"inspect\": true`) {
		t.Errorf("403 body: %s %q", resp.Header.Get("Content-Type"), body)
	}
	resp, body = get(t, n.URL+"/inspect", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `<form`) || !strings.Contains(body, `name="token"`) {
		t.Errorf("GET /inspect in a browser with no token: %s %q", resp.Status, body)
	}

	// With the grant: the page (locked to its origin), the JSON, the stream.
	resp, body = get(t, n.URL+"/inspect?token="+inspector, map[string]string{"Accept": "text/html"})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "inspect/inspect.js") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("GET /inspect with the token in the query: %s %v %q", resp.Status, resp.Header, body)
	}
	if ins := inspection(t, n.URL, bearer(inspector)); ins.Node != n.NodeID() {
		t.Errorf("inspection's node %q, want %q", ins.Node, n.NodeID())
	}
	s := ssetest.Open(t, n.URL+"/inspect/v1/events?topic=nodes&token="+inspector, "")
	ev := s.Next(t, 30*time.Second)
	var frame struct {
		Topic string              `json:"topic"`
		Data  realtime.Inspection `json:"data"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &frame); ev.Type != "nodes" || err != nil || frame.Topic != "nodes" || frame.Data.Node != n.NodeID() {
		t.Errorf("inspector stream's event: %+v (%v)", ev, err)
	}
	if got := status(t, "GET", n.URL+"/inspect/v1/events?topic=boards/1", "", bearer(inspector)); got != http.StatusBadRequest {
		t.Errorf("inspector stream on another topic: %d, want 400", got)
	}

	// The tail's check: a bad selector is 400; a private topic needs its
	// subscribe grant besides inspect.
	for path, want := range map[string]int{
		"/inspect/api/tail?topic=boards/1":  http.StatusOK,
		"/inspect/api/tail?topic=bad//sel":  http.StatusBadRequest,
		"/inspect/api/tail":                 http.StatusBadRequest,
		"/inspect/api/tail?topic=private/1": http.StatusForbidden,
	} {
		if got := status(t, "GET", n.URL+path, "", bearer(inspector)); got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	both := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp, "inspect": true, "subscribe": []string{"private/*"}})
	if got := status(t, "GET", n.URL+"/inspect/api/tail?topic=private/1", "", bearer(both)); got != http.StatusOK {
		t.Errorf("tail check of a private topic with its grant: %d, want 200", got)
	}

	// A node serves at most 16 inspector streams at once; the 17th is
	// sent away with 503 and Retry-After.
	for range 15 {
		ssetest.Open(t, n.URL+"/inspect/v1/events?topic=nodes&token="+inspector, "").Next(t, 30*time.Second)
	}
	if got := status(t, "GET", n.URL+"/inspect/v1/events?topic=nodes", "", bearer(inspector)); got != http.StatusServiceUnavailable {
		t.Errorf("a 17th inspector stream: %d, want 503", got)
	}

	// An inspector stream ends when its token expires, saying so.
	short := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": time.Now().Add(5 * time.Second).Unix(), "inspect": true})
	s.Close() // its place comes back once the node notices
	var expiring *ssetest.Stream
	waitFor(t, "a place among the inspector streams", func() bool {
		var err error
		expiring, err = ssetest.Dial(context.Background(), n.URL+"/inspect/v1/events?topic=nodes&token="+short, "")
		return err == nil
	})
	t.Cleanup(expiring.Close)
	deadline := time.After(60 * time.Second)
	for expired := false; !expired; {
		select {
		case ev, ok := <-expiring.Events():
			if !ok {
				t.Fatal("the inspector stream ended without event: token-expired")
			}
			expired = ev.Type == "token-expired"
		case <-deadline:
			t.Fatal("the inspector stream outlived its token by a minute")
		}
	}

	// The local mode: no Auth, no token needed.
	open := startNode(t, db, realtime.Config{NodeInterval: 200 * time.Millisecond})
	for _, path := range []string{"/inspect", "/inspect/api/nodes", "/inspect/inspect.js", "/inspect/inspect.css"} {
		if got := status(t, "GET", open.URL+path, "", nil); got != http.StatusOK {
			t.Errorf("local mode: GET %s: %d, want 200", path, got)
		}
	}
}

func get(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// The presence hook: a node given Config.PresenceCounts shows each topic's
// members in its figures, on its own page and to the others through the
// registry; a node without it shows no presence at all.
func TestInspectorShowsPresenceCountsFromItsHook(t *testing.T) {
	db := storetest.NewDatabase(t)
	counts := func(context.Context) (map[string]int, error) {
		return map[string]int{"boards/1": 3, "boards/2": 7}, nil
	}
	a := startNode(t, db, realtime.Config{NodeID: "with-presence", NodeInterval: 200 * time.Millisecond, PresenceCounts: counts})
	b := startNode(t, db, realtime.Config{NodeID: "without", NodeInterval: 200 * time.Millisecond})
	want := []realtime.PresenceCount{{Topic: "boards/2", Members: 7}, {Topic: "boards/1", Members: 3}}
	waitFor(t, "B to see A's presence counts", func() bool {
		_, st, ok := nodeIn(t, inspection(t, b.URL, nil), "with-presence")
		return ok && slices.Equal(st.Presence, want)
	})
	if _, st, _ := nodeIn(t, inspection(t, a.URL, nil), "with-presence"); !slices.Equal(st.Presence, want) {
		t.Errorf("A's own presence: %+v, want %+v", st.Presence, want)
	}
	ins := inspection(t, b.URL, nil)
	for _, n := range ins.Nodes {
		if n.ID == "without" && strings.Contains(string(n.Stats), `"presence"`) {
			t.Errorf("a node without presence shows some: %s", n.Stats)
		}
	}
}

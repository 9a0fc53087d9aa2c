package realtime_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// presenceConfig is a node's configuration with presence's intervals short
// enough for a test to see leaves soon (it waits on facts all the same).
func presenceConfig() realtime.Config {
	return realtime.Config{Presence: realtime.PresenceConfig{
		LeaseTTL: 3 * time.Second, Renew: 500 * time.Millisecond, Grace: time.Second, Flush: 50 * time.Millisecond,
	}}
}

// presenceChange is a presence event's data, or a snapshot's.
type presenceChange struct {
	Op      string         `json:"op"`
	At      string         `json:"at"`
	ID      string         `json:"id"`
	Sub     string         `json:"sub"`
	Meta    map[string]any `json:"meta"`
	Members []store.Member `json:"members"`
}

// presenceView is what a page knows of a topic's members, from its stream:
// the snapshot, then each join and leave after it, as livepg.js applies
// them. It records every change for the test to look at.
type presenceView struct {
	topic string
	s     *ssetest.Stream

	mu      sync.Mutex
	at      int64
	synced  bool
	members map[string]store.Member
	changes []presenceChange // joins and leaves applied, in order
	done    chan struct{}
}

func watchPresence(t *testing.T, streamURL, topic string) *presenceView {
	t.Helper()
	v := &presenceView{topic: topic, s: ssetest.Open(t, streamURL, ""), members: map[string]store.Member{}, done: make(chan struct{})}
	go v.run(t)
	t.Cleanup(func() { v.s.Close(); <-v.done })
	return v
}

func (v *presenceView) run(t *testing.T) {
	defer close(v.done)
	for ev := range v.s.Events() {
		if ev.Type != store.PresenceType {
			continue
		}
		var p struct {
			Topic string         `json:"topic"`
			Data  presenceChange `json:"data"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &p); err != nil || p.Topic != v.topic {
			continue
		}
		v.mu.Lock()
		c := p.Data
		switch c.Op {
		case "sync":
			v.members = map[string]store.Member{}
			for _, m := range c.Members {
				v.members[m.ID] = m
			}
			v.at = ssetest.Event{ID: c.At}.Seq()
			v.synced = true
		case "join", "leave":
			if ev.Seq() > v.at {
				if c.Op == "join" {
					v.members[c.ID] = store.Member{ID: c.ID, Sub: c.Sub}
				} else {
					delete(v.members, c.ID)
				}
				v.changes = append(v.changes, c)
			}
		}
		v.mu.Unlock()
	}
}

// has reports whether the view holds exactly the members with these subs.
func (v *presenceView) subs() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	subs := map[string]int{}
	for _, m := range v.members {
		subs[m.Sub]++
	}
	return subs
}

func (v *presenceView) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.members)
}

func (v *presenceView) changesOf(id string) []string { return v.changesOfSince(id, 0) }

// changesOfSince is changesOf from the mark'th change on (see mark).
func (v *presenceView) changesOfSince(id string, mark int) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var ops []string
	for _, c := range v.changes[mark:] {
		if c.ID == id {
			ops = append(ops, c.Op)
		}
	}
	return ops
}

// mark is how many changes the view has seen so far.
func (v *presenceView) mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.changes)
}

func (v *presenceView) hasLeft(id string) bool {
	for _, op := range v.changesOf(id) {
		if op == "leave" {
			return true
		}
	}
	return false
}

// joinURL is a stream of topic that joins its presence with key.
func joinURL(n *testNode, topic, key string, extra ...string) string {
	q := url.Values{"topic": {topic}, "presence": {topic}, "presenceKey": {key}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return n.URL + "/v1/events?" + q.Encode()
}

// memberIDOf reads the id a member got from the presence endpoint, by its
// meta's name.
func presenceOf(t *testing.T, n *testNode, topic string) realtime.PresenceSnapshot {
	t.Helper()
	resp, err := http.Get(n.URL + "/v1/presence?topic=" + url.QueryEscape(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/presence: %s %s", resp.Status, body)
	}
	var snap realtime.PresenceSnapshot
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

func idByName(t *testing.T, snap realtime.PresenceSnapshot, name string) string {
	t.Helper()
	for _, m := range snap.Members {
		var meta map[string]any
		_ = json.Unmarshal(m.Meta, &meta)
		if meta["name"] == name {
			return m.ID
		}
	}
	t.Fatalf("no member named %s in %+v", name, snap)
	return ""
}

// Two pages on two nodes see each other join; when one closes its page,
// the other sees it leave, and both nodes' GET /v1/presence agree.
func TestPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	a := startNode(t, db, presenceConfig())
	b := startNode(t, db, presenceConfig())
	const topic = "boards/7"

	ann := watchPresence(t, joinURL(a, topic, "ann-page-1", "presenceMeta", `{"name":"ann"}`), topic)
	bob := watchPresence(t, joinURL(b, topic, "bob-page-1", "presenceMeta", `{"name": "bob"}`), topic)
	waitFor(t, "both pages see two members", func() bool { return ann.count() == 2 && bob.count() == 2 })
	for _, n := range []*testNode{a, b} {
		waitFor(t, "GET /v1/presence lists two members", func() bool { return len(presenceOf(t, n, topic).Members) == 2 })
	}
	annID := idByName(t, presenceOf(t, b, topic), "ann")
	if got := b.PresenceCounts()[topic]; got != 2 {
		t.Fatalf("PresenceCounts()[%s] = %d, want 2", topic, got)
	}
	if got := metric(t, a.Node, "livepg_presence_members"); got != 2 {
		t.Fatalf("livepg_presence_members on node a: %v, want 2", got)
	}
	if got := metric(t, a.Node, "livepg_presence_local_members"); got != 1 {
		t.Fatalf("livepg_presence_local_members on node a: %v, want 1", got)
	}
	if got := metric(t, a.Node, "livepg_presence_flushes_total"); got < 1 {
		t.Fatalf("livepg_presence_flushes_total on node a: %v, want at least 1", got)
	}

	// From SQL too.
	var n int
	if err := a.Store.Pool.QueryRow(context.Background(), `SELECT count(*) FROM livepg.presence_members($1)`, topic).Scan(&n); err != nil || n != 2 {
		t.Fatalf("livepg.presence_members: %d, %v; want 2", n, err)
	}

	ann.s.Close()
	waitFor(t, "bob sees ann leave", func() bool { return bob.hasLeft(annID) })
	if bob.count() != 1 {
		t.Fatalf("bob sees %d members after ann left, want 1", bob.count())
	}
	waitFor(t, "node a's GET /v1/presence lists one member", func() bool { return len(presenceOf(t, a, topic).Members) == 1 })
	if ops := bob.changesOf(annID); strings.Join(ops, ",") != "join,leave" && strings.Join(ops, ",") != "leave" {
		t.Fatalf("bob saw ann's changes %v, want at most one join and one leave", ops)
	}
}

// A page whose stream ends and that reconnects to another node within the
// grace period stays a member: nobody sees it leave and join again.
func TestPresenceReconnectWithinGraceDoesNotFlicker(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	cfg := presenceConfig()
	cfg.Presence.Grace = 6 * time.Second // the mover's join on b must be written within it, on a loaded machine too
	a := startNode(t, db, cfg)
	b := startNode(t, db, cfg)
	const topic = "boards/8"

	observer := watchPresence(t, joinURL(b, topic, "observer-1", "presenceMeta", `{"name":"observer"}`), topic)
	mover := ssetest.Open(t, joinURL(a, topic, "mover-page", "presenceMeta", `{"name":"mover"}`), "")
	marker := ssetest.Open(t, joinURL(a, topic, "marker-page", "presenceMeta", `{"name":"marker"}`), "")
	waitFor(t, "three members", func() bool { return observer.count() == 3 })
	snap := presenceOf(t, b, topic)
	moverID, markerID := idByName(t, snap, "mover"), idByName(t, snap, "marker")
	mark := observer.mark()

	// The mover's stream ends on a, and it comes back on b with its key:
	// the same member.
	mover.Close()
	back := watchPresence(t, joinURL(b, topic, "mover-page", "presenceMeta", `{"name":"mover"}`), topic)
	waitFor(t, "the mover's new stream has its snapshot", func() bool { return back.count() == 3 })
	// The marker closes after the mover: its grace on a runs out later, so
	// once its leave is seen, a's leave of the mover (had it written one)
	// would have been seen before it.
	marker.Close()
	waitFor(t, "the observer sees the marker leave", func() bool { return observer.hasLeft(markerID) })
	if ops := observer.changesOfSince(moverID, mark); len(ops) != 0 {
		t.Fatalf("the observer saw the mover's %v; a reconnect within the grace period must not leave and join", ops)
	}
	// Node a learns of the marker's leave when its own reader reads it from
	// the log, which may be a moment after node b did.
	waitFor(t, "node a to list 2 members (observer, mover)", func() bool { return len(presenceOf(t, a, topic).Members) == 2 })
}

// A node that stops renewing its lease (here: one that no longer runs,
// written as a dead node leaves its rows) has its members removed by a
// live node, which publishes their leaves once.
func TestPresenceDeadNodesMembersLeave(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	a := startNode(t, db, presenceConfig())
	b := startNode(t, db, presenceConfig())
	const topic = "boards/9"
	ctx := context.Background()
	// A node that joined two members and died: its lease ran out.
	if _, err := a.Store.PresenceRenew(ctx, "dead-node", time.Second); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Store.PresenceFlush(ctx, "dead-node", []store.Member{
		{Topic: topic, ID: "ghost1", Sub: "g1"}, {Topic: topic, ID: "ghost2", Sub: "g2"},
	}, nil); err != nil || !ok {
		t.Fatalf("flush as the dead node: %v %v", ok, err)
	}
	observer := watchPresence(t, joinURL(a, topic, "observer-9", "presenceMeta", `{"name":"observer"}`), topic)
	waitFor(t, "the observer sees both ghosts leave", func() bool {
		return observer.hasLeft("ghost1") && observer.hasLeft("ghost2")
	})
	var leaves int
	if err := a.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM livepg.events WHERE type = 'presence' AND data->>'op' = 'leave'`).Scan(&leaves); err != nil {
		t.Fatal(err)
	}
	if leaves != 2 {
		t.Fatalf("%d leave events in the log, want 2: two live nodes expired the dead one's lease, and only one may publish", leaves)
	}
	_ = b
}

// Every bound is checked before anything is written: a clear 4xx.
func TestPresenceBounds(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	cfg := presenceConfig()
	cfg.Presence.MaxMembers = 2
	cfg.Presence.JoinRate = -1
	cfg.Presence.MaxTopics = 4
	n := startNode(t, db, cfg)
	cfg.Presence.JoinRate = 3
	limited := startNode(t, db, cfg)
	get := func(n *testNode, q string) (int, string) {
		resp, err := http.Get(n.URL + "/v1/events?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return 200, ""
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	big := `{"name":"` + strings.Repeat("x", 1100) + `"}`
	for _, c := range []struct {
		q    string
		want int
	}{
		{"topic=b/1&presence=b/1&presenceMeta=" + url.QueryEscape(big), http.StatusRequestEntityTooLarge},
		{"topic=b/1&presence=b/1&presenceMeta=" + url.QueryEscape(`[1,2]`), http.StatusBadRequest},
		{"topic=b/1&presence=b/1&presenceMeta=" + url.QueryEscape(`{"a":`), http.StatusBadRequest},
		{"topic=b/1&presence=b/2", http.StatusBadRequest},
		{"topic=b/*&presence=b/*", http.StatusBadRequest},
		{"topic=b/1&presence=b/1&presenceKey=short", http.StatusBadRequest},
		{"topic=b/*&presence=b/1&presence=b/2&presence=b/3&presence=b/4&presence=b/5", http.StatusBadRequest},
	} {
		if got, body := get(n, c.q); got != c.want || !strings.Contains(body, `"error"`) {
			t.Errorf("GET /v1/events?%s: %d %s, want %d with a JSON error", truncate(c.q, 80), got, body, c.want)
		}
	}
	// Four joins at once, more than the client's three per second.
	if got, body := get(limited, "topic=b/*&presence=b/1&presence=b/2&presence=b/3&presence=b/4"); got != http.StatusTooManyRequests {
		t.Errorf("four joins on a node allowing three per second: %d %s, want 429", got, body)
	}
	if snap := presenceOf(t, n, "b/1"); len(snap.Members) != 0 {
		t.Fatalf("refused joins left members: %+v", snap.Members)
	}

	// The topic holds two members; a third is refused.
	one := watchPresence(t, joinURL(n, "full/1", "member-one"), "full/1")
	_ = ssetest.Open(t, joinURL(n, "full/1", "member-two"), "")
	waitFor(t, "two members", func() bool { return one.count() == 2 })
	if got, body := get(n, "topic=full/1&presence=full/1&presenceKey=member-three"); got != http.StatusConflict {
		t.Fatalf("a third member: %d %s, want 409", got, body)
	}
	// The same page again (another tab of it, a reconnect) is no new member.
	_ = ssetest.Open(t, joinURL(n, "full/1", "member-two"), "")

	// Nobody forges a member through publishing.
	resp, err := http.Post(n.URL+"/v1/publish", "application/json", strings.NewReader(`{"topic":"full/1","type":"presence","data":{"op":"join","id":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("publishing type presence over HTTP: %s, want 400", resp.Status)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// A node whose lease ran out while it still holds its pages (stalled past
// the lease: here its lease is moved into the past) has its members
// removed by another node; at its next renewal it finds its lease gone
// and joins them again: the members come back for everyone.
func TestPresenceNodeThatLostItsLeaseJoinsItsMembersAgain(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	a := startNode(t, db, presenceConfig())
	b := startNode(t, db, presenceConfig())
	const topic = "boards/10"
	observer := watchPresence(t, joinURL(b, topic, "observer-10", "presenceMeta", `{"name":"observer"}`), topic)
	_ = ssetest.Open(t, joinURL(a, topic, "stalled-page", "presenceMeta", `{"name":"stalled"}`), "")
	waitFor(t, "two members", func() bool { return observer.count() == 2 })
	id := idByName(t, presenceOf(t, b, topic), "stalled")

	// Node a's lease ends, and a node expires it, in one transaction (else
	// node a, which renews every 500 ms, could renew it first).
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, a.Store.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE livepg.presence_nodes SET expires_at = now() - interval '1 minute'
			WHERE node = (SELECT node FROM livepg.presence WHERE id = $1)`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT livepg.presence_renew('a-reaper', interval '1 minute')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the observer sees the member leave", func() bool { return observer.hasLeft(id) })
	waitFor(t, "node a joins it again", func() bool {
		ops := observer.changesOf(id)
		return len(ops) > 0 && ops[len(ops)-1] == "join" && observer.count() == 2
	})
	waitFor(t, "node a lists both members", func() bool { return len(presenceOf(t, a, topic).Members) == 2 })
}

// A member's identity is its token's sub: without one, a node that allows
// no anonymous members refuses the join (401, JSON); private topics'
// presence needs the token that reading them does.
func TestPresenceIdentityIsTheTokensSub(t *testing.T) {
	t.Parallel()
	const secret = "a-presence-test-secret-of-32-bytes!"
	auth, err := realtime.NewAuth("HS256", secret, mustSelectors(t, "private/*"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := presenceConfig()
	cfg.Auth = auth
	n := startNode(t, storetest.NewDatabase(t), cfg)
	hs := func(claims jwt.MapClaims) string { return token(t, jwt.SigningMethodHS256, []byte(secret), claims) }
	exp := time.Now().Add(time.Hour).Unix()
	status := func(u string) int {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), `"error"`) {
				t.Errorf("%s: %s without a JSON error", u, body)
			}
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, url string
		want      int
	}{
		{"no token", joinURL(n, "public/1", "page-key-1"), http.StatusUnauthorized},
		{"a token without sub", joinURL(n, "public/1", "page-key-1", "token", hs(jwt.MapClaims{"exp": exp})), http.StatusUnauthorized},
		{"a private topic, a token with sub not granting it", joinURL(n, "private/1", "page-key-1", "token", hs(jwt.MapClaims{"exp": exp, "sub": "ann"})), http.StatusForbidden},
	} {
		if got := status(c.url); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	ann := watchPresence(t, joinURL(n, "private/1", "page-key-1", "token", hs(jwt.MapClaims{"exp": exp, "sub": "ann", "subscribe": []string{"private/*"}})), "private/1")
	waitFor(t, "ann is a member", func() bool { return ann.subs()["ann"] == 1 })
	resp, err := http.Get(n.URL + "/v1/presence?topic=private/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/presence of a private topic without a token: %s, want 401", resp.Status)
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// presenceWatch follows a topic's members on a stream as a page does: the
// snapshot, then each join and leave after its position.
type presenceWatch struct {
	mu      sync.Mutex
	at      int64
	members map[string]string // id → sub
	ops     []string          // "join <sub>" / "leave <sub>", after the snapshot
}

func watchMembers(t *testing.T, streamURL string) *presenceWatch {
	t.Helper()
	s := ssetest.Open(t, streamURL, "")
	w := &presenceWatch{members: map[string]string{}}
	go func() {
		for ev := range s.Events() {
			if ev.Type != "presence" {
				continue
			}
			var p struct {
				Data struct {
					Op, At, ID, Sub string
					Members         []struct{ ID, Sub string }
				}
			}
			if json.Unmarshal([]byte(ev.Data), &p) != nil {
				continue
			}
			w.mu.Lock()
			switch d := p.Data; d.Op {
			case "sync":
				w.members = map[string]string{}
				for _, m := range d.Members {
					w.members[m.ID] = m.Sub
				}
				w.at = ssetest.Event{ID: d.At}.Seq()
			case "join", "leave":
				if ev.Seq() > w.at {
					if d.Op == "join" {
						w.members[d.ID] = d.Sub
					} else {
						delete(w.members, d.ID)
					}
					w.ops = append(w.ops, d.Op+" "+d.Sub)
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *presenceWatch) has(sub string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.members {
		if s == sub {
			return true
		}
	}
	return false
}

func (w *presenceWatch) saw(op string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range w.ops {
		if o == op {
			return true
		}
	}
	return false
}

func (w *presenceWatch) opsSince(mark int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ops[mark:]...)
}

func (w *presenceWatch) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ops)
}

// presenceStream is a stream of room that joins its presence as sub, from
// a page whose key is key.
func presenceStream(t *testing.T, base, room, sub, key string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sub": sub}).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	return base + "/v1/events?" + url.Values{"topic": {room}, "presence": {room}, "presenceKey": {key}, "token": {tok}}.Encode()
}

// A node is SIGKILLed with two members on it. One page reconnects to the
// other node at once, with its key: it stays, nobody sees it leave. The
// other page never comes back: once the dead node's lease runs out, a live
// node removes it and every page sees it leave.
func TestPresenceKilledNodesMembersLeave(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	// A lease of 8s renewed every second: the page that reconnects has
	// about 7s to join again before the dead node's members are removed.
	env := []string{"LIVEPG_PRESENCE_TTL=8s", "LIVEPG_PRESENCE_RENEW=1s", "LIVEPG_PRESENCE_GRACE=2s"}
	a, b := startProcess(t, db, env...), startProcess(t, db, env...)
	const room = "rooms/1"

	bob := watchMembers(t, presenceStream(t, b.URL, room, "bob", "bob-page-key"))
	ann := ssetest.Open(t, presenceStream(t, a.URL, room, "ann", "ann-page-key"), "")
	_ = ssetest.Open(t, presenceStream(t, a.URL, room, "carl", "carl-page-key"), "")
	waitFor(t, "bob sees ann, carl and himself", func() bool { return bob.has("ann") && bob.has("carl") && bob.has("bob") })
	mark := bob.mark()

	a.signal(t, syscall.SIGKILL, 30*time.Second)
	killed := time.Now()
	ann.Close()
	_ = watchMembers(t, presenceStream(t, b.URL, room, "ann", "ann-page-key"))

	deadline := time.Now().Add(2 * time.Minute)
	for !bob.saw("leave carl") {
		if time.Now().After(deadline) {
			t.Fatalf("bob never saw carl leave; saw %v", bob.opsSince(mark))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("carl left %v after node a was killed (lease 8s, renewed every 1s)", time.Since(killed).Round(100*time.Millisecond))
	if ops := bob.opsSince(mark); len(ops) != 1 || ops[0] != "leave carl" {
		t.Fatalf("bob saw %v after the kill, want only carl's leave: ann reconnected to b within the lease and must not leave and join", ops)
	}
	if !bob.has("ann") || !bob.has("bob") || bob.has("carl") {
		t.Fatalf("bob's member list %v, want ann and bob", bob.members)
	}
	resp, err := http.Get(b.URL + "/v1/presence?topic=" + url.QueryEscape(room))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct{ Members []struct{ Sub string } }
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil || len(snap.Members) != 2 {
		t.Fatalf("GET /v1/presence on b: %+v, %v; want ann and bob", snap, err)
	}
}

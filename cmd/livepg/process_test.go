package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// livepgBinary is the livepg command built as the Dockerfile builds it, for
// the tests that run it as a real process, to kill it.
func livepgBinary(t *testing.T) string {
	t.Helper()
	bin, _ := buildAsDockerfile(t)
	return bin
}

// process is a livepg server running as its own process.
type process struct {
	cmd  *exec.Cmd
	URL  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit, once done is closed
}

func startProcess(t *testing.T, db string, env ...string) *process {
	t.Helper()
	cmd := exec.Command(livepgBinary(t))
	cmd.Env = append(os.Environ(), "DATABASE_URL="+db, "PORT=0", "LIVEPG_TOKEN_KEY="+testTokenKey,
		"LIVEPG_SHUTDOWN_TIMEOUT=5s")
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	select {
	case p.URL = <-found:
	case <-p.done:
		t.Fatalf("livepg exited at start: %v", p.err)
	case <-time.After(60 * time.Second):
		t.Fatal("livepg did not start")
	}
	waitReady(t, p.URL)
	return p
}

// signal sends sig and waits for the process to exit, failing if it is
// still running after limit.
func (p *process) signal(t *testing.T, sig syscall.Signal, limit time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("livepg still running %s after %v", limit, sig)
	}
}

// publishUntil writes numbered events on topic through SQL until stop.
func publishUntil(t *testing.T, db, topic string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := pool.Exec(ctx, `SELECT livepg.publish($1, to_jsonb($2::int))`, topic, i); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; pool.Close() }) }
	t.Cleanup(stop)
	return stop
}

// receiveAll checks that f received exactly the committed events on topic,
// in order, once.
func receiveAll(t *testing.T, name string, f *ssetest.Follower, db, topic string) int {
	t.Helper()
	conn := mustConn(t, db)
	storetest.NumberPending(t, conn)
	rows, err := conn.Query(context.Background(), `SELECT seq FROM livepg.events WHERE topic = $1 ORDER BY seq`, topic)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(want) == 0 {
		t.Fatalf("committed events: %d, %v", len(want), err)
	}
	f.Expect(t, name, want)
	return len(want)
}

// A node is killed outright with clients attached; they reconnect to the
// other node with Last-Event-ID and miss nothing.
//
// In each bus mode; in the logical mode the node killed is the decoding
// leader, so the other node must take the slot over too.
func TestKilledNodeClientsResumeOnTheOther(t *testing.T) {
	t.Parallel()
	for _, bus := range storetest.Buses {
		t.Run(bus, func(t *testing.T) {
			t.Parallel()
			testKilledNodeClientsResumeOnTheOther(t, storetest.NewDatabaseBus(t, bus), false)
		})
	}
	t.Run(store.BusLogical, func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		db := storetest.NewDatabaseOn(t, storetest.NewLogicalCluster(t).URL())
		s, err := store.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetBus(ctx, store.BusLogical); err != nil {
			t.Fatal(err)
		}
		s.Close()
		testKilledNodeClientsResumeOnTheOther(t, db, true)
	})
}

// isDecodingLeader reads livepg_bus_decoding_leader from a node's /metrics.
func isDecodingLeader(t *testing.T, p *process) bool {
	t.Helper()
	resp, err := http.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(body), "\nlivepg_bus_decoding_leader 1\n")
}

func testKilledNodeClientsResumeOnTheOther(t *testing.T, db string, logical bool) {
	a, b := startProcess(t, db), startProcess(t, db)
	if logical {
		waitFor(t, "a decoding leader", func() bool { return isDecodingLeader(t, a) || isDecodingLeader(t, b) })
		if isDecodingLeader(t, a) {
			a, b = b, a // b, the node killed, is the leader
		}
	}
	var followers []*ssetest.Follower
	for range 3 {
		followers = append(followers, ssetest.Follow(t, []string{b.URL, a.URL}, "/v1/events?topic=kill", headID(t, db)))
	}
	waitFor(t, "streams open", func() bool {
		return followers[0].Connected() && followers[1].Connected() && followers[2].Connected()
	})
	stop := publishUntil(t, db, "kill")
	time.Sleep(300 * time.Millisecond)
	b.signal(t, syscall.SIGKILL, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	stop()
	if logical {
		waitFor(t, "node A leads the decoding", func() bool { return isDecodingLeader(t, a) })
		waitFor(t, "every event numbered", func() bool {
			var pending int
			if err := mustConn(t, db).QueryRow(context.Background(), `SELECT count(*) FROM livepg.pending`).Scan(&pending); err != nil {
				t.Fatal(err)
			}
			return pending == 0
		})
	}
	for i, f := range followers {
		n := receiveAll(t, fmt.Sprint("follower ", i), f, db, "kill")
		if f.Reconnects() == 0 {
			t.Fatalf("follower %d never reconnected: the kill did not reach it", i)
		}
		if i == 0 {
			t.Logf("node B killed; %d events each, %d reconnects", n, f.Reconnects())
		}
	}
}

// A rolling deploy: each node in turn gets SIGTERM, ends its streams with a
// retry hint and exits within its shutdown timeout, after a new node has
// taken its place; clients move between nodes and miss nothing.
func TestRollingDeployLosesNothing(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	a, b := startProcess(t, db), startProcess(t, db)
	// The followers' node lists stand in for Fly's proxy: the nodes up.
	followers := []*ssetest.Follower{
		ssetest.Follow(t, []string{a.URL, b.URL}, "/v1/events?topic=deploy", headID(t, db)),
		ssetest.Follow(t, []string{b.URL, a.URL}, "/v1/events?topic=deploy", headID(t, db)),
	}
	waitFor(t, "streams open", func() bool { return followers[0].Connected() && followers[1].Connected() })
	stop := publishUntil(t, db, "deploy")
	time.Sleep(200 * time.Millisecond)

	a.signal(t, syscall.SIGTERM, 15*time.Second) // LIVEPG_SHUTDOWN_TIMEOUT=5s, with room to exit
	a2 := startProcess(t, db)
	for _, f := range followers {
		f.SetNodes([]string{b.URL, a2.URL})
	}
	time.Sleep(200 * time.Millisecond)
	b.signal(t, syscall.SIGTERM, 15*time.Second)
	time.Sleep(200 * time.Millisecond)
	stop()
	for i, f := range followers {
		receiveAll(t, fmt.Sprint("follower ", i), f, db, "deploy")
		if f.Reconnects() == 0 {
			t.Fatalf("follower %d never moved", i)
		}
	}
}

// headID is the log's head as an event id: followers start from it, as a
// page starts from its snapshot's head. A follower starting from nothing
// would have no resume point if its first stream ended before its first
// event (a node stopped early on a slow machine), and would rightly resume
// from the head then, past what was committed meanwhile.
func headID(t *testing.T, db string) string {
	t.Helper()
	var head string
	if err := mustConn(t, db).QueryRow(context.Background(), `SELECT livepg.head()`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: it waits on a fact, it asserts no timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

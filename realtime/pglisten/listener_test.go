package pglisten_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/pglisten"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// heard collects the payloads a listener's handler was called with.
type heard struct {
	mu       sync.Mutex
	payloads []string
}

func (h *heard) handle(p string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.payloads = append(h.payloads, p)
}

func (h *heard) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.payloads...)
}

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

// run starts l and stops it (waiting for it) when the test ends.
func run(t *testing.T, l *pglisten.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// A listener calls its one handler once when its LISTEN is in place (the
// empty payload: read the backlog), then with every notification sent on
// its channel, and never with its own wiring probes; once it heard a probe
// sent the other way (SendProbe), it is ready.
func TestListenerHandsEveryNotificationToItsHandlerAndProvesItsWiring(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	sender, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close(context.Background()) })
	var sendMu sync.Mutex // one pgx.Conn, used by the test and the probe
	send := func(ctx context.Context, payload string) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		_, err := sender.Exec(ctx, `SELECT pg_notify('chan', $1)`, payload)
		return err
	}

	var h heard
	l := pglisten.New(pglisten.Config{
		Connect:       func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, db) },
		Channel:       "chan",
		Handle:        h.handle,
		SendProbe:     send,
		ProbeInterval: 20 * time.Millisecond,
	})
	if err := l.Ready(); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("before Run, Ready = %v; want not connected", err)
	}
	run(t, l)
	waitFor(t, "ready", func() bool { return l.Ready() == nil })
	if got := h.list(); len(got) == 0 || got[0] != "" {
		t.Fatalf("first call %q, want the empty payload that follows LISTEN", got)
	}
	for _, p := range []string{"a", "b", ""} {
		if err := send(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three notifications", func() bool { return len(h.list()) >= 4 })
	got := h.list()
	if strings.Join(got, ",") != ",a,b," {
		t.Fatalf("handler called with %q; want the LISTEN wake-up, then a, b and the empty payload, and no probe", got)
	}
	if !l.WiringProven() || !l.Connected() || l.Reconnects() != 0 {
		t.Fatalf("WiringProven %v, Connected %v, Reconnects %d", l.WiringProven(), l.Connected(), l.Reconnects())
	}
}

// Probes that the listener does not hear (sent to another database) keep it
// unready, with the cause and the fix.
func TestListenerThatDoesNotHearItsProbesIsNotReady(t *testing.T) {
	t.Parallel()
	db, other := storetest.NewDatabase(t), storetest.NewDatabase(t)
	sender, err := pgx.Connect(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close(context.Background()) })
	var h heard
	l := pglisten.New(pglisten.Config{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, db) },
		Channel: "chan",
		Handle:  h.handle,
		SendProbe: func(ctx context.Context, payload string) error {
			_, err := sender.Exec(ctx, `SELECT pg_notify('chan', $1)`, payload)
			return err
		},
		ProbeInterval: 20 * time.Millisecond,
		ProbeTimeout:  50 * time.Millisecond,
	})
	run(t, l)
	waitFor(t, "a failed probe", func() bool {
		err := l.Ready()
		return err != nil && strings.Contains(err.Error(), "LISTEN_DATABASE_URL")
	})
	if !l.Connected() || l.WiringProven() {
		t.Fatalf("Connected %v, WiringProven %v; want connected and unproven", l.Connected(), l.WiringProven())
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// h2cClient is an HTTP/2-over-cleartext client (prior knowledge, as Fly's
// proxy speaks to an app with h2_backend); dials counts its connections.
// streamWindow, when not 0, is the flow-control window it grants each
// stream: what the node may send on a stream that is not read.
func h2cClient(t *testing.T, dials *atomic.Int64, streamWindow int) *http.Client {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	if streamWindow > 0 {
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: streamWindow}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// openH2C opens n streams on url through client, the first alone (so that
// the connection is up before the others share it); each is HTTP/2.
func openH2C(t *testing.T, client *http.Client, url string, n int) []*ssetest.Stream {
	t.Helper()
	var streams []*ssetest.Stream
	for range n {
		s, err := ssetest.DialClient(context.Background(), client, url, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		if s.Resp.ProtoMajor != 2 {
			t.Fatalf("stream served over %s, want HTTP/2", s.Resp.Proto)
		}
		streams = append(streams, s)
	}
	return streams
}

// publishSeqs publishes n events on topic (data: their index and pad) and
// returns their seqs.
func publishSeqs(t *testing.T, base, topic string, n int, pad string) []int64 {
	t.Helper()
	var seqs []int64
	for i := range n {
		resp, body := post(t, base+"/v1/publish", fmt.Sprintf(`{"topic":%q,"data":{"i":%d,"pad":%q}}`, topic, i, pad), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %d: %d %s", i, resp.StatusCode, body)
		}
		seq := seqOf(t, body)
		seqs = append(seqs, seq)
	}
	return seqs
}

func seqOf(t *testing.T, publishAnswer string) int64 {
	t.Helper()
	_, rest, ok := strings.Cut(publishAnswer, `"seq":`)
	if !ok {
		t.Fatalf("publish answered %s", publishAnswer)
	}
	end := strings.IndexAny(rest, ",}")
	seq, err := strconv.ParseInt(strings.TrimSpace(rest[:end]), 10, 64)
	if err != nil {
		t.Fatalf("publish answered %s", publishAnswer)
	}
	return seq
}

// expectSeqs reads len(want) message events from s and checks they are
// want, in order, each once.
func expectSeqs(t *testing.T, name string, s *ssetest.Stream, want []int64) []ssetest.Event {
	t.Helper()
	var got []ssetest.Event
	for range want {
		ev := s.Next(t, 60*time.Second)
		if ev.Type != "message" {
			t.Fatalf("%s: got %+v, want a message", name, ev)
		}
		got = append(got, ev)
	}
	for i, ev := range got {
		if ev.Seq() != want[i] {
			var seqs []int64
			for _, e := range got {
				seqs = append(seqs, e.Seq())
			}
			t.Fatalf("%s: got seqs %v, want %v", name, seqs, want)
		}
	}
	return got
}

// Streams over one h2c connection each receive every event in order,
// exactly once; a stream resuming with Last-Event-ID on the same
// connection gets what followed; an HTTP/1.1 stream beside them is still
// served as before.
func TestH2CStreamsShareOneConnection(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0"})
	waitReady(t, base)
	var dials atomic.Int64
	client := h2cClient(t, &dials, 0)
	streams := openH2C(t, client, base+"/v1/events?topic=h2", 5)
	plain := ssetest.Open(t, base+"/v1/events?topic=h2", "")
	if plain.Resp.ProtoMajor != 1 {
		t.Fatalf("a plain client's stream served over %s, want HTTP/1.1", plain.Resp.Proto)
	}

	seqs := publishSeqs(t, base, "h2", 20, "")
	var tenth string
	for i, s := range streams {
		got := expectSeqs(t, fmt.Sprintf("h2c stream %d", i), s, seqs)
		tenth = got[9].ID
	}
	expectSeqs(t, "HTTP/1.1 stream", plain, seqs)

	resumed, err := ssetest.DialClient(context.Background(), client, base+"/v1/events?topic=h2", tenth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resumed.Close)
	expectSeqs(t, "h2c stream resumed from the 10th event", resumed, seqs[10:])

	// Nothing twice: the next event on every stream is the next one
	// published.
	marker := publishSeqs(t, base, "h2", 1, "marker")
	for i, s := range append(streams, resumed, plain) {
		expectSeqs(t, fmt.Sprintf("stream %d after the marker", i), s, marker)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the h2c client opened %d connections for 6 streams, want 1", n)
	}
}

// A stream whose client stops reading on a shared h2c connection gets no
// more than its flow-control window: the node cuts it off after the write
// timeout (write_timeout), as it cuts a stuck HTTP/1.1 stream, and its
// siblings on the same connection receive every event meanwhile and after.
func TestH2CSlowStreamIsCutWithoutStoppingItsSiblings(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_WRITE_TIMEOUT": "1s"})
	waitReady(t, base)
	var dials atomic.Int64
	client := h2cClient(t, &dials, 32<<10) // a 32 KiB window per stream
	const topicURL = "/v1/events?topic=sibling"

	slowReq, _ := http.NewRequest(http.MethodGet, base+topicURL, nil)
	slow, err := client.Do(slowReq)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()
	if slow.StatusCode != http.StatusOK || slow.ProtoMajor != 2 {
		t.Fatalf("slow stream: %s over %s", slow.Status, slow.Proto)
	}
	siblings := openH2C(t, client, base+topicURL, 3)

	// 60 events of 4 KiB: 240 KiB, far past the slow stream's window.
	pad := strings.Repeat("x", 4<<10)
	seqs := publishSeqs(t, base, "sibling", 60, pad)
	for i, s := range siblings {
		expectSeqs(t, fmt.Sprintf("sibling %d", i), s, seqs)
	}
	waitFor(t, "the slow stream cut off for write_timeout", func() bool {
		return metricValue(t, base, `livepg_streams_closed_total{reason="write_timeout"}`) >= 1
	})
	more := publishSeqs(t, base, "sibling", 5, "")
	for i, s := range siblings {
		expectSeqs(t, fmt.Sprintf("sibling %d after the cut", i), s, more)
	}

	// The slow stream holds what its window let through, in order, and
	// then ends with the stream's reset: it is not left open.
	body, err := io.ReadAll(slow.Body)
	if err == nil {
		t.Fatalf("the slow stream ended cleanly after %d bytes; want it reset (cut off)", len(body))
	}
	var ids []int64
	for line := range bytes.Lines(body) {
		if id, ok := bytes.CutPrefix(line, []byte("id: ")); ok {
			seq, _, _ := strings.Cut(string(bytes.TrimSpace(id)), "-")
			n, _ := strconv.ParseInt(seq, 10, 64)
			ids = append(ids, n)
		}
	}
	if len(ids) >= len(seqs) {
		t.Fatalf("the slow stream received all %d events: its window did not hold them back", len(ids))
	}
	for i, id := range ids {
		if id != seqs[i] {
			t.Fatalf("the slow stream got %v, want a prefix of %v", ids, seqs)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the h2c client opened %d connections for 4 streams, want 1", n)
	}
}

// metricValue reads one sample of the node's /metrics (0 when absent).
func metricValue(t *testing.T, base, sample string) float64 {
	t.Helper()
	_, body := get(t, base+"/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", sample, line)
			}
			return f
		}
	}
	return 0
}

// The node's stream limits apply to each HTTP/2 stream as to each HTTP/1.1
// request: one client multiplexing on one connection gets 429 past
// LIVEPG_MAX_STREAMS_PER_CLIENT. And its connection bound counts
// connections (descriptors), not the streams an HTTP/2 connection carries:
// with 3 streams on one connection and the bound at 4, a new connection is
// still served.
func TestH2CStreamLimitsApplyPerStream(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0",
		"LIVEPG_MAX_STREAMS_PER_CLIENT": "3", "LIVEPG_MAX_CONNECTIONS": "4"})
	waitReady(t, base)
	var dials atomic.Int64
	client := h2cClient(t, &dials, 0)
	openH2C(t, client, base+"/v1/events?topic=lim", 3)
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/events?topic=lim", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.ProtoMajor != 2 {
		t.Fatalf("4th stream of the client over one h2c connection: %s over %s %s, want 429", resp.Status, resp.Proto, body)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the h2c client opened %d connections, want 1", n)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	r, err := fresh.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("a new connection beside one h2c connection carrying 3 streams (bound 4): %s, want 200", r.Status)
	}
}

// With LIVEPG_H2C=off the node speaks HTTP/1.1 only: an HTTP/2 preface
// gets an HTTP/1.1 answer, and an h2c client's request fails. With it on,
// the preface gets the server's SETTINGS frame, which advertises
// LIVEPG_H2C_MAX_STREAMS as the connection's most concurrent streams.
func TestH2COffRefusesHTTP2(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	for _, setting := range []string{"on", "off"} {
		t.Run("LIVEPG_H2C="+setting, func(t *testing.T) {
			base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_H2C": setting, "LIVEPG_H2C_MAX_STREAMS": "7"})
			waitReady(t, base)
			u, _ := url.Parse(base)
			c, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			head := make([]byte, 9)
			if _, err := io.ReadFull(br, head); err != nil {
				t.Fatalf("answer to the HTTP/2 preface: %v", err)
			}
			isHTTP1 := bytes.HasPrefix(head, []byte("HTTP/1.1 "))
			isSettings := head[3] == 0x4 // an HTTP/2 frame header: type SETTINGS
			switch {
			case setting == "off" && !isHTTP1:
				t.Fatalf("LIVEPG_H2C=off: the preface got %q, want an HTTP/1.1 answer", head)
			case setting == "on" && (isHTTP1 || !isSettings):
				t.Fatalf("LIVEPG_H2C=on: the preface got %q, want the server's SETTINGS frame", head)
			case setting == "on":
				// The payload: 6-byte entries, a 16-bit id and a 32-bit value;
				// SETTINGS_MAX_CONCURRENT_STREAMS is id 3.
				payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
				if _, err := io.ReadFull(br, payload); err != nil {
					t.Fatal(err)
				}
				maxStreams := -1
				for e := payload; len(e) >= 6; e = e[6:] {
					if e[0] == 0 && e[1] == 3 {
						maxStreams = int(e[2])<<24 | int(e[3])<<16 | int(e[4])<<8 | int(e[5])
					}
				}
				if maxStreams != 7 {
					t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want LIVEPG_H2C_MAX_STREAMS (7)", maxStreams)
				}
			}
			var dials atomic.Int64
			resp, err := h2cClient(t, &dials, 0).Get(base + "/healthz")
			if resp != nil {
				resp.Body.Close()
			}
			if setting == "off" && err == nil {
				t.Fatalf("LIVEPG_H2C=off: an h2c request got %s, want it refused", resp.Status)
			}
			if setting == "on" && (err != nil || resp.StatusCode != http.StatusOK) {
				t.Fatalf("LIVEPG_H2C=on: an h2c request: %v", err)
			}
			if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
				t.Fatalf("HTTP/1.1 /healthz: %d", code)
			}
		})
	}
}

// A graceful shutdown drains streams on h2c connections: each gets the
// retry hint and ends cleanly (END_STREAM, not a reset or a closed
// connection), and the server stops before its shutdown timeout.
func TestH2CShutdownDrainsStreams(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, stop, out := startServerOutput(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_SHUTDOWN_TIMEOUT": "60s"})
	waitReady(t, base)
	var dials atomic.Int64
	streams := openH2C(t, h2cClient(t, &dials, 0), base+"/v1/events?topic=drain", 3)
	seqs := publishSeqs(t, base, "drain", 1, "")
	for i, s := range streams {
		expectSeqs(t, fmt.Sprintf("stream %d", i), s, seqs)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v after shutdown", err)
	}
	for i, s := range streams {
		select {
		case <-s.Done():
		case <-time.After(60 * time.Second):
			t.Fatalf("stream %d still open after shutdown", i)
		}
		if err := s.Err(); err != nil {
			t.Errorf("stream %d ended with %v, want a clean end", i, err)
		}
		if s.Retry() == "" {
			t.Errorf("stream %d ended without a retry hint", i)
		}
	}
	if strings.Contains(out.String(), "streams still open at the deadline") {
		t.Fatalf("the shutdown waited for its deadline:\n%s", out.String())
	}
}

// An HTTP/2 stream that has nothing to write for longer than the write
// timeout stays open: the deadline guards a write, not the quiet between
// writes (net/http resets an HTTP/2 stream whose deadline passes, written
// to or not).
func TestH2CQuietStreamOutlivesTheWriteTimeout(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_WRITE_TIMEOUT": "1s"})
	waitReady(t, base)
	var dials atomic.Int64
	streams := openH2C(t, h2cClient(t, &dials, 0), base+"/v1/events?topic=quiet", 2)
	first := publishSeqs(t, base, "quiet", 1, "")
	for i, s := range streams {
		expectSeqs(t, fmt.Sprintf("stream %d", i), s, first)
	}
	time.Sleep(3 * time.Second) // quiet for three write timeouts
	later := publishSeqs(t, base, "quiet", 1, "")
	for i, s := range streams {
		expectSeqs(t, fmt.Sprintf("stream %d after the quiet", i), s, later)
	}
	if n := metricValue(t, base, `livepg_streams_closed_total{reason="write_timeout"}`); n != 0 {
		t.Errorf("%v streams cut for write_timeout, want none", n)
	}
}

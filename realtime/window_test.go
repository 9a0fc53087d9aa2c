package realtime_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// The node's window of the log (LIVEPG_WINDOW, fanout/window.go): resumes
// and catch-ups inside it are served from memory, without a query; others
// read the log. Either way a stream gets exactly the committed events
// matching its topics, in order, once.

// epochOf is the epoch of the log's history, from livepg.head().
func epochOf(t *testing.T, db string) string {
	t.Helper()
	_, epoch, ok := strings.Cut(logHead(t, db), "-")
	if !ok {
		t.Fatalf("livepg.head() %q has no epoch", logHead(t, db))
	}
	return epoch
}

// expectLog reads from s the events of topic after from, as the log has
// them, in order, and then nothing else that is queued.
func expectLog(t *testing.T, name string, s *ssetest.Stream, db, topic string, after int64) {
	t.Helper()
	var want []logEvent
	for _, ev := range logOf(t, db, topic) {
		if ev.Seq > after {
			want = append(want, ev)
		}
	}
	if len(want) == 0 {
		t.Fatalf("%s: nothing to expect after %d", name, after)
	}
	for i, w := range want {
		got := s.Next(t, 30*time.Second)
		if got.Type == "reset" || got.Seq() != w.Seq || compact(t, string(decode(t, got).Data)) != w.Data {
			t.Fatalf("%s: event %d is %s %s %s, want %d %s", name, i, got.Type, got.ID, got.Data, w.Seq, w.Data)
		}
	}
}

// A stream resuming from a point inside the window gets exactly the events
// it missed, for its selectors, with no query; one resuming from just
// before the window's start reads the log, and gets the same.
func TestResumeInsideAndJustOutsideTheWindow(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	cfg := notifyOnly
	cfg.Window = tinyWindow
	n := startNode(t, db, cfg)
	epoch := epochOf(t, db)
	publishN(t, db, "w/a", "a", 20)
	publishN(t, db, "w/b", "b", 20) // the window holds the last of these only
	publishN(t, db, "w/a", "a2", 3)
	head := logOf(t, db, "w/a")[22].Seq
	waitFor(t, "the node at the head", func() bool { return metric(t, n.Node, "livepg_log_head") == float64(head) })
	from := int64(metric(t, n.Node, "livepg_window_from"))
	if from == 0 || from >= head-3 {
		t.Fatalf("the tiny window holds events after %d through %d: want it to start among the w/b events", from, head)
	}

	for _, tc := range []struct {
		name    string
		after   int64
		fromLog bool
		topics  []string // the selectors
		match   []string // the topics they select
	}{
		{"inside, one topic", from, false, []string{"w/a"}, []string{"w/a"}},
		{"inside, a prefix", from + 1, false, []string{"w/*"}, []string{"w/a", "w/b"}},
		{"just outside", from - 1, true, []string{"w/a", "w/b"}, []string{"w/a", "w/b"}},
	} {
		reads := metric(t, n.Node, "livepg_catchup_reads_total")
		windowReads := metric(t, n.Node, "livepg_catchup_window_reads_total")
		s := ssetest.Open(t, n.URL+"/v1/events?"+url.Values{"topic": tc.topics}.Encode(), fmt.Sprintf("%d-%s", tc.after, epoch))
		// What the log has after the point, for the selectors.
		var want []logEvent
		for _, topic := range tc.match {
			for _, ev := range logOf(t, db, topic) {
				if ev.Seq > tc.after {
					want = append(want, ev)
				}
			}
		}
		slices.SortFunc(want, func(a, b logEvent) int { return cmp.Compare(a.Seq, b.Seq) })
		for i, w := range want {
			got := s.Next(t, 30*time.Second)
			if got.Type == "reset" || got.Seq() != w.Seq || compact(t, string(decode(t, got).Data)) != w.Data {
				t.Fatalf("%s: event %d is %s %s %s, want %d %s", tc.name, i, got.Type, got.ID, got.Data, w.Seq, w.Data)
			}
		}
		// Then live, nothing repeated.
		publishN(t, db, "w/a", tc.name, 1)
		live := logOf(t, db, "w/a")
		if got := s.Next(t, 30*time.Second); got.Seq() != live[len(live)-1].Seq {
			t.Fatalf("%s: first live event %s, want %d", tc.name, got.ID, live[len(live)-1].Seq)
		}
		s.Close()
		gotReads := metric(t, n.Node, "livepg_catchup_reads_total") - reads
		gotWindow := metric(t, n.Node, "livepg_catchup_window_reads_total") - windowReads
		switch {
		case tc.fromLog && gotReads == 0:
			t.Errorf("%s: the resume ran no query: served from the window, which lacks event %d?", tc.name, from)
		case !tc.fromLog && (gotReads != 0 || gotWindow == 0):
			t.Errorf("%s: the resume ran %v queries and read the window %v times: want none, and the window", tc.name, gotReads, gotWindow)
		}
		from = int64(metric(t, n.Node, "livepg_window_from"))
	}
}

// A TRUNCATE of the log empties it: once the node has read the log since,
// a resume point that the window still held is reset, as the log would
// reset it, while a stream already live goes on.
func TestWindowAcrossATruncate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	cfg := notifyOnly
	cfg.Window = realtime.DefaultConfig.Window
	n := startNode(t, db, cfg)
	publishN(t, db, "tr", "before", 5)
	waitFor(t, "the node at the head", func() bool { return metric(t, n.Node, "livepg_log_head") == 5 })

	resumed := ssetest.Open(t, n.URL+"/v1/events?topic=tr", "2")
	expectLog(t, "resumed from the window", resumed, db, "tr", 2)

	queryOrExec(t, db, `TRUNCATE livepg.events`)
	if err := n.Store.Notify(ctx, ""); err != nil { // the node's reader reads the log, and sees it
		t.Fatal(err)
	}
	waitFor(t, "the window emptied", func() bool { return metric(t, n.Node, "livepg_window_from") == 5 })
	again := ssetest.Open(t, n.URL+"/v1/events?topic=tr", "2")
	if ev := again.Next(t, 30*time.Second); ev.Type != "reset" || ev.Seq() != 5 {
		t.Fatalf("resume from 2 after the TRUNCATE: got %+v, want event: reset at 5", ev)
	}
	publishN(t, db, "tr", "after", 1)
	for name, s := range map[string]*ssetest.Stream{"live": resumed, "reset": again} {
		if ev := s.Next(t, 30*time.Second); ev.Seq() != 6 {
			t.Fatalf("%s stream: got %+v, want event 6", name, ev)
		}
	}
}

// manyResumes is how many streams resume at once in
// TestManyResumesFromTheWindowCostNoMoreReadsThanOne, from resumeBack
// events back.
const (
	manyResumes = 2000
	resumeBack  = 1000
)

// After a rolling deploy, thousands of pages resume at once on a node,
// from a thousand events back: the node's window serves them all, and the
// log is read no more than a handful of times for all of them (counted by
// livepg_catchup_reads_total, not timed). Each stream gets exactly the
// bytes a stream resuming from the log gets (a node without a window on
// the same database).
func TestManyResumesFromTheWindowCostNoMoreReadsThanOne(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{PollInterval: time.Hour, MaxStreamsPerClient: -1, CatchUpQueue: 10 * manyResumes, Window: realtime.DefaultConfig.Window})
	noWindow := startNode(t, db, realtime.Config{PollInterval: time.Hour, Window: -1})
	epoch := epochOf(t, db)
	queryOrExec(t, db, fmt.Sprintf(`SELECT livepg.publish_batch(array_fill('deploy'::text, ARRAY[%d]), array_fill('message'::text, ARRAY[%d]),
	        array(SELECT jsonb_build_object('i', g) FROM generate_series(1, %d) g))`, resumeBack, resumeBack, resumeBack))
	for _, node := range []*testNode{n, noWindow} {
		waitFor(t, "the node at the head", func() bool { return metric(t, node.Node, "livepg_log_head") == resumeBack })
	}
	path := "/v1/events?topic=deploy"
	lastEventID := fmt.Sprintf("0-%s", epoch)

	// The log path's bytes: what a stream resuming from the log is sent.
	want := readResume(t, noWindow.URL, path, lastEventID, fmt.Sprintf("\nid: %d-%s\n", resumeBack, epoch))
	if got := bytes.Count(want, []byte("\nid: ")); got != resumeBack {
		t.Fatalf("the log path sent %d events, want %d", got, resumeBack)
	}

	reads := metric(t, n.Node, "livepg_catchup_reads_total")
	started := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, manyResumes)
	for range manyResumes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := dialResume(n.URL, path, lastEventID, len(want), "")
			switch {
			case err != nil:
				errs <- err
			case !bytes.Equal(got, want):
				errs <- fmt.Errorf("a resumed stream was sent %d bytes unlike the log path's (first difference at %d)", len(got), firstByteDiff(got, want))
			}
		}()
	}
	wg.Wait()
	took := time.Since(started)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := metric(t, n.Node, "livepg_catchup_reads_total") - reads
	t.Logf("%d streams resumed from %d events back: %v queries of the log, all served in %s (not asserted)", manyResumes, resumeBack, got, took.Round(time.Millisecond))
	if got > 5 {
		t.Fatalf("%d resuming streams ran %v queries of the log, want at most 5", manyResumes, got)
	}
}

func firstByteDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// readResume opens a stream resuming from lastEventID and returns its
// body through the end of the frame whose id line is last.
func readResume(t *testing.T, base, path, lastEventID, last string) []byte {
	t.Helper()
	b, err := dialResume(base, path, lastEventID, -1, last)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialResume opens a stream resuming from lastEventID on a connection of
// its own and returns the first size bytes of its body, or with size -1
// its body through the end of the frame whose id line is last.
func dialResume(base, path, lastEventID string, size int, last string) ([]byte, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nLast-Event-ID: %s\r\n\r\n", path, u.Host, lastEventID); err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("resume: %s", resp.Status)
	}
	if size >= 0 {
		b := make([]byte, size)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		return b, nil
	}
	var b []byte
	buf := make([]byte, 64<<10)
	for {
		k, err := resp.Body.Read(buf)
		b = append(b, buf[:k]...)
		if i := bytes.Index(b, []byte(last)); i >= 0 {
			if end := bytes.Index(b[i+1:], []byte("\n\n")); end >= 0 {
				return b[:i+1+end+2], nil
			}
		}
		if err != nil {
			return b, fmt.Errorf("resume: %w", err)
		}
	}
}

// While catch-up reads of the log are held up and their queue is full, a
// stream resuming from inside the window is still admitted and served:
// it needs no read. One from outside the window gets 503, as before.
func TestResumeInsideTheWindowNeedsNoPlaceInTheCatchUpQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{CatchUpConns: 1, CatchUpQueue: 1, Window: tinyWindow, PollInterval: time.Hour})
	publishN(t, db, "q/1", "q", 40)
	log := logOf(t, db, "q/1")
	head := log[len(log)-1].Seq
	waitFor(t, "the reader at the head", func() bool { return metric(t, n.Node, "livepg_log_head") == float64(head) })
	if from := metric(t, n.Node, "livepg_window_from"); from < 1 || from >= float64(head-1) {
		t.Fatalf("the tiny window starts after %v, want it to hold the last events but not the first", from)
	}
	tx, err := n.Store.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE livepg.limits IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err) // catch-up reads of the log now wait
	}
	first := ssetest.Open(t, n.URL+"/v1/events?topic=q/1", "0")
	waitFor(t, "a catch-up read under way", func() bool { return metric(t, n.Node, "livepg_streams_open") == 1 })
	second := ssetest.Open(t, n.URL+"/v1/events?topic=q/1", "0")
	waitFor(t, "a stream waiting for a catch-up read", func() bool { return metric(t, n.Node, "livepg_catchups_waiting") == 1 })
	if code := status(t, http.MethodGet, n.URL+"/v1/events?topic=q/1&lastEventId=0", "", nil); code != http.StatusServiceUnavailable {
		t.Errorf("resuming from outside the window with the queue full: status %d, want 503", code)
	}
	inside := ssetest.Open(t, n.URL+"/v1/events?topic=q/1", fmt.Sprint(head-1))
	if ev := inside.Next(t, 30*time.Second); ev.Seq() != head {
		t.Fatalf("resuming from inside the window with the queue full: got %+v, want event %d", ev, head)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*ssetest.Stream{first, second} {
		expectLog(t, "a queued stream", s, db, "q/1", 0)
	}
}

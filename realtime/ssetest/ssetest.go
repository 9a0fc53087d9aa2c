// Package ssetest is a small Server-Sent Events client for tests: it opens a
// stream, parses it as a browser would and hands over the events.
package ssetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Event is one dispatched SSE event.
type Event struct {
	ID   string
	Type string // "message" when the stream named none
	Data string
}

// Seq is the seq in the event's id ('<seq>-<epoch>', or a plain '<seq>'),
// 0 if it has none.
func (e Event) Seq() int64 {
	seq, _, _ := strings.Cut(e.ID, "-")
	seq, _, _ = strings.Cut(seq, "~") // a snapshot (the logical bus mode)
	n, _ := strconv.ParseInt(seq, 10, 64)
	return n
}

// Stream is an open event stream.
type Stream struct {
	Resp   *http.Response
	events chan Event
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	err         error
	lastEventID string
	retry       string
	comments    int
}

// Open connects to url (with a Last-Event-ID header when lastEventID is not
// empty). The stream is closed at the end of the test.
func Open(t testing.TB, url, lastEventID string) *Stream {
	t.Helper()
	s, err := Dial(context.Background(), url, lastEventID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Dial connects to url; the caller closes the stream.
func Dial(ctx context.Context, url, lastEventID string) (*Stream, error) {
	return DialClient(ctx, http.DefaultClient, url, lastEventID)
}

// DialClient is Dial through client (a slow reader's, say).
func DialClient(ctx context.Context, client *http.Client, url, lastEventID string) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	s := &Stream{Resp: resp, events: make(chan Event, 1<<16), cancel: cancel, done: make(chan struct{}), lastEventID: lastEventID}
	go s.read(ctx)
	return s, nil
}

// read parses the stream by the rules of the HTML standard's event stream
// interpretation.
func (s *Stream) read(ctx context.Context) {
	defer close(s.done)
	defer close(s.events)
	sc := bufio.NewScanner(s.Resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var data []string
	typ, hasData := "", false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData {
				if typ == "" {
					typ = "message"
				}
				s.mu.Lock()
				id := s.lastEventID
				s.mu.Unlock()
				select {
				case s.events <- Event{ID: id, Type: typ, Data: strings.Join(data, "\n")}:
				case <-ctx.Done():
					return
				}
			}
			data, typ, hasData = nil, "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			s.mu.Lock()
			s.comments++
			s.mu.Unlock()
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			data = append(data, value)
			hasData = true
		case "event":
			typ = value
		case "id":
			s.mu.Lock()
			s.lastEventID = value
			s.mu.Unlock()
		case "retry":
			s.mu.Lock()
			s.retry = value
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.err = sc.Err()
	s.mu.Unlock()
}

// Next returns the next event, or fails the test after timeout.
func (s *Stream) Next(t testing.TB, timeout time.Duration) Event {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatalf("stream ended: %v", s.Err())
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
		return Event{}
	}
}

// Events is the channel of dispatched events, closed when the stream ends.
func (s *Stream) Events() <-chan Event { return s.events }

// Done is closed when the stream has ended.
func (s *Stream) Done() <-chan struct{} { return s.done }

// LastEventID is what a browser would send as Last-Event-ID on reconnect.
func (s *Stream) LastEventID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastEventID
}

// Retry is the last retry: value the server sent.
func (s *Stream) Retry() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retry
}

// Comments counts comment lines (heartbeats) received.
func (s *Stream) Comments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.comments
}

// Err is the read error that ended the stream, if any.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the stream and waits for its reader.
func (s *Stream) Close() {
	s.cancel()
	s.Resp.Body.Close()
	<-s.done
}

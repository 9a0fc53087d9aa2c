package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/livepg/livepg/realtime"
)

// tail is `livepg tail`: a terminal client for operators debugging a topic.
// It prints each event of a stream as it arrives, one line each,
//
//	<id> <type> <topic> <data as compact JSON>   (separated by tabs)
//
// and, when the stream ends or cannot be opened, reconnects and resumes
// from the last id it printed, as a browser would. It stops when ctx ends
// (SIGINT); a refused request (a 4xx: a bad selector) ends it with the
// server's error.
func tail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("livepg tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://localhost:8080", "the livepg server")
	var topics topicFlags
	fs.Var(&topics, "topic", "a topic or a prefix ending in /* (repeat for more)")
	lastID := fs.String("last-event-id", "", "resume after this event id (default: from now on)")
	token := fs.String("token", "", "a token (JWT) for private topics, sent as Authorization: Bearer")
	retry := fs.Duration("retry", 0, "wait this long before reconnecting (default: what the server says)")
	idle := fs.Duration("idle-timeout", 60*time.Second, "reconnect after this long without a byte (the server sends heartbeats)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the flags
	} else if err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("tail: unexpected argument %q", fs.Arg(0))
	}
	if len(topics) == 0 {
		return errors.New("tail: name at least one --topic, e.g. --topic 'boards/*'")
	}
	for _, t := range topics {
		if _, err := realtime.ParseSelector(t); err != nil {
			return fmt.Errorf("tail: %w", err)
		}
	}
	if *lastID != "" {
		if _, _, err := realtime.ParseEventID(*lastID); err != nil {
			return fmt.Errorf("tail: --last-event-id: %w", err)
		}
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("tail: --url %q: want http://host:port", *base)
	}
	u = u.JoinPath("/v1/events")
	u.RawQuery = url.Values{"topic": topics}.Encode()

	t := &tailer{url: u.String(), token: *token, lastID: *lastID, retry: *retry, idle: *idle, out: stdout, log: stderr}
	return t.run(ctx)
}

// topicFlags collects repeated --topic flags.
type topicFlags []string

func (f *topicFlags) String() string     { return strings.Join(*f, ",") }
func (f *topicFlags) Set(v string) error { *f = append(*f, v); return nil }

type tailer struct {
	url    string
	token  string
	lastID string
	// retry is the fixed reconnect delay from --retry, or 0 to use the
	// server's retry: hint.
	retry, serverRetry time.Duration
	idle               time.Duration
	out, log           io.Writer
}

// errRefused is a 4xx answer: reconnecting would not help.
var errRefused = errors.New("refused")

func (t *tailer) run(ctx context.Context) error {
	failures := 0
	for {
		received, err := t.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errRefused) {
			return fmt.Errorf("tail: %w", err)
		}
		if received {
			failures = 0
		}
		failures++
		wait := t.backoff(failures)
		from := "now"
		if t.lastID != "" {
			from = "event " + t.lastID
		}
		fmt.Fprintf(t.log, "livepg tail: %v; reconnecting in %s, resuming after %s\n", err, wait, from)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// backoff is the wait before the n-th reconnect in a row: the server's hint
// (or --retry), doubled for each failure after the first, at most 30s.
func (t *tailer) backoff(n int) time.Duration {
	wait := t.retry
	if wait <= 0 {
		wait = t.serverRetry
	}
	if wait <= 0 {
		wait = time.Second
	}
	for range min(n-1, 8) {
		wait *= 2
	}
	if t.retry <= 0 {
		wait = min(wait, 30*time.Second)
	}
	return wait
}

// stream opens one stream and prints its events until it ends. received
// reports whether it delivered anything (which resets the backoff).
func (t *tailer) stream(ctx context.Context) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if t.lastID != "" {
		req.Header.Set("Last-Event-ID", t.lastID)
	}
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("GET %s: %s: %s", t.url, resp.Status, bytes.TrimSpace(body))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return false, fmt.Errorf("%w: %w", errRefused, err)
		}
		return false, err
	}

	// A connection that dies without a FIN would block the read forever:
	// the server's heartbeats keep bytes coming, so silence ends it.
	idle := time.AfterFunc(t.idle, cancel)
	defer idle.Stop()

	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var data []string
	var typ, id string
	hasData, hasID := false, false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil && !idle.Stop() {
				return received, fmt.Errorf("no byte for %s", t.idle)
			}
			if err == io.EOF {
				return received, errors.New("stream ended")
			}
			return received, err
		}
		idle.Reset(t.idle)
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			// A blank line dispatches the event, per the SSE rules.
			if hasID {
				t.lastID = id
			}
			if hasData {
				t.print(t.lastID, typ, strings.Join(data, "\n"))
				received = true
			}
			data, typ, hasData, hasID = nil, "", false, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			data, hasData = append(data, value), true
		case "event":
			typ = value
		case "id":
			id, hasID = value, true
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms >= 0 {
				t.serverRetry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// print writes one event as a line: id, type, topic, data.
func (t *tailer) print(id, typ, data string) {
	if typ == "" {
		typ = "message"
	}
	var ev struct {
		Topic string          `json:"topic"`
		Data  json.RawMessage `json:"data"`
	}
	topic, payload := "-", data
	if err := json.Unmarshal([]byte(data), &ev); err == nil && ev.Topic != "" {
		topic, payload = ev.Topic, string(ev.Data)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(payload)); err == nil {
		payload = compact.String()
	}
	fmt.Fprintf(t.out, "%s\t%s\t%s\t%s\n", id, typ, topic, payload)
}

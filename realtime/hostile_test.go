package realtime_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// Tests of issue 11's hostile inputs and clients at the HTTP edge.

// post sends a publish and returns its status and body.
func post(t *testing.T, url, body string, header map[string]string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBadPublishesFailAloneBeforeTheDatabase: data that PostgreSQL's jsonb
// refuses (\u0000, invalid UTF-8, a number past numeric's range) is refused
// with 400 and a message saying what is wrong in the client's terms — no
// PostgreSQL error text — and nothing is recorded; good publishes sent at
// the same time all succeed.
func TestBadPublishesFailAloneBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{PublishBatchWindow: 20 * time.Millisecond})
	ctx := context.Background()
	before, err := n.Store.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct{ body, want string }{
		{`{"topic":"t","data":"\u0000"}`, `\u0000`},
		{`{"topic":"t","data":{"k":"a\u0000b"}}`, `\u0000`},
		{"{\"topic\":\"t\",\"data\":\"\xff\xfe\"}", "UTF-8"},
		{`{"topic":"t","data":[1e131072]}`, "exponent"},
		{`{"topic":"t","type":"bad type","data":1}`, "invalid type"},
		{`{"topic":"a//b","data":1}`, "invalid topic"},
		{`{"topic":"t","data":{"a":}}`, "invalid JSON"},
	}
	var wg sync.WaitGroup
	for _, tc := range bad {
		wg.Go(func() {
			code, body := post(t, n.URL+"/v1/publish", tc.body, nil)
			if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
				t.Errorf("publish %q: %d %s, want 400 naming %q", tc.body, code, body, tc.want)
			}
			for _, internal := range []string{"SQLSTATE", "jsonb_", "invalid input syntax", "unsupported Unicode escape", "invalid byte sequence"} {
				if strings.Contains(body, internal) {
					t.Errorf("publish %q: the answer %s shows the database's error text", tc.body, body)
				}
			}
		})
	}
	const good = 8
	for i := range good {
		wg.Go(func() {
			if code, body := post(t, n.URL+"/v1/publish", fmt.Sprintf(`{"topic":"t","data":{"i":%d}}`, i), nil); code != http.StatusOK {
				t.Errorf("good publish %d: %d %s", i, code, body)
			}
		})
	}
	wg.Wait()
	after, err := n.Store.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Head-before.Head != good {
		t.Errorf("the log grew by %d events, want %d (the good ones only)", after.Head-before.Head, good)
	}
}

// TestCookiePublishesNeedAnAllowedOriginAndJSON: a publish authenticated by
// the livepg_token cookie, which a browser sends with requests that other
// sites' pages make, is refused from a foreign Origin (403) and with a body
// that is not application/json (415, the plain form post a page may send
// cross-site without a preflight); from an allowed origin, as JSON, it is
// served. A bearer token, which a browser never sends on its own, is not
// affected.
func TestCookiePublishesNeedAnAllowedOriginAndJSON(t *testing.T) {
	t.Parallel()
	auth, err := realtime.NewAuth("HS256", secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Auth: auth, CORSOrigins: []string{"https://app.example"}})
	tok := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "publish": []string{"*"}})
	cookie := "livepg_token=" + tok
	body := `{"topic":"x","data":1}`
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"cookie from a foreign origin", map[string]string{"Cookie": cookie, "Origin": "https://evil.example"}, 403},
		{"cookie as text/plain from a foreign origin", map[string]string{"Cookie": cookie, "Origin": "https://evil.example", "Content-Type": "text/plain"}, 403},
		{"cookie as text/plain from the allowed origin", map[string]string{"Cookie": cookie, "Origin": "https://app.example", "Content-Type": "text/plain"}, 415},
		{"cookie as a form from no origin", map[string]string{"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"cookie, cross-site fetch without Origin", map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "cross-site"}, 403},
		{"cookie as JSON from the allowed origin", map[string]string{"Cookie": cookie, "Origin": "https://app.example"}, 200},
		{"cookie as JSON from the node's own origin", map[string]string{"Cookie": cookie, "Origin": n.URL}, 200},
		{"bearer from a foreign origin as text/plain", map[string]string{"Authorization": "Bearer " + tok, "Origin": "https://evil.example", "Content-Type": "text/plain"}, 200},
	} {
		if code, resp := post(t, n.URL+"/v1/publish", body, tc.header); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, resp, tc.want)
		}
	}
}

// TestPublishChecksTheTokenBeforeReadingTheBody: a publish without a token
// that announces a 1 MiB body and sends none of it is answered 401 at once:
// the node does not wait for (or hold) a body it would refuse anyway.
func TestPublishChecksTheTokenBeforeReadingTheBody(t *testing.T) {
	t.Parallel()
	auth, err := realtime.NewAuth("HS256", secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Auth: auth})
	u, _ := url.Parse(n.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/publish HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", u.Host, 1<<20)
	// Generous: the answer needs no body, so it comes whatever the load.
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer without the body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
}

// TestStreamEndsWhenItsTokenExpires: a stream opened with a token gets
// events while the token is valid; when it expires the stream ends with a
// last event, token-expired (no id: the resume point stays the last
// event's), that tells the page to reconnect with a fresh token. A stream
// that needed no token is not affected.
func TestStreamEndsWhenItsTokenExpires(t *testing.T) {
	t.Parallel()
	auth, err := realtime.NewAuth("HS256", secret, mustSelectors(t, "private/*"))
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Auth: auth})
	ctx := context.Background()
	// JWT expiry has whole seconds: 3 s from now is 2-3 s of validity.
	tok := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": time.Now().Add(3 * time.Second).Unix(), "subscribe": []string{"private/*"}})
	private := ssetest.Open(t, n.URL+"/v1/events?topic=private/a&token="+tok, "")
	public := ssetest.Open(t, n.URL+"/v1/events?topic=public", "")
	seq, err := n.Store.Publish(ctx, "private/a", "message", []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev := private.Next(t, 30*time.Second); ev.Seq() != seq {
		t.Fatalf("got %+v, want event %d", ev, seq)
	}
	ev := private.Next(t, 60*time.Second)
	// Its id is the last event's: it sets none of its own.
	if ev.Type != "token-expired" || ev.Seq() != seq || !strings.Contains(ev.Data, "fresh token") {
		t.Fatalf("got %+v, want event: token-expired with no id of its own", ev)
	}
	select {
	case <-private.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the stream stayed open after its token expired")
	}
	waitFor(t, "the close counted", func() bool {
		return metric(t, n.Node, "livepg_streams_closed_total", "reason=token_expired") == 1
	})
	// The public stream, which needed no token, goes on.
	seq, err = n.Store.Publish(ctx, "public", "message", []byte(`{"n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev := public.Next(t, 30*time.Second); ev.Seq() != seq {
		t.Fatalf("public stream: got %+v, want event %d", ev, seq)
	}
}

// TestAudienceAndIssuerAreRequiredWhenSet: with Audience and Issuer set, a
// token must carry both (a token for another service, or from another
// issuer, is refused with 401); without them set, neither is checked.
func TestAudienceAndIssuerAreRequiredWhenSet(t *testing.T) {
	t.Parallel()
	auth, err := realtime.NewAuth("HS256", secret, mustSelectors(t, "private/*"))
	if err != nil {
		t.Fatal(err)
	}
	auth.Audience, auth.Issuer = "livepg", "https://auth.example"
	open, err := realtime.NewAuth("HS256", secret, mustSelectors(t, "private/*"))
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.NewDatabase(t)
	strict := startNode(t, db, realtime.Config{Auth: auth})
	lax := startNode(t, db, realtime.Config{Auth: open})
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name        string
		claims      jwt.MapClaims
		strict, lax int
	}{
		{"right audience and issuer", jwt.MapClaims{"aud": "livepg", "iss": "https://auth.example"}, 200, 200},
		{"audience among others", jwt.MapClaims{"aud": []string{"other", "livepg"}, "iss": "https://auth.example"}, 200, 200},
		{"foreign audience", jwt.MapClaims{"aud": "other", "iss": "https://auth.example"}, 401, 200},
		{"no audience", jwt.MapClaims{"iss": "https://auth.example"}, 401, 200},
		{"foreign issuer", jwt.MapClaims{"aud": "livepg", "iss": "https://evil.example"}, 401, 200},
		{"no issuer", jwt.MapClaims{"aud": "livepg"}, 401, 200},
	} {
		tc.claims["exp"] = exp
		tc.claims["publish"] = []string{"private/*"}
		h := map[string]string{"Authorization": "Bearer " + token(t, jwt.SigningMethodHS256, []byte(secret), tc.claims)}
		if code, body := post(t, strict.URL+"/v1/publish", `{"topic":"private/x","data":1}`, h); code != tc.strict {
			t.Errorf("%s: publish with audience and issuer required: %d %s, want %d", tc.name, code, body, tc.strict)
		}
		if code, body := post(t, lax.URL+"/v1/publish", `{"topic":"private/x","data":1}`, h); code != tc.lax {
			t.Errorf("%s: publish with neither required: %d %s, want %d", tc.name, code, body, tc.lax)
		}
	}
}

// openStreamWith sends a stream request with header and returns its response,
// open until the test ends (or the caller closes its body).
func openStreamWith(t *testing.T, url string, header map[string]string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return nil
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestOpensBelowTheCapAllSucceed: 290 streams opened at once on a node
// whose cap is 300 all open: each stream holds one place, from admission
// to its end, never two at once (it once took a second place when it took
// over its connection, and opens near the cap were refused).
func TestOpensBelowTheCapAllSucceed(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{MaxStreams: 300, MaxStreamsPerClient: -1})
	const streams = 290
	codes := make([]int, streams)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			<-start
			if resp := openStreamWith(t, n.URL+"/v1/events?topic=cap", nil); resp != nil {
				codes[i] = resp.StatusCode
			}
		})
	}
	close(start)
	wg.Wait()
	refused := 0
	for _, c := range codes {
		if c != http.StatusOK {
			refused++
		}
	}
	if refused > 0 {
		t.Fatalf("%d of %d simultaneous opens refused under a cap of 300", refused, streams)
	}
	if got := n.Streams(); got != streams {
		t.Fatalf("the node counts %d streams, %d are open", got, streams)
	}
}

// TestStreamsPerClientAreLimited: a client (an address) may hold at most
// MaxStreamsPerClient streams; the next gets 429 with Retry-After, while
// other clients open theirs; a place given back can be taken again. The
// client's address comes from ClientIPHeader only when one is configured:
// otherwise a client cannot dodge the limit by sending the header.
func TestStreamsPerClientAreLimited(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	behindProxy := startNode(t, db, realtime.Config{MaxStreamsPerClient: 2, ClientIPHeader: "Fly-Client-IP"})
	direct := startNode(t, db, realtime.Config{MaxStreamsPerClient: 2})
	url := "/v1/events?topic=per-client"
	from := func(ip string) map[string]string { return map[string]string{"Fly-Client-IP": ip} }

	a1 := openStreamWith(t, behindProxy.URL+url, from("203.0.113.7"))
	openStreamWith(t, behindProxy.URL+url, from("203.0.113.7"))
	if r := openStreamWith(t, behindProxy.URL+url, from("203.0.113.7")); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream of one client: %d (Retry-After %q), want 429 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// An IPv6 client counts as its /64.
	openStreamWith(t, behindProxy.URL+url, from("2001:db8::1"))
	openStreamWith(t, behindProxy.URL+url, from("2001:db8::2"))
	if r := openStreamWith(t, behindProxy.URL+url, from("2001:db8::3")); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third stream of one IPv6 /64: %d, want 429", r.StatusCode)
	}
	if r := openStreamWith(t, behindProxy.URL+url, from("198.51.100.1")); r.StatusCode != http.StatusOK {
		t.Fatalf("another client's stream: %d, want 200", r.StatusCode)
	}
	a1.Body.Close()
	waitFor(t, "the closed stream's place given back", func() bool { return behindProxy.Streams() == 4 })
	if r := openStreamWith(t, behindProxy.URL+url, from("203.0.113.7")); r.StatusCode != http.StatusOK {
		t.Fatalf("after closing one, the client's stream: %d, want 200", r.StatusCode)
	}

	// Without a configured header, the header is the client's word: ignored.
	openStreamWith(t, direct.URL+url, from("192.0.2.1"))
	openStreamWith(t, direct.URL+url, from("192.0.2.2"))
	if r := openStreamWith(t, direct.URL+url, from("192.0.2.3")); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third stream from one peer with a forged Fly-Client-IP: %d, want 429", r.StatusCode)
	}
}

// TestPublishBodiesMustArriveInTime: a publish with a valid token whose
// body trickles in and stops is answered 408 and its connection closed
// once BodyTimeout has passed; it does not hold the connection for as long
// as the client likes.
func TestPublishBodiesMustArriveInTime(t *testing.T) {
	t.Parallel()
	auth, err := realtime.NewAuth("HS256", secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Auth: auth, BodyTimeout: time.Second})
	tok := token(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "publish": []string{"*"}})
	u, _ := url.Parse(n.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/publish HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"topic\":", u.Host, tok)
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second)) // generous: the timeout is 1s
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d %s, want 408", resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the connection stayed open")
	}
}

package realtime_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store/storetest"
)

const secret = "a-test-secret-of-at-least-32-bytes!!"

func token(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSelectors(t *testing.T, ss ...string) []realtime.Selector {
	t.Helper()
	var out []realtime.Selector
	for _, s := range ss {
		sel, err := realtime.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sel)
	}
	return out
}

// status opens a stream (or publishes) and returns the status it got.
func status(t *testing.T, method, url, body string, header map[string]string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	return resp.StatusCode
}

func TestTokensAuthorisePrivateTopicsAndPublishing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	auth, err := realtime.NewAuth("HS256", secret, mustSelectors(t, "private/*", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Auth: auth})
	exp := time.Now().Add(time.Hour).Unix()
	hs := func(claims jwt.MapClaims) string { return token(t, jwt.SigningMethodHS256, []byte(secret), claims) }
	reader := hs(jwt.MapClaims{"exp": exp, "subscribe": []string{"private/a/*"}})
	writer := hs(jwt.MapClaims{"exp": exp, "publish": []string{"private/a/*", "public"}})
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	for _, tc := range []struct {
		name   string
		query  string
		header map[string]string
		want   int
	}{
		{"public topic, no token", "topic=public", nil, 200},
		{"private topic, no token", "topic=private/a/1", nil, 401},
		{"prefix reaching private topics, no token", "topic=private/*", nil, 401},
		{"exact private topic, no token", "topic=admin", nil, 401},
		{"granted prefix, header", "topic=private/a/*", bearer(reader), 200},
		{"granted topic, cookie", "topic=private/a/1", map[string]string{"Cookie": realtime.TokenCookie + "=" + reader}, 200},
		{"granted topic, query", "topic=private/a/1&token=" + reader, nil, 200},
		{"wider than granted", "topic=private/*", bearer(reader), 403},
		{"other private topic", "topic=private/b/1", bearer(reader), 403},
		{"one of two not granted", "topic=private/a/1&topic=admin", bearer(reader), 403},
		{"expired", "topic=private/a/1", bearer(hs(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix(), "subscribe": []string{"private/*"}})), 401},
		{"no expiry", "topic=private/a/1", bearer(hs(jwt.MapClaims{"subscribe": []string{"private/*"}})), 401},
		{"wrong secret", "topic=private/a/1", bearer(token(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), jwt.MapClaims{"exp": exp, "subscribe": []string{"private/*"}})), 401},
		{"alg none", "topic=private/a/1", bearer(token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"exp": exp, "subscribe": []string{"private/*"}})), 401},
		{"other algorithm", "topic=private/a/1", bearer(token(t, jwt.SigningMethodHS512, []byte(secret), jwt.MapClaims{"exp": exp, "subscribe": []string{"private/*"}})), 401},
		{"not a bearer", "topic=private/a/1", map[string]string{"Authorization": "Basic abc"}, 401},
		{"garbage token", "topic=private/a/1&token=not.a.token", nil, 401},
	} {
		t.Run("subscribe: "+tc.name, func(t *testing.T) {
			if got := status(t, "GET", n.URL+"/v1/events?"+tc.query, "", tc.header); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name, body string
		header     map[string]string
		want       int
	}{
		{"no token", `{"topic":"public"}`, nil, 401},
		{"reader's token", `{"topic":"public"}`, bearer(reader), 403},
		{"outside the grant", `{"topic":"private/b/1"}`, bearer(writer), 403},
		{"granted prefix", `{"topic":"private/a/1"}`, bearer(writer), 200},
		{"granted topic", `{"topic":"public"}`, bearer(writer), 200},
	} {
		t.Run("publish: "+tc.name, func(t *testing.T) {
			if got := status(t, "POST", n.URL+"/v1/publish", tc.body, tc.header); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
	var count int
	if err := n.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM livepg.events`).Scan(&count); err != nil || count != 2 {
		t.Fatalf("%d events written (%v), want the 2 authorised ones", count, err)
	}
}

// A node with no token key cannot accept any token: its refusal says so and
// names the fix, instead of asking for a token no one could send.
func TestPublishWithNoTokenKeySaysHowToAllowIt(t *testing.T) {
	t.Parallel()
	auth, err := realtime.NewAuth("HS256", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, storetest.NewDatabase(t), realtime.Config{Auth: auth})
	resp, err := http.Post(n.URL+"/v1/publish", "application/json", strings.NewReader(`{"topic":"public"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	for _, want := range []string{"no token key", "LIVEPG_TOKEN_KEY", "livepg.publish"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("401 body %s does not mention %q", body, want)
		}
	}
}

func TestPublicKeyTokensRefuseAlgorithmConfusion(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	db := storetest.NewDatabase(t)
	exp := time.Now().Add(time.Hour).Unix()
	claims := jwt.MapClaims{"exp": exp, "subscribe": []string{"p/*"}}
	for _, tc := range []struct {
		alg    string
		pub    string
		good   string
		forged string
	}{
		{"RS256", pemOf(&rsaKey.PublicKey), token(t, jwt.SigningMethodRS256, rsaKey, claims),
			// HS256 with the public key as its secret: the classic confusion.
			token(t, jwt.SigningMethodHS256, []byte(pemOf(&rsaKey.PublicKey)), claims)},
		{"ES256", pemOf(&ecKey.PublicKey), token(t, jwt.SigningMethodES256, ecKey, claims),
			token(t, jwt.SigningMethodHS256, []byte(pemOf(&ecKey.PublicKey)), claims)},
	} {
		auth, err := realtime.NewAuth(tc.alg, tc.pub, mustSelectors(t, "p/*"))
		if err != nil {
			t.Fatal(err)
		}
		n := startNode(t, db, realtime.Config{Auth: auth})
		if got := status(t, "GET", n.URL+"/v1/events?topic=p/1&token="+tc.good, "", nil); got != 200 {
			t.Errorf("%s: good token got %d", tc.alg, got)
		}
		if got := status(t, "GET", n.URL+"/v1/events?topic=p/1&token="+tc.forged, "", nil); got != 401 {
			t.Errorf("%s: HS256 token signed with the public key got %d, want 401", tc.alg, got)
		}
	}
	for _, bad := range []struct{ alg, key string }{
		{"HS256", "short"}, {"RS256", "not pem"}, {"ES256", pemOf(&rsaKey.PublicKey)}, {"none", secret}, {"HS384", secret},
	} {
		if _, err := realtime.NewAuth(bad.alg, bad.key, nil); err == nil {
			t.Errorf("NewAuth(%s, %.10q) accepted", bad.alg, bad.key)
		}
	}
}

func TestLimitsRefuseBeyondConfiguredMaximums(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{MaxStreams: 2, MaxEventSize: 100, MaxBody: 1000})
	for range 2 {
		openStream(t, n.URL+"/v1/events?topic=x")
	}
	req, _ := http.NewRequest("GET", n.URL+"/v1/events?topic=x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := status(t, "POST", n.URL+"/v1/publish", `{"topic":"x","data":"`+strings.Repeat("y", 200)+`"}`, nil); got != 413 {
		t.Fatalf("oversize event: %d, want 413", got)
	}
	if got := status(t, "POST", n.URL+"/v1/publish", `{"topic":"x","data":"small"}`, nil); got != 200 {
		t.Fatalf("small event: %d", got)
	}
}

func openStream(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %s", resp.Status)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
}

func TestCORSAllowsListedOriginsOnly(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{CORSOrigins: []string{"https://app.example"}})
	for _, tc := range []struct {
		origin, method, path string
		allowed              bool
	}{
		{"https://app.example", "OPTIONS", "/v1/publish", true},
		{"https://app.example", "GET", "/v1/events?topic=c", true},
		{"https://evil.example", "OPTIONS", "/v1/publish", false},
		{"https://evil.example", "GET", "/v1/events?topic=c", false},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, tc.method, n.URL+tc.path, nil)
		req.Header.Set("Origin", tc.origin)
		if tc.method == "OPTIONS" {
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := resp.Header.Get("Access-Control-Allow-Origin")
		creds := resp.Header.Get("Access-Control-Allow-Credentials")
		cancel()
		resp.Body.Close()
		if tc.allowed && (got != tc.origin || creds != "true") {
			t.Errorf("%s %s from %s: Allow-Origin %q, credentials %q", tc.method, tc.path, tc.origin, got, creds)
		}
		if !tc.allowed && (got != "" || creds != "") {
			t.Errorf("%s %s from %s: Allow-Origin %q, credentials %q; want none", tc.method, tc.path, tc.origin, got, creds)
		}
	}
}

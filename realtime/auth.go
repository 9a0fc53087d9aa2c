package realtime

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Subscriber tokens: a JWT whose claims list the topic selectors its holder
// may subscribe to and publish on ("*" grants every topic):
//
//	{"exp": 1767225600, "subscribe": ["boards/*"], "publish": ["boards/42"]}
//
// An operator's token may also grant the inspector page ("inspect": true):
// a view of every node, its streams and the topics they name (see
// inspect.go). It grants no topic: tailing a private topic there needs its
// subscribe grant too.
//
// A browser's EventSource cannot set headers, so the token is read from the
// Authorization header ("Bearer ..."), the livepg_token cookie or the token
// query parameter, in that order.

// TokenCookie is the cookie a page may carry its token in.
const TokenCookie = "livepg_token"

// Claims are the claims of a livepg token.
type Claims struct {
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	// Inspect grants the inspector page, /inspect.
	Inspect bool `json:"inspect,omitempty"`
	jwt.RegisteredClaims
}

// Auth decides who may subscribe to and publish on which topics. A nil *Auth
// lets everyone do everything: the no-configuration local mode.
type Auth struct {
	// Private lists the selectors whose topics need a token to subscribe.
	Private []Selector
	// Audience and Issuer, when set, are required claims: a token must
	// carry this aud (among others) and this iss (LIVEPG_TOKEN_AUDIENCE,
	// LIVEPG_TOKEN_ISSUER).
	Audience, Issuer string
	alg              string
	key              any // []byte for HMAC, a public key for RSA and ECDSA
}

// NewAuth pins the signing algorithm: HS256 with a shared secret, or RS256 or
// ES256 with a PEM public key. Tokens signed any other way, "none" included,
// are refused. With an empty key no token verifies, so publishing over HTTP
// is refused and private topics cannot be subscribed to.
func NewAuth(alg, key string, private []Selector) (*Auth, error) {
	a := &Auth{Private: private, alg: alg}
	switch alg {
	case "HS256", "RS256", "ES256":
	default:
		// Checked even with no key: a node set to accept "none" must not
		// start, whether or not it has a key yet.
		return nil, fmt.Errorf("token algorithm %q: want HS256, RS256 or ES256 (LIVEPG_TOKEN_ALG; unsigned tokens, \"none\", are never accepted)", alg)
	}
	if key == "" {
		return a, nil
	}
	switch alg {
	case "HS256":
		if len(key) < 32 {
			return nil, errors.New("token key: an HS256 secret needs at least 32 bytes")
		}
		a.key = []byte(key)
	case "RS256", "ES256":
		block, _ := pem.Decode([]byte(key))
		if block == nil {
			return nil, fmt.Errorf("token key: %s needs a PEM public key", alg)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		if _, ok := pub.(*rsa.PublicKey); alg == "RS256" && !ok {
			return nil, errors.New("token key: RS256 needs an RSA public key")
		}
		if _, ok := pub.(*ecdsa.PublicKey); alg == "ES256" && !ok {
			return nil, errors.New("token key: ES256 needs an ECDSA public key")
		}
		a.key = pub
	}
	return a, nil
}

// authError is a refusal with its HTTP status.
type authError struct {
	status int
	msg    string
}

func (e *authError) Error() string { return e.msg }

var errNoToken = &authError{http.StatusUnauthorized, "this needs a token: send it as a Bearer token, the " + TokenCookie + " cookie or the token query parameter"}

// errNoTokenKey is the refusal of a node that has no key to verify tokens
// with: no token could help, so it says what would.
var errNoTokenKey = &authError{http.StatusUnauthorized, "this needs a token, and this node accepts none: it has no token key. " +
	"Set LIVEPG_TOKEN_KEY (or LIVEPG_TOKEN_KEY_FILE) on the node and send a token granting the topic, or publish from SQL with livepg.publish"}

// missingToken is the refusal for a request that carries no token.
func (a *Auth) missingToken() error {
	if a.key == nil {
		return errNoTokenKey
	}
	return errNoToken
}

// claims verifies the request's token, if it carries one.
func (a *Auth) claims(r *http.Request) (*Claims, error) {
	c, _, err := a.claimsFrom(r)
	return c, err
}

// claimsFrom verifies the request's token, if it carries one, and says
// whether it came in the cookie: a browser sends a cookie with requests
// that pages of other sites make, so a cookie's holder may not have meant
// the request (see CheckCrossSite).
func (a *Auth) claimsFrom(r *http.Request) (c *Claims, fromCookie bool, err error) {
	raw := ""
	if h := r.Header.Get("Authorization"); h != "" {
		var ok bool
		if raw, ok = strings.CutPrefix(h, "Bearer "); !ok {
			return nil, false, &authError{http.StatusUnauthorized, "Authorization header: want Bearer <token>"}
		}
	} else if ck, err := r.Cookie(TokenCookie); err == nil {
		raw, fromCookie = ck.Value, true
	} else {
		raw = r.URL.Query().Get("token")
	}
	if raw == "" {
		return nil, false, nil
	}
	if a.key == nil {
		return nil, false, &authError{http.StatusUnauthorized, "tokens are not accepted: no token key is configured"}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{a.alg}), jwt.WithExpirationRequired()}
	if a.Audience != "" {
		opts = append(opts, jwt.WithAudience(a.Audience))
	}
	if a.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.Issuer))
	}
	c = new(Claims)
	if _, err := jwt.ParseWithClaims(raw, c, func(*jwt.Token) (any, error) { return a.key, nil }, opts...); err != nil {
		return nil, false, &authError{http.StatusUnauthorized, "invalid token: " + err.Error()}
	}
	return c, fromCookie, nil
}

// AuthorizeSubscribe checks that every requested selector that can match a
// private topic is covered by the token's subscribe selectors.
func (a *Auth) AuthorizeSubscribe(r *http.Request, sels []Selector) error {
	_, err := a.authorizeStream(r, sels)
	return err
}

// authorizeStream is AuthorizeSubscribe that also returns when the stream's
// right ends: the expiry of the token it needed, or the zero time when it
// needed none (no private topic among sels).
func (a *Auth) authorizeStream(r *http.Request, sels []Selector) (expires time.Time, err error) {
	if a == nil {
		return time.Time{}, nil
	}
	var private []Selector
	for _, s := range sels {
		for _, p := range a.Private {
			if overlaps(s, p) {
				private = append(private, s)
				break
			}
		}
	}
	if len(private) == 0 {
		return time.Time{}, nil
	}
	c, err := a.claims(r)
	if err != nil {
		return time.Time{}, err
	}
	if c == nil {
		return time.Time{}, a.missingToken()
	}
	for _, s := range private {
		if !coveredBy(s, c.Subscribe) {
			return time.Time{}, &authError{http.StatusForbidden, fmt.Sprintf("the token does not allow subscribing to %s", s)}
		}
	}
	return c.ExpiresAt.Time, nil // required: claimsFrom refuses a token without
}

// Subject is the sub claim of the request's valid token, or "" when it
// carries none (or an invalid one): the identity a page joins presence
// with (see presence_http.go).
func (a *Auth) Subject(r *http.Request) string {
	if a == nil {
		return ""
	}
	c, err := a.claims(r)
	if err != nil || c == nil {
		return ""
	}
	return c.Subject
}

// AuthorizePublish checks that the token allows publishing on topic.
func (a *Auth) AuthorizePublish(r *http.Request, topic string) error {
	p, err := a.Publisher(r)
	if err != nil {
		return err
	}
	return p.Allow(topic)
}

// Publisher is a verified publishing token, before the topic is known.
// The zero Publisher (of a nil *Auth) may publish on every topic.
type Publisher struct {
	claims *Claims
	// FromCookie says the token came in the livepg_token cookie: the
	// request may come from another site's page (see CheckCrossSite).
	FromCookie bool
}

// Publisher verifies the request's token for publishing: present, valid,
// unexpired. It reads only the request's headers and query, so a handler
// checks it before reading a byte of the body; Allow then checks the topic.
func (a *Auth) Publisher(r *http.Request) (Publisher, error) {
	if a == nil {
		return Publisher{}, nil
	}
	c, fromCookie, err := a.claimsFrom(r)
	if err != nil {
		return Publisher{}, err
	}
	if c == nil {
		return Publisher{}, a.missingToken()
	}
	return Publisher{claims: c, FromCookie: fromCookie}, nil
}

// Allow checks that the token allows publishing on topic.
func (p Publisher) Allow(topic string) error {
	if p.claims == nil {
		return nil
	}
	if !coveredBy(Selector{Topic: topic}, p.claims.Publish) {
		return &authError{http.StatusForbidden, fmt.Sprintf("the token does not allow publishing on %s", topic)}
	}
	return nil
}

// AuthorizeInspect checks that the request's token grants the inspector
// (the inspect claim) and returns when that right ends (zero: it needs no
// token, the nil *Auth of the local mode).
func (a *Auth) AuthorizeInspect(r *http.Request) (expires time.Time, err error) {
	if a == nil {
		return time.Time{}, nil
	}
	c, err := a.claims(r)
	if err != nil {
		return time.Time{}, err
	}
	if c == nil {
		if a.key == nil {
			return time.Time{}, &authError{http.StatusUnauthorized, "the inspector needs a token granting inspect, and this node accepts none: it has no token key. " +
				"Set LIVEPG_TOKEN_KEY (or LIVEPG_TOKEN_KEY_FILE) on the node and send a token with the claim \"inspect\": true"}
		}
		return time.Time{}, a.missingToken()
	}
	if !c.Inspect {
		return time.Time{}, &authError{http.StatusForbidden, `the token does not grant the inspector: it needs the claim "inspect": true`}
	}
	return c.ExpiresAt.Time, nil
}

// overlaps reports whether some topic matches both selectors.
func overlaps(a, b Selector) bool {
	switch {
	case !a.Prefix && !b.Prefix:
		return a.Topic == b.Topic
	case a.Prefix && b.Prefix:
		return strings.HasPrefix(a.Topic, b.Topic) || strings.HasPrefix(b.Topic, a.Topic)
	case a.Prefix:
		return strings.HasPrefix(b.Topic, a.Topic)
	default:
		return strings.HasPrefix(a.Topic, b.Topic)
	}
}

// coveredBy reports whether every topic s matches is matched by one of the
// granted selectors.
func coveredBy(s Selector, granted []string) bool {
	for _, g := range granted {
		if g == "*" {
			return true // a service's token for every topic
		}
		gs, err := ParseSelector(g)
		if err != nil {
			continue
		}
		if gs.Prefix && strings.HasPrefix(s.Topic, gs.Topic) || !gs.Prefix && !s.Prefix && gs.Topic == s.Topic {
			return true
		}
	}
	return false
}

// WriteAuthError answers a refusal.
func WriteAuthError(w http.ResponseWriter, err error) {
	var ae *authError
	if !errors.As(err, &ae) {
		ae = &authError{http.StatusUnauthorized, err.Error()}
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="livepg"`)
	}
	WriteError(w, ae.status, ae.msg)
}

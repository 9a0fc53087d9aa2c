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

	"github.com/golang-jwt/jwt/v5"
)

// Subscriber tokens: a JWT whose claims list the topic selectors its holder
// may subscribe to and publish on ("*" grants every topic):
//
//	{"exp": 1767225600, "subscribe": ["boards/*"], "publish": ["boards/42"]}
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
	jwt.RegisteredClaims
}

// Auth decides who may subscribe to and publish on which topics. A nil *Auth
// lets everyone do everything: the no-configuration local mode.
type Auth struct {
	// Private lists the selectors whose topics need a token to subscribe.
	Private []Selector
	alg     string
	key     any // []byte for HMAC, a public key for RSA and ECDSA
}

// NewAuth pins the signing algorithm: HS256 with a shared secret, or RS256 or
// ES256 with a PEM public key. Tokens signed any other way, "none" included,
// are refused. With an empty key no token verifies, so publishing over HTTP
// is refused and private topics cannot be subscribed to.
func NewAuth(alg, key string, private []Selector) (*Auth, error) {
	a := &Auth{Private: private, alg: alg}
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
	default:
		return nil, fmt.Errorf("token algorithm %q: want HS256, RS256 or ES256", alg)
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
	raw := ""
	if h := r.Header.Get("Authorization"); h != "" {
		var ok bool
		if raw, ok = strings.CutPrefix(h, "Bearer "); !ok {
			return nil, &authError{http.StatusUnauthorized, "Authorization header: want Bearer <token>"}
		}
	} else if c, err := r.Cookie(TokenCookie); err == nil {
		raw = c.Value
	} else {
		raw = r.URL.Query().Get("token")
	}
	if raw == "" {
		return nil, nil
	}
	if a.key == nil {
		return nil, &authError{http.StatusUnauthorized, "tokens are not accepted: no token key is configured"}
	}
	var c Claims
	_, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return a.key, nil },
		jwt.WithValidMethods([]string{a.alg}), jwt.WithExpirationRequired())
	if err != nil {
		return nil, &authError{http.StatusUnauthorized, "invalid token: " + err.Error()}
	}
	return &c, nil
}

// AuthorizeSubscribe checks that every requested selector that can match a
// private topic is covered by the token's subscribe selectors.
func (a *Auth) AuthorizeSubscribe(r *http.Request, sels []Selector) error {
	if a == nil {
		return nil
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
		return nil
	}
	c, err := a.claims(r)
	if err != nil {
		return err
	}
	if c == nil {
		return a.missingToken()
	}
	for _, s := range private {
		if !coveredBy(s, c.Subscribe) {
			return &authError{http.StatusForbidden, fmt.Sprintf("the token does not allow subscribing to %s", s)}
		}
	}
	return nil
}

// AuthorizePublish checks that the token allows publishing on topic.
func (a *Auth) AuthorizePublish(r *http.Request, topic string) error {
	if a == nil {
		return nil
	}
	c, err := a.claims(r)
	if err != nil {
		return err
	}
	if c == nil {
		return a.missingToken()
	}
	if !coveredBy(Selector{Topic: topic}, c.Publish) {
		return &authError{http.StatusForbidden, fmt.Sprintf("the token does not allow publishing on %s", topic)}
	}
	return nil
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

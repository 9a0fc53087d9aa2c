package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
)

// The help shows the defaults in force, taken from realtime.DefaultConfig
// (the one place they are written), not a copy of them.
//
// Not parallel: it changes realtime.DefaultConfig for its duration.
func TestHelpShowsTheDefaultsInForce(t *testing.T) {
	saved := realtime.DefaultConfig
	t.Cleanup(func() { realtime.DefaultConfig = saved })
	realtime.DefaultConfig.Heartbeat = 7 * time.Second
	realtime.DefaultConfig.Retention = 36 * time.Hour
	realtime.DefaultConfig.MaxStreams = 123
	realtime.DefaultConfig.PlainStreams = true

	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"LIVEPG_HEARTBEAT":    "7s",
		"LIVEPG_RETENTION":    "36h",
		"LIVEPG_MAX_STREAMS":  "123",
		"LIVEPG_LEAN_STREAMS": "off",
		"PORT":                defaultPort,
	} {
		line := helpLine(t, out.String(), name)
		if !strings.HasSuffix(line, "(default "+want+")") {
			t.Errorf("help for %s: %q, want default %s", name, line, want)
		}
	}
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Heartbeat != 7*time.Second || cfg.Node.MaxStreams != 123 {
		t.Errorf("loaded heartbeat %s, max streams %d: not the defaults in force", cfg.Node.Heartbeat, cfg.Node.MaxStreams)
	}
}

func helpLine(t *testing.T, help, name string) string {
	t.Helper()
	for line := range strings.Lines(help) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("help has no line for %s:\n%s", name, help)
	return ""
}

// Every variable the configuration reads is in the table (so in the help),
// and every one in the table is read.
func TestEveryVariableReadIsDocumented(t *testing.T) {
	t.Parallel()
	var read []string
	if _, err := loadConfig(func(k string) string {
		read = append(read, k)
		return ""
	}); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, v := range envVars() {
		documented = append(documented, v.name)
	}
	slices.Sort(read)
	read = slices.Compact(read)
	slices.Sort(documented)
	if !slices.Equal(read, documented) {
		t.Fatalf("read %v\ndocumented %v", read, documented)
	}
}

// The README's table shows the same defaults as the help.
func TestREADMEShowsTheDefaultsInForce(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| `([^`]*)` \\|")
	inREADME := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		inREADME[m[1]] = m[2]
	}
	checked := 0
	for _, v := range envVars() {
		got, ok := inREADME[v.name]
		if !ok || strings.HasPrefix(v.def, "(") {
			continue // not in the table, or a default that is not a value
		}
		checked++
		if got != v.def {
			t.Errorf("README: %s defaults to %s; livepg help says %s", v.name, got, v.def)
		}
	}
	if checked < 15 {
		t.Fatalf("only %d of the README's defaults checked: has its table changed shape?", checked)
	}
}

// Start-up refuses settings that cannot work, saying why and what to set
// instead (issue 11 item 10), whatever else is set or not.
func TestStartupRefusesSettingsThatCannotWork(t *testing.T) {
	t.Parallel()
	key := strings.Repeat("k", 32)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // in the error
	}{
		{"wildcard origin with credentials", map[string]string{"LIVEPG_CORS_ORIGINS": "*"}, "list each origin"},
		{"unknown bus mode", map[string]string{"LIVEPG_BUS": "fast"}, "want default or logical"},
		{"origin without a scheme", map[string]string{"LIVEPG_CORS_ORIGINS": "https://ok.example, app.example"}, "want a scheme and a host"},
		{"origin with a path", map[string]string{"LIVEPG_CORS_ORIGINS": "https://app.example/"}, "no path"},
		{"origin in capitals", map[string]string{"LIVEPG_CORS_ORIGINS": "https://App.example"}, "lower case"},
		{"alg none without a key", map[string]string{"LIVEPG_TOKEN_ALG": "none"}, "want HS256, RS256 or ES256"},
		{"alg none with a database and no key", map[string]string{"DATABASE_URL": "postgres://x/y", "LIVEPG_TOKEN_ALG": "none"}, "never accepted"},
		{"unknown alg with a key", map[string]string{"LIVEPG_TOKEN_ALG": "HS512", "LIVEPG_TOKEN_KEY": key}, "want HS256, RS256 or ES256"},
		{"audience without a key", map[string]string{"LIVEPG_TOKEN_AUDIENCE": "livepg"}, "need LIVEPG_TOKEN_KEY"},
		{"metrics address without a port", map[string]string{"LIVEPG_METRICS_ADDR": "localhost"}, "want host:port"},
		{"negative window", map[string]string{"LIVEPG_WINDOW": "-1"}, "LIVEPG_WINDOW=\"-1\": want a number of bytes"},
		{"window with a unit", map[string]string{"LIVEPG_WINDOW": "64MiB"}, "such as 67108864 (64 MiB), or 0 for no window"},
	} {
		_, err := loadConfig(func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: loadConfig = %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	c, err := loadConfig(func(k string) string {
		return map[string]string{"LIVEPG_CORS_ORIGINS": "https://app.example,http://localhost:3000", "LIVEPG_TOKEN_KEY": key,
			"LIVEPG_TOKEN_AUDIENCE": "livepg", "LIVEPG_TOKEN_ISSUER": "https://auth.example", "LIVEPG_METRICS_ADDR": "127.0.0.1:9091"}[k]
	})
	if err != nil {
		t.Fatalf("good settings refused: %v", err)
	}
	if c.Node.Auth.Audience != "livepg" || c.Node.Auth.Issuer != "https://auth.example" || c.MetricsAddr != "127.0.0.1:9091" {
		t.Errorf("settings not taken: audience %q issuer %q metrics %q", c.Node.Auth.Audience, c.Node.Auth.Issuer, c.MetricsAddr)
	}
}

// LIVEPG_WINDOW: a number of bytes, 0 for none (a zero field of
// realtime.Config would take the default, so "none" is negative there).
func TestWindowSetting(t *testing.T) {
	t.Parallel()
	for env, want := range map[string]int64{"": realtime.DefaultConfig.Window, "0": -1, "1048576": 1 << 20} {
		c, err := loadConfig(func(k string) string { return map[string]string{"LIVEPG_WINDOW": env}[k] })
		if err != nil {
			t.Fatalf("LIVEPG_WINDOW=%q: %v", env, err)
		}
		if c.Node.Window != want {
			t.Errorf("LIVEPG_WINDOW=%q: Window %d, want %d", env, c.Node.Window, want)
		}
	}
}

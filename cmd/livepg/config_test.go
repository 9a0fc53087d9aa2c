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

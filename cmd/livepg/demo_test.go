package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/livepg/livepg/store/storetest"
)

// With a DATABASE_URL the demo is off unless asked for: none of its pages or
// endpoints answer and none of its tables exist.
func TestDemoIsOffWithADatabaseURL(t *testing.T) {
	t.Parallel()
	for _, demo := range []string{"", "off"} {
		t.Run("LIVEPG_DEMO="+demo, func(t *testing.T) {
			t.Parallel()
			db := storetest.NewDatabase(t)
			env := map[string]string{"DATABASE_URL": db, "PORT": "0"}
			if demo != "" {
				env["LIVEPG_DEMO"] = demo
			}
			base, _ := startServer(t, env)
			waitReady(t, base)
			for _, path := range []string{"/", "/boards/1", "/static/board.js", "/api/boards", "/api/boards/1"} {
				if code, _ := get(t, base+path); code != http.StatusNotFound {
					t.Errorf("GET %s: %d, want 404", path, code)
				}
			}
			if resp, _ := post(t, base+"/api/boards", `{"name":"x"}`, nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("POST /api/boards: %d, want 404", resp.StatusCode)
			}
			var tables int
			if err := mustConn(t, db).QueryRow(context.Background(), `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = 'livepg_demo' OR c.relname IN ('boards', 'cards')`).Scan(&tables); err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Fatalf("%d demo relations created with the demo off", tables)
			}
		})
	}
}

// LIVEPG_DEMO=on with a token key: the board's writes need a token, like
// publishing.
func TestDemoOnWithATokenKeyNeedsATokenToWrite(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_DEMO": "on"})
	if code, _ := get(t, base+"/"); code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	if resp, body := post(t, base+"/api/boards", `{"name":"x"}`, http.Header{"Authorization": {"Bearer not-a-token"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /api/boards with a bad token: %d %s", resp.StatusCode, body)
	}
	if resp, body := post(t, base+"/api/boards", `{"name":"x"}`, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/boards with a token: %d %s", resp.StatusCode, body)
	}
}

// LIVEPG_DEMO=on with no token key stays open, and the node says so.
func TestDemoOnWithoutATokenKeyWarns(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _, out := startServerOutput(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_DEMO": "on", "LIVEPG_TOKEN_KEY": ""})
	resp, err := http.Post(base+"/api/boards", "application/json", strings.NewReader(`{"name":"open"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/boards with no token and no key: %d", resp.StatusCode)
	}
	if log := out.String(); !strings.Contains(log, `"level":"WARN"`) || !strings.Contains(log, "the demo is on with no token key") {
		t.Fatalf("no warning that the demo is open:\n%s", log)
	}
}

// `livepg migrate up` (fly.toml's release command) creates the demo's tables
// when the demo is on, and only then.
func TestMigrateUpCreatesTheDemoOnlyWhenOn(t *testing.T) {
	t.Parallel()
	for _, demo := range []string{"off", "on"} {
		db := storetest.NewDatabase(t)
		env := map[string]string{"DATABASE_URL": db, "LIVEPG_DEMO": demo}
		if err := run(context.Background(), []string{"migrate", "up"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
			t.Fatalf("LIVEPG_DEMO=%s migrate up: %v", demo, err)
		}
		var exists bool
		if err := mustConn(t, db).QueryRow(context.Background(), `SELECT to_regclass('livepg_demo.cards') IS NOT NULL`).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists != (demo == "on") {
			t.Errorf("LIVEPG_DEMO=%s migrate up: demo tables exist: %v", demo, exists)
		}
	}
}

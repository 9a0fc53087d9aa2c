package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livepg/livepg/store/localpg"
	"github.com/livepg/livepg/store/storetest"
)

// localDataDir is a data folder for the local mode that the postgres user
// can reach when the tests run as root (t.TempDir is private to root).
func localDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "livepg-local-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "data")
}

func runWith(env map[string]string, args ...string) (string, error) {
	var out syncBuffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &out)
	return out.String(), err
}

// Logs give durations as people write them, in JSON and in text alike.
func TestLogsGiveDurationsAsText(t *testing.T) {
	t.Parallel()
	for _, text := range []bool{false, true} {
		var buf bytes.Buffer
		newLoggerFor(&buf, text).Info("shutting down", "timeout", 1500*time.Millisecond,
			slog.Group("listener", "backoff", 250*time.Millisecond))
		for _, want := range []string{"1.5s", "250ms"} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("text=%v: %q does not say %s", text, buf.String(), want)
			}
		}
		if strings.Contains(buf.String(), "1500000000") {
			t.Errorf("text=%v: %q gives nanoseconds", text, buf.String())
		}
	}
}

// Without a DATABASE_URL the server listens on the loopback interface only;
// with one, on every interface (Fly's proxy reaches it from outside);
// LIVEPG_ADDR chooses.
func TestListenAddressFollowsTheMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "127.0.0.1:8080"},
		{map[string]string{"PORT": "9000"}, "127.0.0.1:9000"},
		{map[string]string{"DATABASE_URL": "postgres://db/app"}, ":8080"},
		{map[string]string{"DATABASE_URL": "postgres://db/app", "PORT": "9000"}, ":9000"},
		{map[string]string{"LIVEPG_ADDR": "0.0.0.0:8081"}, "0.0.0.0:8081"},
		{map[string]string{"DATABASE_URL": "postgres://db/app", "LIVEPG_ADDR": "127.0.0.1:9000"}, "127.0.0.1:9000"},
	} {
		cfg, err := loadConfig(func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if cfg.Addr != tc.want {
			t.Errorf("%v: listens on %q, want %q", tc.env, cfg.Addr, tc.want)
		}
	}
	for _, bad := range []string{"8080", "localhost", "127.0.0.1:http", "127.0.0.1:70000"} {
		_, err := loadConfig(func(k string) string { return map[string]string{"LIVEPG_ADDR": bad}[k] })
		if err == nil || !strings.Contains(err.Error(), "LIVEPG_ADDR") {
			t.Errorf("LIVEPG_ADDR=%q: %v, want an error naming LIVEPG_ADDR", bad, err)
		}
	}
}

// A port in use is reported before anything touches the database: no
// migration runs, no local PostgreSQL starts.
func TestPortInUseIsReportedBeforeTheDatabaseIsTouched(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port

	db := emptyDatabase(t)
	out, err := runWith(map[string]string{"DATABASE_URL": db, "PORT": itoa(port), "LIVEPG_TOKEN_KEY": testTokenKey})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("serve on a taken port: %v\n%s", err, out)
	}
	var migrated bool
	if err := mustConn(t, db).QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'livepg')`).Scan(&migrated); err != nil {
		t.Fatal(err)
	}
	if migrated {
		t.Fatal("the database was migrated before the port was found taken")
	}

	dataDir := localDataDir(t)
	out, err = runWith(map[string]string{"LIVEPG_DATA_DIR": dataDir, "LIVEPG_ADDR": "127.0.0.1:" + itoa(port)})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("local mode on a taken port: %v\n%s", err, out)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("a local PostgreSQL was set up in %s before the port was found taken (%v)", dataDir, err)
	}
}

// migrate checks its arguments before it starts a local PostgreSQL, and
// says whether it started one or used the one already running.
func TestMigrateInTheLocalMode(t *testing.T) {
	t.Parallel()
	dataDir := localDataDir(t)
	env := map[string]string{"LIVEPG_DATA_DIR": dataDir, "PORT": "0"}
	for _, bad := range [][]string{{"migrate"}, {"migrate", "sideways"}, {"migrate", "up", "now"}} {
		if out, err := runWith(env, bad...); err == nil {
			t.Fatalf("%v: no error\n%s", bad, out)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Fatalf("%v set up a local PostgreSQL in %s before refusing its arguments", bad, dataDir)
		}
	}

	out, err := runWith(env, "migrate", "up")
	if err != nil || !strings.Contains(out, "started a local PostgreSQL") {
		t.Fatalf("migrate up with no server running: %v\n%s", err, out)
	}

	_, stop := startServer(t, env)
	out, err = runWith(env, "migrate", "status")
	if err != nil || !strings.Contains(out, "using the local PostgreSQL already running") || strings.Contains(out, "started") ||
		!strings.Contains(out, "applied") {
		t.Fatalf("migrate status beside a running server: %v\n%s", err, out)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pgdata", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("the local PostgreSQL still runs after its last user stopped (%v)", err)
	}
}

// Connection errors say what to do: a server without TLS when the URL
// requires it, a database that does not exist, no server at the address.
func TestConnectionErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	db := storetest.OverTCP(t, storetest.NewDatabase(t))
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	withTLS := *u
	withTLS.RawQuery = "sslmode=require"
	missing := *u
	missing.Path = "/no_such_db"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()
	nobody := *u
	nobody.Host = closedPort

	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{"TLS required", withTLS.String(), []string{"does not offer TLS", "sslmode=disable"}},
		{"missing database", missing.String(), []string{`"no_such_db" does not exist`, "createdb", "no_such_db"}},
		{"nothing listening", nobody.String(), []string{"nothing accepts connections at " + closedPort, "is PostgreSQL running"}},
	} {
		out, err := runWith(map[string]string{"DATABASE_URL": tc.url}, "migrate", "status")
		if err == nil {
			t.Fatalf("%s: no error\n%s", tc.name, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
	}
}

// A read replica as DATABASE_URL is named as such at start, not blamed on
// LISTEN_DATABASE_URL.
func TestReplicaAsDatabaseURLIsNamed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := storetest.NewCluster(t)
	db := storetest.NewDatabaseOn(t, cluster.URL())
	// A standby with nowhere to stream from stays in recovery and serves
	// reads: a replica as clients see it.
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	signal := filepath.Join(cluster.Dir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := localpg.ChownToServer(signal); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	var inRecovery bool
	if err := mustConn(t, db).QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("the standby is not in recovery: %v %v", inRecovery, err)
	}
	out, err := runWith(map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_TOKEN_KEY": testTokenKey})
	if err == nil || !strings.Contains(err.Error(), "DATABASE_URL points at a read replica") || strings.Contains(err.Error(), "LISTEN_DATABASE_URL") {
		t.Fatalf("serve on a replica: %v, want it to say DATABASE_URL points at a read replica\n%s", err, out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

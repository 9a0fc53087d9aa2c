// Package storetest gives each test its own migrated livepg database on a
// real PostgreSQL server: LIVEPG_TEST_DATABASE_URL's when set, otherwise an
// ephemeral cluster started from the machine's server binaries once per test
// binary.
//
// The ephemeral clusters are as private as the local mode's: the URLs
// handed out go through a Unix socket in a folder only the server's user can
// reach. They also listen on 127.0.0.1, where a generated password is
// required (never trust), for the few tests whose client cannot reach the
// socket (see OverTCP).
//
// A package whose tests use it calls Main from its TestMain, so the cluster
// is stopped when the tests end.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/localpg"
)

// EnvURL names the variable that points the tests at an existing server; its
// role must be allowed to create databases.
const EnvURL = "LIVEPG_TEST_DATABASE_URL"

const templateDB = "livepg_test_template"

var (
	once      sync.Once
	adminURL  string // a database on the server to run CREATE DATABASE from
	cluster   *localpg.Cluster
	clusterMu sync.Mutex
	setupErr  error
)

// Main runs the tests and then stops the cluster this binary started.
func Main(m *testing.M) {
	code := m.Run()
	clusterMu.Lock()
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := cluster.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "storetest:", err)
		}
		cancel()
		os.RemoveAll(cluster.Dir)
	}
	clusterMu.Unlock()
	busMu.Lock()
	for _, c := range busClusters {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := c.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "storetest:", err)
		}
		cancel()
		os.RemoveAll(c.Dir)
	}
	busMu.Unlock()
	os.Exit(code)
}

// Cluster returns the ephemeral cluster, or nil when the tests run against
// LIVEPG_TEST_DATABASE_URL. Tests that stop and start the server need their
// own cluster instead: see NewCluster.
func Cluster(t testing.TB) *localpg.Cluster {
	setup(t)
	return cluster
}

// NewCluster starts a cluster that belongs to the calling test alone, for
// tests that stop or kill the server. It is stopped and removed at cleanup.
func NewCluster(t testing.TB) *localpg.Cluster {
	t.Helper()
	return newCluster(t, testOptions)
}

func newCluster(t testing.TB, opts localpg.Options) *localpg.Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "livepg-test-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := localpg.Start(ctx, dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
		os.RemoveAll(dir)
	})
	return c
}

var testOptions = localpg.Options{Settings: testSettings, TCP: true}

// A throwaway cluster need not survive a crash of the machine. Its bus mode
// (migrations/00008_bus.sql) is commit_timestamp, livepg's default, unless
// LIVEPG_TEST_BUS=commit_lock asks for the fallback.
var testSettings = map[string]string{
	"fsync":                     "off",
	"full_page_writes":          "off",
	"max_connections":           "500",
	"shared_buffers":            "128MB",
	"log_min_messages":          "warning",
	"max_locks_per_transaction": "256",
	"track_commit_timestamp":    commitTimestamps(os.Getenv(EnvBus) != BusCommitLock),
}

// EnvBus names the variable that picks the bus mode of the shared test
// cluster: BusCommitTimestamp (the default) or BusCommitLock.
const EnvBus = "LIVEPG_TEST_BUS"

// The bus modes (livepg.bus_mode(), see migrations/00008_bus.sql): which
// one a cluster runs is its track_commit_timestamp setting.
const (
	BusCommitTimestamp = "commit_timestamp"
	BusCommitLock      = "commit_lock"
)

// Buses are both modes, for tests that run in each.
var Buses = []string{BusCommitTimestamp, BusCommitLock}

func commitTimestamps(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// NewClusterBus is NewCluster in the given bus mode.
func NewClusterBus(t testing.TB, bus string) *localpg.Cluster {
	t.Helper()
	return newCluster(t, optionsFor(bus))
}

func optionsFor(bus string) localpg.Options {
	settings := make(map[string]string, len(testSettings))
	for k, v := range testSettings {
		settings[k] = v
	}
	settings["track_commit_timestamp"] = commitTimestamps(bus != BusCommitLock)
	return localpg.Options{Settings: settings, TCP: true}
}

var (
	busMu       sync.Mutex
	busClusters = map[string]*localpg.Cluster{} // the other mode's shared cluster, started on demand
)

// NewDatabaseBus creates a migrated database for this test on a server in
// the given bus mode and returns its URL: the shared cluster when it runs
// that mode, else a second cluster shared by the binary's tests (stopped by
// Main). With LIVEPG_TEST_DATABASE_URL it fails the test unless that
// server runs the mode.
func NewDatabaseBus(t testing.TB, bus string) string {
	t.Helper()
	setup(t)
	if cluster == nil || (testSettings["track_commit_timestamp"] == "on") == (bus != BusCommitLock) {
		u := NewDatabase(t)
		checkBus(t, u, bus)
		return u
	}
	busMu.Lock()
	c := busClusters[bus]
	if c == nil {
		dir, err := os.MkdirTemp("", "livepg-test-"+bus+"-")
		if err != nil {
			busMu.Unlock()
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c, err = localpg.Start(ctx, dir, optionsFor(bus))
		cancel()
		if err != nil {
			busMu.Unlock()
			os.RemoveAll(dir)
			t.Fatal(err)
		}
		busClusters[bus] = c
	}
	busMu.Unlock()
	u := NewDatabaseOn(t, c.URL())
	checkBus(t, u, bus)
	return u
}

func checkBus(t testing.TB, u, bus string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got string
	if err := conn.QueryRow(ctx, `SELECT livepg.bus_mode()`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != bus {
		t.Fatalf("the test server runs bus mode %s, not %s (track_commit_timestamp)", got, bus)
	}
}

func setup(t testing.TB) {
	t.Helper()
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if u := os.Getenv(EnvURL); u != "" {
			adminURL = u
		} else {
			dir, err := os.MkdirTemp("", "livepg-test-")
			if err != nil {
				setupErr = err
				return
			}
			c, err := localpg.Start(ctx, dir, testOptions)
			if err != nil {
				os.RemoveAll(dir)
				setupErr = err
				return
			}
			clusterMu.Lock()
			cluster = c
			clusterMu.Unlock()
			adminURL = c.URL()
		}
		setupErr = createTemplate(ctx, adminURL)
	})
	if setupErr != nil {
		t.Fatalf("test database: %v", setupErr)
	}
}

// createTemplate migrates a template database once; each test's database is
// a copy of it, which is much faster than migrating every time.
func createTemplate(ctx context.Context, admin string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect %s: %w", EnvURL, err)
	}
	defer conn.Close(ctx)
	name := pgx.Identifier{templateDB}.Sanitize()
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop template: %w", err)
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	s, err := store.Open(ctx, withDatabase(admin, templateDB))
	if err != nil {
		return err
	}
	defer s.Close()
	return s.MigrateUp(ctx)
}

// NewDatabase creates a migrated database for this test and returns its URL.
// It is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	setup(t)
	return NewDatabaseOn(t, adminURL)
}

// NewDatabaseOn creates a migrated database on the server behind admin (a
// URL of any database there) and returns its URL.
func NewDatabaseOn(t testing.TB, admin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	db := "livepg_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("test database: %v", err)
	}
	defer conn.Close(ctx)
	name := pgx.Identifier{db}.Sanitize()
	if admin == adminURL {
		_, err = conn.Exec(ctx, `CREATE DATABASE `+name+` TEMPLATE `+pgx.Identifier{templateDB}.Sanitize())
	} else {
		_, err = conn.Exec(ctx, `CREATE DATABASE `+name)
	}
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	u := withDatabase(admin, db)
	if admin != adminURL {
		s, err := store.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		err = s.MigrateUp(ctx)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return // the server is gone with its cluster
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	})
	return u
}

// OverTCP returns the URL of the same database as db (a URL NewDatabase
// returned) over TCP on 127.0.0.1, with the cluster's generated password:
// for a client that cannot reach the socket's folder, such as a process
// chrooted or running as another user. With LIVEPG_TEST_DATABASE_URL it
// returns db unchanged.
func OverTCP(t testing.TB, db string) string {
	t.Helper()
	setup(t)
	if cluster == nil {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		t.Fatalf("OverTCP(%q): %v", db, err)
	}
	return cluster.TCPURL(strings.TrimPrefix(u.Path, "/"))
}

// NewStore opens a pool on a fresh test database.
func NewStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func withDatabase(u, db string) string {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Scheme == "" {
		// A keyword/value connection string.
		return strings.TrimSpace(u) + " dbname=" + db
	}
	parsed.Path = "/" + db
	return parsed.String()
}

// NewEmptyDatabase creates a database for this test with nothing of livepg in
// it (for tests of migrating) and returns its URL. It is dropped when the
// test ends.
func NewEmptyDatabase(t testing.TB) string {
	t.Helper()
	setup(t)
	return NewEmptyDatabaseOn(t, adminURL)
}

// NewEmptyDatabaseOn creates an empty database on the server behind admin (a
// URL of any database there) and returns its URL; it is dropped when the
// test ends.
func NewEmptyDatabaseOn(t testing.TB, admin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	db := "livepg_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("test database: %v", err)
	}
	defer conn.Close(ctx)
	name := pgx.Identifier{db}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return // the server is gone with its cluster
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	})
	return withDatabase(admin, db)
}

// Execer is a connection, a pool or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// NumberPending does what a node does before it reads the log: it numbers
// every committed event that has no seq yet (commit_timestamp mode; see
// migrations/00008_bus.sql). A test that reads seqs from livepg.events
// right after writing calls it first.
func NumberPending(t testing.TB, db Execer) {
	t.Helper()
	if _, err := db.Exec(context.Background(), `SELECT livepg.number_pending(1000000)`); err != nil {
		t.Fatalf("number pending events: %v", err)
	}
}

// WriteUnmeasured writes the events that query selects (topic, type, data)
// as the log held them before 00007 measured events: size NULL, however
// large. It writes where livepg.publish would in the server's bus mode
// (the log itself with its size check off in commit_lock mode, else
// livepg.pending, which only livepg's functions write and which has no
// check of its own).
func WriteUnmeasured(t testing.TB, s *store.Store, query string, args ...any) {
	t.Helper()
	ctx := context.Background()
	mode, err := s.BusMode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mode == store.BusCommitLock {
		// Three transactions: the log's deferred numbering trigger must
		// have run before its size check comes back.
		if _, err = s.Pool.Exec(ctx, `ALTER TABLE livepg.events DISABLE TRIGGER events_measure`); err == nil {
			_, err = s.Pool.Exec(ctx, `INSERT INTO livepg.events (topic, type, data) `+query, args...)
		}
		if _, enableErr := s.Pool.Exec(ctx, `ALTER TABLE livepg.events ENABLE TRIGGER events_measure`); err == nil {
			err = enableErr
		}
	} else {
		_, err = s.Pool.Exec(ctx, `INSERT INTO livepg.pending (topic, type, data) `+query, args...)
	}
	if err != nil {
		t.Fatal(err)
	}
}
